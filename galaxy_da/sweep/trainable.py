"""The Tune trainable: one trial of a sweep, in a Ray worker.

:func:`tune_trial` builds the trial's config with the sampled dotted overrides
and calls the same :func:`galaxy_da.trial.run_trial` as ``galaxy-da train``;
each epoch it reports the record and the trial's checkpoint folder
(``last.pt``, ``best.pt``, ``mlflow_run.json``) to Tune. Data reaches trials as a
shard path or URI, never through the object store. A restored trial re-attaches
to its child run, so MLflow holds exactly one child run per trial.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Optional

from ray import tune

from galaxy_da.config import TrialConfig
from galaxy_da.sweep import space as search_space
from galaxy_da.sweep.leaderboard import TRIAL_TAG, VARIED_TAG_PREFIX
from galaxy_da.sweep.naming import trial_run_name
from galaxy_da.sweep.space import Space
from galaxy_da.tracking import RunTracker, ensure_experiment

RUN_ID_FILE = "mlflow_run.json"
TIME_ATTR = "epochs_done"


def _tune_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """The epoch record for Tune: finite numbers only, plus ASHA's time attribute."""
    metrics = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not (isinstance(v, float) and not math.isfinite(v))}
    metrics[TIME_ATTR] = int(record["epoch"]) + 1
    return metrics


def attach_child_run(cfg: TrialConfig, tracking_uri: str, parent_run_id: str, trial_id: str, tags: dict[str, str], run_id: Optional[str]) -> str:
    """The trial's MLflow run: re-opened from its checkpoint's id, else created fresh.

    A trial restarted without a checkpoint may have left a run behind (it crashed
    or was interrupted before its first report); that run is deleted so the
    trial keeps exactly one child run.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
        return run_id
    experiment_id = ensure_experiment(client, cfg.tracking.experiment, tracking_uri)
    stale = client.search_runs(
        [experiment_id], filter_string=f"tags.{TRIAL_TAG} = '{trial_id}' and tags.`mlflow.parentRunId` = '{parent_run_id}'",
    )
    for run in stale:
        client.delete_run(run.info.run_id)
    tracker = RunTracker(cfg, tracking_uri=tracking_uri, parent_run_id=parent_run_id, extra_tags={TRIAL_TAG: trial_id, **tags})
    return tracker.run_id


def tune_trial(config: dict[str, Any], *, base: dict[str, Any], space: Space, parent_run_id: str, tracking_uri: str, threads: int) -> None:
    """The Tune function trainable: one trial, resumed from Tune's checkpoint when there is one."""
    import torch

    from galaxy_da.trial import run_trial

    torch.set_num_threads(max(1, threads))
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # run_trial's tracker logs through the sweep's server
    cfg = search_space.trial_config(base, space, config)
    cfg.tracking.run_name = trial_run_name(space, config)
    context = tune.get_context()
    work = Path(context.get_trial_dir()) / "checkpoint"
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = tune.get_checkpoint()
    stored_run_id = None
    if checkpoint is not None:
        checkpoint.to_directory(str(work))
        stored_run_id = json.loads((work / RUN_ID_FILE).read_text())["run_id"]
    varied = {VARIED_TAG_PREFIX + path: label for path, label in search_space.describe(space, config).items()}
    run_id = attach_child_run(cfg, tracking_uri, parent_run_id, context.get_trial_id(), varied, stored_run_id)
    (work / RUN_ID_FILE).write_text(json.dumps({"run_id": run_id, "trial_id": context.get_trial_id()}))

    def report_to_tune(record: dict[str, Any], checkpoint_dir: Path) -> None:
        tune.report(_tune_metrics(record), checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))

    run_trial(cfg, checkpoint_dir=work, resume=checkpoint is not None, run_id=run_id, extra_report=report_to_tune)


class ChildRunCloser(tune.Callback):
    """Closes the child run of a trial that the scheduler stopped.

    Tune stops a function trainable by raising ``SystemExit`` inside
    ``tune.report`` (ASHA also stops every trial at ``max_t``); ``run_trial``
    then marks the run FAILED, or the process ends first and it stays RUNNING.
    A trial that *completes* in Tune's eyes did not fail, so once the trial's
    last write has landed (or ``settle_s`` passed) the driver logs the
    checkpoints, history and plot from the trial's last Tune checkpoint and marks
    the run FINISHED. Runs that their trial closed itself are left alone. The
    check runs between Tune steps: waiting inside ``on_trial_complete`` would
    hold back the very stop signal it waits for. Tune pickles callbacks with the
    experiment, so the tracking URI (a new server port after a resume) is read
    from ``$MLFLOW_TRACKING_URI``, which :func:`run_sweep` sets for the sweep.
    """

    @property
    def tracking_uri(self) -> str:
        return os.environ["MLFLOW_TRACKING_URI"]

    def __init__(self, settle_s: float = 30.0):
        self.settle_s = settle_s
        self.pending: list[tuple[Any, float]] = []  # (Tune checkpoint, completion time)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        if trial.checkpoint is not None:
            self.pending.append((trial.checkpoint, time.monotonic()))

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        self.pending = [item for item in self.pending if not self._try_close(*item)]

    def on_experiment_end(self, trials: list, **info) -> None:
        while self.pending:
            self.on_step_end(0, trials)
            time.sleep(0.2 if self.pending else 0)

    def _try_close(self, checkpoint, completed_at: float) -> bool:
        """Close the run if its trial is done writing; False to look again later."""
        from mlflow.tracking import MlflowClient

        from galaxy_da.checkpoint import LAST, load_checkpoint
        from galaxy_da.tracking import log_trial_outputs

        with checkpoint.as_directory() as folder:
            folder = Path(folder)
            run_id = json.loads((folder / RUN_ID_FILE).read_text())["run_id"]
            status = MlflowClient(self.tracking_uri).get_run(run_id).info.status
            if status == "FINISHED":
                return True
            if status == "RUNNING" and time.monotonic() - completed_at < self.settle_s:
                return False
            tracker = RunTracker(TrialConfig(), tracking_uri=self.tracking_uri, run_id=run_id)
            state = load_checkpoint(folder / LAST)
            epochs_done, epochs = state["epoch"] + 1, state["config"]["optim"]["epochs"]
            tags = {"data_manifest_hash": state["data_manifest_hash"], "data_path": state["data_path"]}
            tracker.set_tags(tags | ({"stopped_by": "scheduler", "stopped_after_epochs": str(epochs_done)} if epochs_done < epochs else {}))
            best = state["best"]
            tracker.log_metrics({"best/epoch": -1 if best["epoch"] is None else best["epoch"], "best/score": best["score"]})
            log_trial_outputs(tracker, state["history"], folder, title=f"run {run_id[:8]}")
            tracker.finish("FINISHED")
            return True

