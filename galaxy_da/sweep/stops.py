"""Why a trial stopped: the scheduler says so before it stops the trial.

Ray stops a trial the same way whether a scheduler pruned it or the whole sweep
was interrupted (its actor's ``cleanup`` runs). Only a pruned trial is done:
its MLflow run should end FINISHED with ``stopped_by``; an interrupted one is
KILLED and re-opened by ``--resume``. So the scheduler writes a small marker,
``<experiment>/galaxy_da_stops/<trial id>.json``, *before* it returns STOP, and
the trial reads it in ``cleanup``. The marker sits in the sweep's storage (a
local folder or any pyarrow URI), which every node of a cluster reaches.
"""

from __future__ import annotations

from typing import Optional

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from galaxy_da.sweep.markers import read_marker, write_marker

STOPS_FOLDER = "galaxy_da_stops"


def announce_stop(experiment_path: str, trial_id: str, stopped_by: str, epochs_done: int) -> None:
    write_marker(experiment_path, STOPS_FOLDER, trial_id, {"stopped_by": stopped_by, "epochs_done": epochs_done})


def announced_stop(experiment_path: str, trial_id: str) -> Optional[str]:
    """Who stopped ``trial_id`` (e.g. ``"asha"``), or None when no scheduler did."""
    marker = read_marker(experiment_path, STOPS_FOLDER, trial_id)
    return None if marker is None else marker["stopped_by"]


class AnnouncingASHA(ASHAScheduler):
    """ASHA that announces each early stop (below ``max_t``) to the trial it stops."""

    def __init__(self, experiment_path: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.experiment_path = experiment_path

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        epochs_done = result.get(self._time_attr, 0)
        if decision == TrialScheduler.STOP and epochs_done < self._max_t:
            announce_stop(self.experiment_path, trial.trial_id, "asha", int(epochs_done))
        return decision
