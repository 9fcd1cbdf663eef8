"""Optimisers and per-epoch learning-rate schedules (registries).

Every LR schedule is a pure function of the epoch, ``lr_e = f(e, E, lr, min_lr)``
with ``e`` 0-indexed, and reaches ``min_lr`` exactly at the last epoch
``e = E - 1`` (the reference's cosine stopped at about 3.4e-6 instead of its
min_lr). Being a function of the epoch alone makes resume exact.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from galaxy_da.config import OptimConfig


def _fraction(epoch: int, epochs: int) -> float:
    return min(1.0, epoch / max(1, epochs - 1))


def cosine_lr(epoch: int, epochs: int, lr: float, min_lr: float) -> float:
    """``min_lr + (lr - min_lr) * (1 + cos(pi t)) / 2`` with ``t = e / (E - 1)``."""
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * _fraction(epoch, epochs)))


def step_lr(epoch: int, epochs: int, lr: float, min_lr: float) -> float:
    """Three equal drops: ``lr * r**floor(3t)`` with ``r = (min_lr/lr)**(1/3)``; ``t = 1`` gives min_lr."""
    drops = min(3, math.floor(3 * _fraction(epoch, epochs) + 1e-9))
    return lr * (min_lr / lr) ** (drops / 3) if min_lr > 0 else lr * 0.1**drops


def exponential_lr(epoch: int, epochs: int, lr: float, min_lr: float) -> float:
    """Geometric decay ``lr * (min_lr/lr)**t`` from lr to min_lr."""
    return lr * (min_lr / lr) ** _fraction(epoch, epochs) if min_lr > 0 else lr * 0.95**epoch


def constant_lr(epoch: int, epochs: int, lr: float, min_lr: float) -> float:
    """``lr`` throughout."""
    return lr


LR_SCHEDULES: dict[str, Callable[[int, int, float, float], float]] = {
    "cosine": cosine_lr,
    "step": step_lr,
    "exponential": exponential_lr,
    "constant": constant_lr,
}

OPTIMIZERS: dict[str, Callable[[list[dict], OptimConfig], torch.optim.Optimizer]] = {
    "adamw": lambda groups, cfg: torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay),
    "adam": lambda groups, cfg: torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay),
    "sgd": lambda groups, cfg: torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay),
}


def build_optimizer(
    cfg: OptimConfig, decayed: Iterable[torch.nn.Parameter], undecayed: Iterable[torch.nn.Parameter] = ()
) -> torch.optim.Optimizer:
    """One optimiser; ``undecayed`` parameters (loss weights) get no weight decay."""
    groups = [{"params": [p for p in decayed if p.requires_grad]}]
    extra = [p for p in undecayed if p.requires_grad]
    if extra:
        groups.append({"params": extra, "weight_decay": 0.0})
    return OPTIMIZERS[cfg.optimizer](groups, cfg)


def set_epoch_lr(optimizer: torch.optim.Optimizer, cfg: OptimConfig, epoch: int) -> float:
    lr = LR_SCHEDULES[cfg.lr_schedule](epoch, cfg.epochs, cfg.lr, cfg.min_lr)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
