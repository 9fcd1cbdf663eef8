"""Epoch schedules for the alignment weight, the kernel blur and the GRL strength.

A schedule is a pure function ``(progress, spec, epochs_since_warmup) -> value``
registered in :data:`SCHEDULES`. ``progress`` runs from 0 at the first epoch after
warm-up to 1 at the last epoch; ``spec`` is a :class:`~galaxy_da.config.ScheduleConfig`
holding ``start``, ``end`` and the shape parameters. :func:`schedule_value` turns an
epoch into that progress, keeps the start value during warm-up and applies the floor.

This module imports only :mod:`math` at run time: the config validates schedule
names against :data:`SCHEDULES`, so it must stay light and free of import cycles.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from galaxy_da.config import ScheduleConfig

Schedule = Callable[[float, "ScheduleConfig", int], float]


def _interpolate(spec: ScheduleConfig, fraction: float) -> float:
    return spec.start + (spec.end - spec.start) * fraction


def constant(progress: float, spec: ScheduleConfig, epochs_since_warmup: int) -> float:
    """``start`` throughout."""
    return spec.start


def linear(progress: float, spec: ScheduleConfig, epochs_since_warmup: int) -> float:
    """``start + (end - start) * p``."""
    return _interpolate(spec, progress)


def cosine(progress: float, spec: ScheduleConfig, epochs_since_warmup: int) -> float:
    """``start + (end - start) * (1 - cos(pi p)) / 2``: flat at both ends."""
    return _interpolate(spec, (1.0 - math.cos(math.pi * progress)) / 2.0)


def sigmoid(progress: float, spec: ScheduleConfig, epochs_since_warmup: int) -> float:
    """``start + (end - start) * sigmoid((p - 0.5) * sharpness)``.

    The reference's GRL ramp (sharpness 10). It reaches ``start``/``end`` only
    approximately: ``sigmoid(-sharpness/2)`` of the gap remains at either end.
    """
    return _interpolate(spec, 1.0 / (1.0 + math.exp(-(progress - 0.5) * spec.sharpness)))


def step(progress: float, spec: ScheduleConfig, epochs_since_warmup: int) -> float:
    """``start * step_factor ** (epochs_since_warmup // step_every)``; ``end`` is unused."""
    return spec.start * spec.step_factor ** (epochs_since_warmup // spec.step_every)


def exponential(progress: float, spec: ScheduleConfig, epochs_since_warmup: int) -> float:
    """``start * rate ** epochs_since_warmup``; ``end`` is unused (use ``floor`` to bound it)."""
    return spec.start * spec.rate**epochs_since_warmup


def polynomial(progress: float, spec: ScheduleConfig, epochs_since_warmup: int) -> float:
    """``start + (end - start) * p ** power``."""
    return _interpolate(spec, progress**spec.power)


SCHEDULES: dict[str, Schedule] = {
    "constant": constant,
    "linear": linear,
    "cosine": cosine,
    "sigmoid": sigmoid,
    "step": step,
    "exponential": exponential,
    "polynomial": polynomial,
}


def schedule_progress(epoch: int, epochs: int, warmup: int) -> float:
    """``clip((epoch - warmup) / max(1, epochs - warmup - 1), 0, 1)`` for a 0-indexed ``epoch``.

    0 during warm-up and at its end, 1 at the last epoch ``epochs - 1``.
    """
    return min(max((epoch - warmup) / max(1, epochs - warmup - 1), 0.0), 1.0)


def schedule_value(spec: ScheduleConfig, epoch: int, epochs: int, warmup: int) -> float:
    """The value of ``spec`` at 0-indexed ``epoch`` of ``epochs``, after ``warmup`` epochs.

    During warm-up the value is the start value; the result is floored at
    ``spec.floor`` when that is set.
    """
    value = SCHEDULES[spec.kind](schedule_progress(epoch, epochs, warmup), spec, max(0, epoch - warmup))
    return value if spec.floor is None else max(value, spec.floor)
