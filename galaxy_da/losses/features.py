"""Feature preparation shared by every alignment loss."""

from __future__ import annotations

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
