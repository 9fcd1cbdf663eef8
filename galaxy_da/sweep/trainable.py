"""The Tune trainable: one trial of a sweep, in a Ray actor, one scored epoch per Tune step.

:class:`SweepTrial` builds the trial's config from the sampled dotted overrides
and drives the same :class:`~galaxy_da.trial.TrackedTrial` as ``galaxy-da
train``. A Tune step trains until the next *scored* epoch
(:func:`~galaxy_da.train.is_scored_epoch`: never inside warm-up, every
``selection.eval_every``-th epoch after it, and the last), so every result
Tune sees carries the label-free score and ``epochs_done``; Tune checkpoints
the trial folder (``last.pt``, ``best.pt``, ``mlflow_run.json``) after each.
Data reaches trials as a shard path or URI, never through the object store.
A trial with ``resources.workers_per_trial > 1`` drives W Ray Train workers
instead of training in its actor (:mod:`galaxy_da.sweep.ddp`); either way it
tags its run with where it ran: ``node_id``, ``node_ip`` and the ``gpu_ids``
Ray gave it (per worker, in rank order, for W > 1).

The trial closes its own MLflow run, synchronously, in the actor:

- trained to the end (or early-stopped by patience): FINISHED, in ``step``;
- stopped by the scheduler: FINISHED with ``stopped_by``, in ``cleanup`` (the
  scheduler announced the stop first, see :mod:`galaxy_da.sweep.stops`);
- interrupted (sweep stopped, node lost): KILLED in ``cleanup`` if it ran; a
  restored trial re-attaches to the same run, so MLflow keeps one run per trial;
- raised: FAILED with the error, in ``step``.

Population-based training (``pbt``/``pb2``) restores a member from *another*
member's checkpoint with perturbed knobs. The member then continues from the
copied weights, optimiser state and epoch under its own (new) config, keeps its
own MLflow run, records the copy in its lineage and shows the knobs in force
(:mod:`galaxy_da.sweep.lineage`).

Compute: every epoch a trial trains counts, re-trained ones included (a member
that copies an older checkpoint trains some epochs twice, which its per-epoch
metrics cannot show). The run's metric ``compute/epochs_trained`` is the running
count at each epoch trained; a trial that re-attaches to its run (its own
restart, or a PBT copy) continues its own count, never the copied member's.
:func:`epochs_trained` reads it back.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

import ray
from ray import tune

from galaxy_da.checkpoint import SCORED_DIR
from galaxy_da.sweep import space as search_space
from galaxy_da.sweep.leaderboard import RETIRED_TAG, TRIAL_TAG, VARIED_TAG_PREFIX
from galaxy_da.sweep.lineage import log_learned_schedule, record_copy
from galaxy_da.sweep.naming import trial_run_name
from galaxy_da.sweep.schedulers import TIME_ATTR
from galaxy_da.sweep.space import Space
from galaxy_da.sweep.stops import announced_stop
from galaxy_da.sweep.trial_user import enter_trial_environment

RUN_ID_FILE = "mlflow_run.json"
CHECKPOINT_FILES = ("last.pt", "best.pt", RUN_ID_FILE)
EPOCHS_TRAINED = "compute/epochs_trained"


def epochs_trained(client, run_id: str) -> int:
    """The epochs a trial's run trained, re-trained ones included: the largest value of its running count (0: none yet)."""
    return int(max((point.value for point in client.get_metric_history(run_id, EPOCHS_TRAINED)), default=0))


def counted_epochs(records: Iterator[dict[str, Any]], tracker, trained: int) -> Iterator[dict[str, Any]]:
    """Each epoch's record with ``compute/epochs_trained``, the running count from ``trained`` on, also logged at the epoch's step."""
    for record in records:
        trained += 1
        tracker.log_metrics({EPOCHS_TRAINED: trained}, step=int(record["epoch"]))
        yield {**record, EPOCHS_TRAINED: trained}


def tune_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """The epoch record for Tune: finite numbers only, plus ASHA's time attribute."""
    metrics = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not (isinstance(v, float) and not math.isfinite(v))}
    metrics[TIME_ATTR] = int(record["epoch"]) + 1
    return metrics


def node_tags(previous: str, node_ip: str) -> dict[str, str]:
    """``node_ip``: where the trial runs now; ``node_ips``: every host it ran on, in order (a resume adds one)."""
    hosts = [ip for ip in previous.split(",") if ip]
    return {"node_ip": node_ip, "node_ips": ",".join(hosts if hosts and hosts[-1] == node_ip else hosts + [node_ip])}


