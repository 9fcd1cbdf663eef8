"""Forward passes over whole splits, and device/precision choices shared by train and eval."""

from __future__ import annotations

import numpy as np
import torch

from galaxy_da.accel import autocast
from galaxy_da.data.loader import ChannelStats, iterate_in_order
from galaxy_da.data.reader import ImageSet
from galaxy_da.selection import Predictions


def resolve_device(choice: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for ``cuda`` without one is an error."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: 'cuda' requested but torch sees no GPU (use 'auto' or 'cpu')")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


@torch.no_grad()
def predict(
    model: torch.nn.Module, data: ImageSet, stats: ChannelStats, batch_size: int, device: torch.device,
    precision: str = "auto", memory_format: torch.memory_format = torch.contiguous_format,
) -> Predictions:
    """Eval-mode logits (N, K) and features (N, D) as float32 numpy, labels passed through.

    ``precision`` is a ``compute.precision`` value and ``memory_format`` the
    model's layout (see :mod:`galaxy_da.accel`).
    """
    was_training = model.training
    model.eval()
    logits, features = [], []
    for images, _ in iterate_in_order(data, batch_size, stats, device, memory_format):
        with autocast(device, precision):
            batch_logits, batch_features = model(images)
        logits.append(batch_logits.float().cpu())
        features.append(batch_features.float().cpu())
    model.train(was_training)
    return Predictions(
        logits=torch.cat(logits).numpy(),
        features=torch.cat(features).numpy(),
        labels=None if data.labels is None else np.asarray(data.labels),
    )
