"""Trainable task weights (Kendall, Gal and Cipolla 2018)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


class UncertaintyWeights(nn.Module):
    r"""Homoscedastic-uncertainty weighting of the classification and alignment losses.

    .. math:: \mathcal{L} = \sum_i \frac{L_i}{2\eta_i^2} + \sum_i \log \eta_i,
              \qquad \eta_i = \exp(\texttt{log\_eta}_i)\ \text{(trainable)}

    Shapes: ``losses`` a sequence of K scalars (K = ``len(eta_init)``, normally
    ``(classification, alignment)``) -> scalar. The default ``eta_init=(0.1, 1.0)``
    gives weights 50 and 0.5. Call :meth:`clamp_` after each optimiser step to keep
    the reference's constraints. Note the ``log eta`` terms make the total negative
    and dominate it, so do not select or stop on this total.
    """

    min_eta_cls = 1e-3
    min_ratio_align = 0.25

    def __init__(self, eta_init: Sequence[float] = (0.1, 1.0)) -> None:
        super().__init__()
        self.log_eta = nn.Parameter(torch.tensor([math.log(eta) for eta in eta_init]))

    @property
    def eta(self) -> torch.Tensor:
        return self.log_eta.exp()

    @property
    def weights(self) -> torch.Tensor:
        """The current factors :math:`1/(2\\eta_i^2)`, shape (K,), detached."""
        return (0.5 * torch.exp(-2.0 * self.log_eta)).detach()

    def forward(self, losses: Sequence[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(list(losses)).to(self.log_eta.dtype)
        return (0.5 * torch.exp(-2.0 * self.log_eta) * stacked).sum() + self.log_eta.sum()

    @torch.no_grad()
    def clamp_(self) -> None:
        """:math:`\\eta_1 \\ge 10^{-3}` and :math:`\\eta_i \\ge 0.25\\,\\eta_1` for the others (on the device: no host read)."""
        self.log_eta[0].clamp_(min=math.log(self.min_eta_cls))
        self.log_eta[1:].clamp_(min=self.log_eta[0] + math.log(self.min_ratio_align))
