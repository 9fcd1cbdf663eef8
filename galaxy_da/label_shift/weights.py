r"""Class-ratio importance weights :math:`w_y = \hat q(y) / p(y)` and the source sample masses they give.

Label-shift-aware alignment (Tachet des Combes et al., NeurIPS 2020, IWDAN)
compares the *re-weighted* source :math:`\sum_i a_i \delta_{x_i}` with the target,
where each source sample carries mass proportional to its class ratio: the
weighted source then has the target's class proportions, so matching the
marginals no longer forces target ellipticals onto source spirals.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def label_frequencies(counts: Sequence[int]) -> np.ndarray:
    """Class priors :math:`p` (K,) float64 from per-class counts (the source training labels)."""
    counts = np.asarray(counts, dtype=np.float64)
    return counts / counts.sum()


def class_ratios(target_priors: np.ndarray, source_priors: np.ndarray) -> np.ndarray:
    r""":math:`w_y = q_y / p_y` (K,); 0 for a class the source lacks (no source sample carries it)."""
    source_priors = np.asarray(source_priors, dtype=np.float64)
    return np.divide(np.asarray(target_priors, dtype=np.float64), source_priors, out=np.zeros_like(source_priors), where=source_priors > 0)


def sample_masses(ratios: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Source sample masses :math:`a_i = w_{y_i} / \sum_b w_{y_b}`: shapes ``ratios`` (K,), ``labels`` (n,) int -> (n,), summing to 1.

    With :math:`w \equiv 1` this is exactly :math:`1/n`. A batch whose every sample
    has weight 0 (its classes are estimated absent from the target) falls back to
    uniform masses rather than 0/0; decided on the device, no host read.
    """
    weights = ratios[labels]
    total = weights.sum()
    uniform = torch.ones_like(weights) / len(weights)
    return torch.where(total > 0, weights / torch.where(total > 0, total, torch.ones_like(total)), uniform)
