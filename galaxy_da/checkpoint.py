"""Checkpoints that describe themselves and load with ``weights_only=True``.

A checkpoint is a dict of tensors and plain Python values:
``model``, ``objective`` (discriminator, loss weights), ``optimizer``, ``epoch``
(the last finished epoch), ``rng`` and ``cuda_rng`` (torch CPU and CUDA generator
states; None without CUDA), ``streams``
(batch-sampler states), ``history``, ``best``, ``config`` (the trial config as
plain data), ``class_names``, ``image_shape``, ``norm_stats`` and
``data_manifest_hash`` — enough to rebuild the model without the config file.

Torch is imported when a checkpoint is written or read, not with this module: a sweep's driver needs only the
file names, and importing torch costs it 1.5 s.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

LAST = "last.pt"
BEST = "best.pt"
SCORED_DIR = "scored"  # selection.audit_rules: the model of every scored epoch, beside last.pt and best.pt


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write atomically: a crash mid-write never leaves a truncated checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    import torch

    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint there")
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)