def trial_runs(tracking_uri: str, experiment: str, parent_run_id: str, trial_id: str) -> list:
    """The live runs tagged with ``trial_id`` under this sweep's parent run (retired ones left out)."""
    from mlflow.tracking import MlflowClient

    from galaxy_da.tracking import ensure_experiment

    client = MlflowClient(tracking_uri)
    runs = client.search_runs([ensure_experiment(client, experiment, tracking_uri)],
                              filter_string=f"tags.{TRIAL_TAG} = '{trial_id}' and tags.`mlflow.parentRunId` = '{parent_run_id}'")
    return [run for run in runs if run.data.tags.get(RETIRED_TAG) != "true"]


def retire_stale_runs(tracking_uri: str, experiment: str, parent_run_id: str, trial_id: str) -> None:
    """A trial restarted without a checkpoint may have left a run behind: it is tagged retired (and closed KILLED if it
    was RUNNING), so one live run per trial stays. The trial's MLflow user may not delete runs
    (:mod:`galaxy_da.sweep.trial_user`); the driver deletes retired runs when the sweep ends."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    for run in trial_runs(tracking_uri, experiment, parent_run_id, trial_id):
        client.set_tag(run.info.run_id, RETIRED_TAG, "true")
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "KILLED")


def find_trial_run(tracking_uri: str, experiment: str, parent_run_id: str, trial_id: str) -> Optional[str]:
    """The live run of ``trial_id`` in this sweep, if it has one."""
    runs = trial_runs(tracking_uri, experiment, parent_run_id, trial_id)
    return runs[0].info.run_id if runs else None


def placement_tags() -> dict[str, str]:
    """Where this one-worker trial runs, as MLflow run tags: node and the GPU ids Ray gave it (``[]``: none)."""
    import ray

    return {"node_ip": ray.util.get_node_ip_address(), "node_id": ray.get_runtime_context().get_node_id(),
            "gpu_ids": json.dumps([str(i) for i in ray.get_gpu_ids()]), "workers": "1"}


class SweepTrial(tune.Trainable):
    """One sweep trial; Tune passes ``base``, ``space``, ``parent_run_id``, ... through ``tune.with_parameters``.

    ``credentials``: the MLflow user the trial logs as (:func:`~galaxy_da.sweep.trial_user.trial_credentials`),
    never the admin; ``{}``: none.
    """

    def setup(self, config: dict[str, Any], *, base: dict[str, Any], space: Space, parent_run_id: str,
              tracking_uri: str, experiment_path: str, threads: float, use_gpu: bool, credentials: dict[str, str],
              population: bool = False) -> None:
        import torch

        torch.set_num_threads(max(1, int(threads)))
        enter_trial_environment(tracking_uri, credentials)  # the trial's tracker logs through the sweep's server, as the trial user
        self.base, self.space = base, space
        self.parent_run_id, self.tracking_uri, self.experiment_path = parent_run_id, tracking_uri, experiment_path
        self.threads, self.use_gpu = threads, use_gpu
        self.population = population  # PBT/PB2: each member also logs the schedule it learned
        self._prepare(config)

    def _prepare(self, config: dict[str, Any]) -> None:
        """Per-trial state: a fresh actor, or a reused one (``reset_config``)."""
        self.cfg = search_space.trial_config(self.base, self.space, config)
        self.cfg.tracking.run_name = trial_run_name(self.space, config, self.base)
        self.varied = {VARIED_TAG_PREFIX + path: label for path, label in search_space.describe(self.space, config).items()}
        self.owner = self.trial_id  # Tune renames a reused actor before reset_config; the old trial's id is kept here
        self.work = Path(tempfile.mkdtemp(prefix=f"galaxy-da-trial-{self.owner}-"))
        self.stored_run_id: Optional[str] = None  # set when Tune restores this trial's own checkpoint
        self.copied_from: Optional[dict[str, Any]] = None  # set when PBT restores another member's checkpoint
        self.trial = None
        self.epochs = None
        self.workers = None  # the Ray Train workers of a multi-worker trial

    def _start(self) -> None:
        from galaxy_da.tracking import RunTracker
        from galaxy_da.trial import TrackedTrial, close_failed_run

        if self.copied_from is not None:  # PBT: continue another member's state in this member's own run
            self.stored_run_id = find_trial_run(self.tracking_uri, self.cfg.tracking.experiment, self.parent_run_id, self.owner)
        elif self.stored_run_id is None:
            retire_stale_runs(self.tracking_uri, self.cfg.tracking.experiment, self.parent_run_id, self.owner)
        tags = {TRIAL_TAG: self.owner, **node_tags("", ray.util.get_node_ip_address()), **self.varied}
        resume = self.stored_run_id is not None or self.copied_from is not None
        try:
            if self.cfg.resources.workers_per_trial > 1:
                from galaxy_da.sweep.ddp import DistributedTrainer

                self.workers = DistributedTrainer(
                    self.cfg, checkpoint_dir=self.work, resume=resume, use_gpu=self.use_gpu, cpus_per_worker=self.threads,
                    storage_path=f"{self.experiment_path}/ddp", name=self.owner,
                )
            tags.update(self.workers.tags() if self.workers else placement_tags())
            self.trial = TrackedTrial(self.cfg, checkpoint_dir=self.work, resume=resume, parent_run_id=self.parent_run_id,
                                      run_id=self.stored_run_id, extra_tags=tags, trainer=self.workers)
        except Exception as error:  # e.g. unreadable data: the sweep's leaderboard still shows the trial, FAILED
            tracker = RunTracker(self.cfg, parent_run_id=self.parent_run_id, run_id=self.stored_run_id, extra_tags=tags)
            close_failed_run(tracker, error)
            raise
        if self.stored_run_id is not None:  # re-attached, maybe on another host
            previous = self.trial.tracker.client.get_run(self.stored_run_id).data.tags.get("node_ips", "")
            self.trial.tracker.set_tags(node_tags(previous, ray.util.get_node_ip_address()))
        if self.copied_from is not None:
            record_copy(self.trial, self.owner, self.copied_from, self.varied)
        (self.work / RUN_ID_FILE).write_text(json.dumps({"run_id": self.trial.run_id, "trial_id": self.owner}))
        # the count goes on in this trial's own run (its restart, or a PBT copy), never in the copied member's
        trained = epochs_trained(self.trial.tracker.client, self.stored_run_id) if self.stored_run_id is not None else 0
        self.epochs = counted_epochs(self.trial.epochs(), self.trial.tracker, trained)

    def step(self) -> dict[str, Any]:
        """Train to the next scored epoch; close the run FINISHED when training is over."""
        try:
            if self.trial is None:
                self._start()
            record = self.trial.trainer.history[-1] if self.trial.trainer.finished else None
            for record in self.epochs:
                if f"select/{self.cfg.selection.rule}" in record:
                    break
            metrics = tune_metrics(record)
            if self.trial.trainer.finished:
                self.trial.finish()
                self._release_workers()
                if self.population:
                    log_learned_schedule(self.trial, self.owner)
                metrics[tune.result.DONE] = True
            return metrics
        except BaseException as error:
            if self.trial is not None:
                self.trial.fail(error)
            raise

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        for name in CHECKPOINT_FILES:
            if (self.work / name).is_file():
                shutil.copy2(self.work / name, Path(checkpoint_dir) / name)
        if (self.work / SCORED_DIR).is_dir():  # selection.audit_rules: the models kept so far
            shutil.copytree(self.work / SCORED_DIR, Path(checkpoint_dir) / SCORED_DIR, dirs_exist_ok=True)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        """This trial's own checkpoint (a restart), or another member's (a PBT exploit; its kept models stay its own)."""
        for name in CHECKPOINT_FILES:
            if (Path(checkpoint_dir) / name).is_file():
                shutil.copy2(Path(checkpoint_dir) / name, self.work / name)
        owner = json.loads((self.work / RUN_ID_FILE).read_text())
        mine = owner["trial_id"] == self.owner
        self.stored_run_id, self.copied_from = (owner["run_id"], None) if mine else (None, owner)
        if mine and (Path(checkpoint_dir) / SCORED_DIR).is_dir():
            shutil.copytree(Path(checkpoint_dir) / SCORED_DIR, self.work / SCORED_DIR, dirs_exist_ok=True)

    def _release_workers(self) -> None:
        if self.workers is not None:
            self.workers.close()
            self.workers = None

    def _close(self) -> None:
        """Stopped before the end: FINISHED with ``stopped_by`` if a scheduler stopped it, else KILLED."""
        if self.trial is not None and not self.trial.closed:
            stopped_by = announced_stop(self.experiment_path, self.owner)
            if stopped_by is not None:
                self.trial.finish(stopped_by=stopped_by)
            else:
                self.trial.interrupt()
        self._release_workers()
        shutil.rmtree(self.work, ignore_errors=True)

    def cleanup(self) -> None:
        self._close()

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Reuse this actor for another trial (no new process, no second torch import)."""
        self._close()
        self._prepare(new_config)
        return True
