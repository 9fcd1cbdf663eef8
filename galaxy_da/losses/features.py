"""Feature preparation and sample masses shared by every alignment loss."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def prepare_features(source: torch.Tensor, target: torch.Tensor, normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Optionally L2-normalise each row of (n, d) source and (m, d) target features.

    On the unit sphere every squared distance lies in [0, 4], so blur and
    epsilon settings mean the same thing for every backbone and width.
    """
    if not normalize:
        return source, target
    return F.normalize(source, dim=1), F.normalize(target, dim=1)


def uniform_masses(points: torch.Tensor) -> torch.Tensor:
    r""":math:`(1/n, \dots, 1/n)` for (n, d) ``points``, shape (n,), in their dtype and device (built as GeomLoss builds its default)."""
    return torch.ones(len(points), dtype=points.dtype, device=points.device) / len(points)


def masses_or_uniform(points: torch.Tensor, masses: Optional[torch.Tensor]) -> torch.Tensor:
    """The sample masses of (n, d) ``points``: ``masses`` (n,) cast to their dtype, or uniform when None."""
    return uniform_masses(points) if masses is None else masses.to(points.dtype)


def weighted_mean(values: torch.Tensor, masses: Optional[torch.Tensor]) -> torch.Tensor:
    r""":math:`\sum_i a_i v_i` for masses :math:`a` (n,) summing to 1, or the plain mean of ``values`` (n,) when None."""
    return values.mean() if masses is None else (masses.to(values.dtype) * values).sum()
