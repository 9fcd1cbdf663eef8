"""Focal loss and class-frequency weights for the labelled source batch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from galaxy_da.config import ClassLossConfig

Alpha = Union[None, float, Sequence[float], torch.Tensor]


class FocalLoss(nn.Module):
    r"""Focal loss (Lin et al. 2017) with an optional class weight ``alpha``.

    .. math:: \mathcal{L} = \frac{1}{N}\sum_i -\alpha_{y_i}\,(1 - p_{i,y_i})^{\gamma}\,\log p_{i,y_i},
              \qquad p_i = \mathrm{softmax}(z_i)

    Shapes: ``logits`` (N, C), ``targets`` (N,) int64 -> scalar. The mean is over
    the batch and is not normalised by :math:`\sum_i \alpha_{y_i}` (the reference's
    convention). ``alpha`` is None (all 1), a float (the same factor for every
    class) or a length-C sequence/tensor. With ``gamma=0`` and ``alpha=None`` this
    is exactly ``F.cross_entropy``.
    """

    def __init__(self, gamma: float = 2.0, alpha: Alpha = None) -> None:
        super().__init__()
        self.gamma = float(gamma)
        self.register_buffer("alpha", None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)
        loss = -log_p
        if self.gamma != 0.0:
            loss = loss * focusing_factor(log_p, self.gamma)
        if self.alpha is not None:
            loss = loss * self.alpha.to(logits.dtype).expand(logits.shape[1])[targets]
        return loss.mean()


def focusing_factor(log_p: torch.Tensor, gamma: float) -> torch.Tensor:
    r""":math:`(1 - p)^\gamma` from :math:`\log p`, shape (N,) -> (N,), with a finite gradient everywhere.

    :math:`1 - p = -\mathrm{expm1}(\log p)` keeps its precision near :math:`p = 1`. Where :math:`1 - p` is 0 (a
    saturated logit) the factor is 0 with a zero gradient, the limit for :math:`\gamma > 0`: for
    :math:`\gamma < 1` the power alone has an infinite slope there, which times :math:`-\log p = 0` would be
    NaN. Computed in float64, so that :math:`\gamma\,(1-p)^{\gamma-1}` stays finite for a float32
    :math:`1 - p` as small as its subnormals.
    """
    one_minus_p = -torch.expm1(log_p.double())
    positive = one_minus_p > 0
    factor = torch.where(positive, torch.where(positive, one_minus_p, 1.0).pow(gamma), 0.0)
    return factor.to(log_p.dtype)


def _effective_number(counts: torch.Tensor, beta: float) -> torch.Tensor:
    return (1.0 - beta) / (1.0 - beta**counts)


def _balanced(counts: torch.Tensor, beta: float) -> torch.Tensor:
    return counts.sum() / (len(counts) * counts)


def _uniform(counts: torch.Tensor, beta: float) -> torch.Tensor:
    return torch.ones_like(counts)


CLASS_WEIGHT_SCHEMES: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "effective_number": _effective_number,
    "balanced": _balanced,
    "none": _uniform,
}


def class_weights(counts: Sequence[int], scheme: str = "effective_number", beta: float = 0.9999) -> torch.Tensor:
    r"""Per-class weights from training counts :math:`n_c`, rescaled to mean 1. Shape (C,).

    - ``effective_number`` (Cui et al. 2019): :math:`w_c \propto (1-\beta)/(1-\beta^{n_c})`;
    - ``balanced``: :math:`w_c \propto N / (C\, n_c)`;
    - ``none``: all ones.

    A class absent from the training counts is treated as having one example, so
    its weight stays finite (it never multiplies a loss term anyway).
    """
    counts_tensor = torch.as_tensor(counts, dtype=torch.float64).clamp_min(1.0)
    weights = CLASS_WEIGHT_SCHEMES[scheme](counts_tensor, beta)
    return (weights / weights.mean()).to(torch.float32)


def build_classification_loss(loss_cfg: ClassLossConfig, train_counts: Sequence[int]) -> FocalLoss:
    """The focal loss of ``loss_cfg``; ``alpha="class_weights"`` becomes :func:`class_weights`."""
    alpha: Optional[Alpha] = loss_cfg.alpha
    if alpha == "class_weights":
        alpha = class_weights(train_counts, loss_cfg.class_weights, loss_cfg.beta)
    return FocalLoss(gamma=loss_cfg.gamma, alpha=alpha)
