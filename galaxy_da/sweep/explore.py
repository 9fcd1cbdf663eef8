"""PBT's and PB2's explore step, kept inside the sweep's declared space.

Ray's PBT perturbs a number by x0.8 or x1.2 and never looks at its bounds: λ in
``loguniform [0.1, 3.0]`` reaches 3.6, 4.3, 5.2 after a few copies of a strong
member. PB2 fits its GP bandit to the raw values, so a log-uniform knob is
explored on a linear scale: for ``optim.lr`` in ``[5e-4, 5e-3]`` a proposal drawn
evenly over the GP's box lands below the log-midpoint ``1.6e-3`` only 24 % of
the time, not 50 %. Here:

- every numeric knob is brought back into its interval after each explore step
  (:class:`Interval`, :func:`into_space`, Ray's ``custom_explore_fn``):
  ``uniform`` / ``loguniform`` clipped to ``[low, high]``; ``quniform`` rounded
  to its step ``q`` and clipped; ``randint`` to ``[low, high - 1]`` (Tune's upper
  bound is exclusive);
- PBT: x0.8 / x1.2 is a step in log space (``log v - 0.22`` / ``log v + 0.18``),
  so a log-uniform knob needs only the clip (a uniform knob keeps Ray's
  multiplicative step, clipped);
- PB2 (:class:`LogScaledPB2`): a log-uniform knob is explored in log10
  coordinates. Its trial config carries ``log10:<path>`` = ``log10(value)`` beside
  ``<path>``; the GP's box is ``[log10 low, log10 high]``; after each explore
  step ``<path> = 10 ** log10:<path>`` (clipped). Everything that reads a trial's
  config by its dotted paths (the trainable, run names, the console) reads
  ``<path>`` as before.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ray.tune.schedulers.pb2 import PB2

from galaxy_da.sweep.space import Space
from galaxy_da.sweep.sync_point import AlwaysAhead

LOG_PREFIX = "log10:"


@dataclass(frozen=True)
class Interval:
    """The values a numeric knob may take: ``low <= v <= high`` (both inclusive), on a grid of ``q`` if set."""

    kind: str  # uniform | loguniform | quniform | randint
    low: float
    high: float
    q: Optional[float] = None

    @property
    def log(self) -> bool:
        return self.kind == "loguniform"

    def clip(self, value: float) -> float | int:
        """The nearest value inside the interval (``randint``: an int; ``quniform``: a multiple of ``q``)."""
        if self.kind == "randint":
            return int(min(max(round(value), self.low), self.high))
        if self.q is not None:
            value = round(value / self.q) * self.q
        return float(min(max(value, self.low), self.high))

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and self.low <= value <= self.high

    def box(self) -> list[float]:
        """PB2's ``[low, high]`` for this knob: log10 coordinates for a log-uniform knob."""
        return [math.log10(self.low), math.log10(self.high)] if self.log else [self.low, self.high]


def _interval(kind: str, args: list) -> Interval:
    if kind == "randint":
        return Interval(kind, int(args[0]), int(args[1]) - 1)
    return Interval(kind, float(args[0]), float(args[1]), float(args[2]) if kind == "quniform" else None)


def intervals(space: Space) -> dict[str, Interval]:
    """``{path: Interval}`` for the numeric knobs of ``space`` (choices and grids have no interval)."""
    return {path: _interval(kind, list(args)) for path, spec in space.items() for kind, args in spec.items() if kind in ("uniform", "loguniform", "quniform", "randint")}


def coordinate(path: str, interval: Interval) -> str:
    """The trial-config key PB2 explores ``path`` in: ``log10:<path>`` for a log-uniform knob, else ``path``."""
    return LOG_PREFIX + path if interval.log else path


def pb2_bounds(space: Space) -> dict[str, list[float]]:
    """PB2's ``hyperparam_bounds``: the box of each numeric knob, keyed by its :func:`coordinate`."""
    return {coordinate(path, interval): interval.box() for path, interval in intervals(space).items()}


def _into_space(bounds: dict[str, Interval], config: dict[str, Any]) -> dict[str, Any]:
    for path, interval in bounds.items():
        key = coordinate(path, interval)
        if key != path and key in config:  # PB2 moved the log10 coordinate: the value follows it
            config[path] = interval.clip(10.0 ** config[key])
            config[key] = math.log10(config[path])
        elif path in config:
            config[path] = interval.clip(config[path])
    return config


def into_space(space: Space) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Ray's ``custom_explore_fn``: a trial's explored config with every numeric knob of ``space`` inside its interval."""
    return functools.partial(_into_space, intervals(space))


def outside(space: Space, config: dict[str, Any]) -> dict[str, Any]:
    """``{path: value}`` of the numeric knobs of ``config`` that lie outside their interval in ``space`` (empty: all inside)."""
    return {path: config[path] for path, interval in intervals(space).items() if path in config and not interval.contains(config[path])}


class LogScaledPB2(AlwaysAhead, PB2):
    """PB2 over the numeric knobs of ``space``, each log-uniform one in log10 coordinates (see the module docstring);
    its synchronous mode never stalls (:mod:`galaxy_da.sweep.sync_point`).

    A trial joins with its sampled ``<path>``; :meth:`on_trial_add` adds its
    coordinate ``log10:<path>`` before PB2 reads the trial's hyperparameters, so
    PB2 never draws that coordinate itself.
    """

    def __init__(self, space: Space, **kwargs: Any) -> None:
        super().__init__(hyperparam_bounds=pb2_bounds(space), custom_explore_fn=into_space(space), **kwargs)
        self._log_knobs = [path for path, interval in intervals(space).items() if interval.log]

    def on_trial_add(self, tune_controller, trial) -> None:
        for path in self._log_knobs:
            if path in trial.config and LOG_PREFIX + path not in trial.config:
                trial.config[LOG_PREFIX + path] = math.log10(trial.config[path])
        super().on_trial_add(tune_controller, trial)
