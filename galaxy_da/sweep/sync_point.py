"""Synchronous PBT/PB2 that cannot stall: the next perturbation point always lies ahead of a live member.

Ray's synchronous PBT (``synch=True``) pauses every member that reports at or past
the perturbation point ``t*``; once no live member is below ``t*`` it perturbs them
all and moves the point to ``max(t* + interval, t_max)``, ``t_max`` being the
furthest member's epoch. A paused member is resumed only while its epoch is below
the new point. When the members' first report comes later than ``t* + interval``
(warm-up epochs are never reported, so the first scored report is at epoch
``warm-up + 1``), the new point is ``t_max`` itself: no member is below it and the
whole population stays paused for ever (ray-project/ray PR 48616 shows the same
stall after a restore). :class:`AlwaysAhead` moves the point to
``t_max + interval`` in that case, and only then, so members that are still on
their way to the point keep waiting for each other as before.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import PopulationBasedTraining


class AlwaysAhead:
    """Mixin for a :class:`PopulationBasedTraining` subclass: after each result, a synchronous point that no live
    member is below moves to the furthest member's epoch plus one interval."""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if self._synch:
            epochs = [self._trial_state[member].last_train_time for member in tune_controller.get_live_trials()]
            if epochs and min(epochs) >= self._next_perturbation_sync:
                self._next_perturbation_sync = max(epochs) + self._perturbation_interval
        return decision


class SteadyPBT(AlwaysAhead, PopulationBasedTraining):
    """Ray's PBT whose synchronous mode never stalls (see the module docstring)."""
