"""Domain-adversarial alignment (DANN, Ganin et al. 2016): gradient reversal + discriminator."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F
from torch import nn

from galaxy_da.losses.features import prepare_features, weighted_mean

if TYPE_CHECKING:
    from galaxy_da.config import AlignConfig


class GradientReversal(torch.autograd.Function):
    r"""Identity forward, :math:`-\lambda \cdot \partial L/\partial x` backward.

    ``GradientReversal.apply(x, strength)``: ``x`` any shape, ``strength`` a float
    :math:`\lambda`; no gradient flows to ``strength``.
    """

    @staticmethod
    def forward(ctx, features: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = float(strength)
        return features.view_as(features)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.strength * grad_output, None


class DomainDiscriminator(nn.Sequential):
    """MLP domain classifier: logit of "source". Shape (N, feature_dim) -> (N, 1).

    ``[Linear(feature_dim, projection) - ReLU]`` (when ``projection`` is set), then
    ``Linear(., hidden) - ReLU - Dropout - Linear(hidden, hidden/2) - ReLU - Dropout - Linear(hidden/2, 1)``.
    """

    def __init__(self, feature_dim: int, projection: Optional[int] = 128, hidden: int = 256, dropout: float = 0.2):
        projector = [nn.Linear(feature_dim, projection), nn.ReLU()] if projection else []
        width = projection or feature_dim
        half = max(1, hidden // 2)
        super().__init__(
            *projector,
            nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, half), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(half, 1),
        )


class DANNLoss(nn.Module):
    r"""Balanced domain-classification loss through a gradient-reversal layer.

    .. math:: \mathcal{L} = \tfrac12\Big[\sum_i a_i\,\mathrm{BCE}(D(R_\lambda x_i), 1)
                              + \tfrac1m\sum_j \mathrm{BCE}(D(R_\lambda y_j), 0)\Big]

    with :math:`R_\lambda` the gradient reversal at ``grl_strength`` and
    :math:`D` the :class:`DomainDiscriminator`. Minimising it trains the
    discriminator and, through the reversal, pushes the features to confuse it.
    The discriminator's parameters belong to this module: give them to the
    optimiser. Features are L2-normalised first when ``cfg.normalize_features``.
    The source masses :math:`a` are ``source_masses`` (n,) summing to 1, or
    :math:`1/n` when None: with class-ratio masses this is IWDAN's importance-
    weighted domain loss (Tachet des Combes et al. 2020), whose discriminator
    sees a source with the target's class proportions.
    Shapes: ``source`` (n, d), ``target`` (m, d) -> scalar; ``blur`` is unused.
    ``diagnostics["domain_acc"]`` is the (unweighted) balanced accuracy of the discriminator.
    """

    def __init__(self, cfg: AlignConfig, feature_dim: int) -> None:
        super().__init__()
        self.normalize_features = cfg.normalize_features
        shape = cfg.adversarial
        self.discriminator = DomainDiscriminator(feature_dim, shape.projection, shape.hidden, shape.dropout)
        self.diagnostics: dict[str, torch.Tensor] = {}

    def forward(
        self, source: torch.Tensor, target: torch.Tensor, *, blur: float, grl_strength: float, source_masses: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        source, target = prepare_features(source, target, self.normalize_features)
        features = GradientReversal.apply(torch.cat([source, target]), grl_strength)
        logits = self.discriminator(features).squeeze(1)
        source_logits, target_logits = logits[: len(source)], logits[len(source) :]
        source_terms = F.binary_cross_entropy_with_logits(source_logits, torch.ones_like(source_logits), reduction="none")
        loss = 0.5 * (
            weighted_mean(source_terms, source_masses)
            + F.binary_cross_entropy_with_logits(target_logits, torch.zeros_like(target_logits))
        )
        accuracy = 0.5 * ((source_logits > 0).float().mean() + (target_logits <= 0).float().mean())
        self.diagnostics = {"domain_acc": accuracy.detach()}
        return loss
