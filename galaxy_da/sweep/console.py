"""What a sweep prints while it runs: one line per trial event, and nothing else.

Ray Tune's own console output (a trial table every 30 s, a result table and a
config table per trial, a TensorBoard hint) and the trials' worker logs bury
the leaderboard. The tuner switches them off (:data:`QUIET_ENV`,
``RunConfig(verbose=0)``, ``ray.init(log_to_driver=False)``, Optuna's log at
WARNING; MLflow's "View run" links and progress bars are off in every command:
:data:`galaxy_da.commands.QUIET_MLFLOW`)
and :class:`TrialProgress` prints instead::

    [1/3] laplacian+topk·k5·linear-0-0.5  started
    [1/3] laplacian+topk·k5·linear-0-0.5  epoch 1/3  select/src_val 0.5123
    [2/3] topk_ot·k20·sigmoid-0-1         stopped by asha after epoch 2 of 3; best select/src_val 0.4102
    [1/3] laplacian+topk·k5·linear-0-0.5  finished; best select/src_val 0.5812 (epoch 3)
    [3/3] sinkhorn+topk·k1·constant-0.1   FAILED: DatasetError: ... (traceback: <trial folder>/error.txt)

Epochs are numbered from 1 (:mod:`galaxy_da.epoch_numbers`): ``epoch 2/3`` is the
second of three, and the best epoch is shown the same way (its ``best/epoch``
metric holds the 0-based index). A failed trial's traceback stays in its Ray
trial folder; its MLflow run is FAILED.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Optional

from ray import tune

from galaxy_da.epoch_numbers import shown
from galaxy_da.sweep.naming import trial_run_name
from galaxy_da.sweep.space import Space
from galaxy_da.sweep.stops import announced_stop
from galaxy_da.sweep.trainable import TIME_ATTR

# The driver's environment during a sweep (worker output is not forwarded: ray.init(log_to_driver=False)).
QUIET_ENV = {
    "TUNE_PRINT_ALL_TRIAL_ERRORS": "0",  # a failed trial is one line here; its traceback stays in error.txt
    # Tune's newer reporter prints a config box, the results path and a TensorBoard hint even at
    # verbose=0; the classic reporter at verbose=0 prints nothing.
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",  # a snapshot per epoch is what tiny trials do
}


# Tune's ExperimentAnalysis warns "Failed to fetch metrics for N trial(s): ... both result.json and progress.csv
# were not found" for every trial without a result file. After an interrupted sweep those are the trials that
# never reported an epoch; --resume runs them and TrialProgress says so, so the three lines only alarm.
RAY_ANALYSIS_LOGGER = "ray.tune.analysis.experiment_analysis"
MISSING_RESULTS = "were not found at"


class MissingResultsFilter(logging.Filter):
    """Drops Tune's "Failed to fetch metrics" warning when every trial it names has no result file yet; keeps any other failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        headline, *failures = record.getMessage().splitlines()
        return not (headline.startswith("Failed to fetch metrics") and failures and all(MISSING_RESULTS in line for line in failures))


logging.getLogger(RAY_ANALYSIS_LOGGER).addFilter(MissingResultsFilter())  # installed once, when the sweep's console is imported


def error_summary(trial) -> str:
    """The last line of the trial's traceback (the exception), and where the whole traceback is."""
    lines = [line for line in (trial.get_error() or "").strip().splitlines() if line.strip()]
    return f"{lines[-1].strip() if lines else 'unknown error'} (traceback: {trial.error_file})"


class TrialProgress(tune.Callback):
    """One line per trial start, epoch and end, each trial named as its MLflow run (what it varied; ``base``: the
    base config tree, for the knobs a name shows off their default, :func:`~galaxy_da.sweep.naming.trial_run_name`)."""

    def __init__(self, space: Space, metric: str, epochs: int, total: int, experiment_path: str, base: Optional[dict[str, Any]] = None):
        self.space, self.metric, self.epochs, self.total, self.base = space, metric, epochs, total, base
        self.experiment_path = experiment_path  # where the scheduler announces the trials it stops
        self.numbers: dict[str, int] = {}
        self.width = 0

    def _say(self, trial, text: str) -> None:
        number = self.numbers.setdefault(trial.trial_id, len(self.numbers) + 1)
        name = trial_run_name(self.space, trial.config, self.base)
        self.width = max(self.width, len(name))
        print(f"[{number}/{self.total}] {name:<{self.width}}  {text}", flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._say(trial, "started")

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        self._say(trial, f"epoch {result[TIME_ATTR]}/{self.epochs}  {self.metric} {result.get(self.metric, math.nan):.4f}")

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        result = trial.last_result or {}
        done, best = result.get(TIME_ATTR, 0), result.get("best/score", math.nan)
        stopped_by = announced_stop(self.experiment_path, trial.trial_id)
        if stopped_by is not None:
            self._say(trial, f"stopped by {stopped_by} after epoch {done} of {self.epochs}; best {self.metric} {best:.4f}")
        else:
            best_epoch = result.get("best/epoch")
            at = f"epoch {shown(int(best_epoch))}" if best_epoch is not None and best_epoch >= 0 else "no scored epoch"
            self._say(trial, f"finished; best {self.metric} {best:.4f} ({at})")

    def on_trial_recover(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._say(trial, f"failed, retrying: {error_summary(trial)}")

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._say(trial, f"FAILED: {error_summary(trial)}")
