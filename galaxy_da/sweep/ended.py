"""Which trials of a sweep ran to their end: the driver records each as it ends.

Tune's own trial states cannot tell: when a sweep is interrupted (Ctrl-C), Tune
saves its state and then stops every live trial, marking it TERMINATED in
memory, including one that had just been handed an actor and never trained.
A sweep whose count of TERMINATED trials reached the number asked for could
then report itself complete after an interruption between two trials.

:class:`RecordEndings`, a Tune callback in the driver, writes a marker
``<experiment>/galaxy_da_ended/<trial id>.json`` when Tune reports a trial
complete (trained to its end, or stopped by the scheduler) or failed for good.
Those two events are the only ways a trial ends; an interruption fires
neither. The markers live beside Ray's results, so a resumed sweep counts the
trials that ended before the interruption too. A resumed sweep also records, at
its first step, the trials its restored state holds as ended: Tune saves its
state before it stops the live trials, so a saved TERMINATED is a real ending
(a driver killed outright after a trial ended but before the callback ran),
and forgets the ending of a failed trial that the resume runs again.
"""

from __future__ import annotations

from typing import Any

from ray import tune

from galaxy_da.sweep.markers import all_markers, delete_marker, write_marker

ENDED_FOLDER = "galaxy_da_ended"
ENDED_STATES = {"TERMINATED": "complete", "ERROR": "error"}  # Tune's Trial.TERMINATED / Trial.ERROR


def ended_trials(experiment_path: str) -> dict[str, str]:
    """``{trial id: "complete" | "error"}`` of every trial of the sweep that ended."""
    return {trial_id: marker["how"] for trial_id, marker in all_markers(experiment_path, ENDED_FOLDER).items()}


class RecordEndings(tune.Callback):
    """Record each trial that ends (complete or failed for good) in the sweep's storage."""

    def __init__(self, experiment_path: str) -> None:
        self.experiment_path = experiment_path
        self.restored_seen = False

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self.restored_seen:
            return
        self.restored_seen = True  # the first step sees the restored trials with their saved states
        recorded = ended_trials(self.experiment_path)
        for trial in trials:
            if trial.status in ENDED_STATES:
                if trial.trial_id not in recorded:
                    write_marker(self.experiment_path, ENDED_FOLDER, trial.trial_id, {"how": ENDED_STATES[trial.status]})
            elif trial.trial_id in recorded:  # a failed trial that --resume runs again (resume_errored) has not ended
                delete_marker(self.experiment_path, ENDED_FOLDER, trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        write_marker(self.experiment_path, ENDED_FOLDER, trial.trial_id, {"how": "complete"})

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        write_marker(self.experiment_path, ENDED_FOLDER, trial.trial_id, {"how": "error"})
