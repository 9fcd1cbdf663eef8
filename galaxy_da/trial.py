"""A tracked trial: a :class:`~galaxy_da.train.Trainer` plus the MLflow run around it.

Used by ``galaxy-da train`` (:func:`run_trial`) and by the Ray Tune trainable, so
a sweep's child run holds exactly what a single ``galaxy-da train`` run holds.

The run is created only after the data has loaded (a bad path or unreadable
shard leaves no empty run behind), and it always ends in a state that says
what happened:

- FINISHED: every epoch trained (or early stopping by ``selection.patience``);
  also a trial a scheduler stopped, tagged ``stopped_by``;
- FAILED: the trial raised; the error is tagged (``error``) and its traceback
  logged (``error.txt``);
- KILLED: interrupted (Ctrl-C, a sweep interrupted); a resumed trial re-attaches
  and the run goes back to RUNNING.

A closed run holds the final artifacts: ``checkpoints/{best,last}.pt``,
``history.json`` and the training-history plot, logged by the trial itself.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from galaxy_da.config import TrialConfig
from galaxy_da.data.reader import ShardDataset
from galaxy_da.epoch_numbers import shown
from galaxy_da.selection import RULE_READS
from galaxy_da.tracking import SCORED_ON_TAG
from galaxy_da.train import Trainer, TrainResult
from galaxy_da.trial_data import TrialData

ERROR_TAG_LIMIT = 5000


@dataclass
class TrialOutcome:
    run_id: Optional[str]
    best_epoch: Optional[int]
    best_score: float
    history: list[dict[str, Any]]
    checkpoint_dir: Path


def format_record(record: dict[str, Any], cfg: TrialConfig) -> str:
    """One progress line per epoch, numbered from 1 (:mod:`galaxy_da.epoch_numbers`): ``epoch 2/3``, warm-up
    epochs marked; scored epochs also show source-val metrics and the selection score."""
    epochs, rule = cfg.optim.epochs, cfg.selection.rule
    line = f"epoch {shown(record['epoch']):>{len(str(epochs))}}/{epochs}"
    line += "  warm-up" if record["epoch"] < cfg.optim.warmup_epochs else ""
    line += f"  loss {record['train/loss']:.4f}"
    if "src_val/acc" in record:
        line += f"  src_val acc {record['src_val/acc']:.3f} f1 {record['src_val/macro_f1']:.3f}"
    if f"select/{rule}" in record:
        line += f"  {rule} {record[f'select/{rule}']:.4f}"
    return line + f"  ({record['train/images_per_s']:.0f} img/s)"


SCORED_SPLITS = {"source_val": ("source val", "source", "val"), "target": ("target adapt", "target", "adapt")}


def scored_on(cfg: TrialConfig, rule: str) -> str:
    """What the rule's epoch scores are computed on, e.g. ``source val 160 of 300`` or ``target adapt 480 (full split)``.

    ``data.max_source`` / ``data.max_target`` subsample the splits (to at most
    that many galaxies), so a trial's ``select/<rule>`` can differ from the same
    rule on the full splits (``galaxy-da eval``). Read from the config and the
    manifest's counts alone, so it holds for any trainer, in-process or multi-worker.
    """
    view = ShardDataset(cfg.data.path, target=cfg.data.target).training_view()
    limits = {"source_val": cfg.data.max_source, "target": cfg.data.max_target}
    samples = []
    for reads in sorted(RULE_READS[rule]):
        name, domain, split = SCORED_SPLITS[reads]
        total = view.split_size(domain, split)
        used = total if limits[reads] is None else min(limits[reads], total)
        samples.append(f"{name} {used} of {total}" if used < total else f"{name} {total} (full split)")
    return ", ".join(samples)


class TrackedTrial:
    """Train epoch by epoch, log each epoch, and close the MLflow run with the right state.

    ``trainer`` replaces the in-process :class:`~galaxy_da.train.Trainer` by
    anything with its surface (``epochs()``, ``history``, ``finished``,
    ``next_epoch``, ``result()``, ``checkpoint_dir``): the sweep's multi-worker
    trainer (:mod:`galaxy_da.sweep.ddp`).
    """

    def __init__(
        self,
        cfg: TrialConfig,
        *,
        track: bool = True,
        checkpoint_dir: Optional[Path] = None,
        resume: bool = False,
        parent_run_id: Optional[str] = None,
        run_id: Optional[str] = None,
        extra_tags: Optional[dict[str, str]] = None,
        trainer: Any = None,
    ) -> None:
        self.cfg = cfg
        self.trainer = trainer or Trainer(cfg, checkpoint_dir=checkpoint_dir, resume=resume)
        self.tracker = None
        if track:
            from galaxy_da.tracking import RunTracker

            tags = {**(extra_tags or {}), SCORED_ON_TAG: scored_on(cfg, cfg.selection.rule)}  # before the run: a failure here leaves none
            self.tracker = RunTracker(cfg, parent_run_id=parent_run_id, run_id=run_id, extra_tags=tags)
            if run_id is not None:  # re-attached: the run exists, with its tags from its first start
                self.tracker.client.update_run(run_id, status="RUNNING")
                self.tracker.set_tags({SCORED_ON_TAG: tags[SCORED_ON_TAG]})
        self.closed = False

    @property
    def run_id(self) -> Optional[str]:
        return self.tracker.run_id if self.tracker else None

    def epochs(self) -> Iterator[dict[str, Any]]:
        """Each epoch's record, after it is logged to the run."""
        for record in self.trainer.epochs():
            if self.tracker is not None:
                self.tracker.log_epoch(record)
            yield record

    def finish(self, stopped_by: Optional[str] = None) -> TrialOutcome:
        """Close the run FINISHED with its final artifacts; ``stopped_by`` names who stopped an unfinished trial."""
        result = self.trainer.result()
        if self.tracker is not None and not self.closed:
            stop_tags = {} if stopped_by is None or self.trainer.finished else {"stopped_by": stopped_by, "stopped_after_epochs": str(self.trainer.next_epoch)}
            close_finished_run(self.tracker, result, self.cfg.data.path, {"closed_by": "trial", **stop_tags}, self.cfg.tracking.run_name)
        self.closed = True
        return TrialOutcome(self.run_id, result.best_epoch, result.best_score, result.history, result.checkpoint_dir)

    def fail(self, error: BaseException) -> None:
        """Close the run FAILED with the error (tag and traceback); an interruption goes to :meth:`interrupt`."""
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            return self.interrupt()
        if self.tracker is not None and not self.closed:
            close_failed_run(self.tracker, error)
        self.closed = True

    def interrupt(self) -> None:
        """Close the run KILLED: stopped from outside before it ended; a resumed trial re-opens it."""
        if self.tracker is not None and not self.closed:
            self.tracker.set_tags({"interrupted_after_epochs": str(self.trainer.next_epoch)})
            self.tracker.finish("KILLED")
        self.closed = True


def close_failed_run(tracker, error: BaseException) -> None:
    """FAILED, with the error as a tag and its traceback as ``error.txt``."""
    tracker.set_tags({"error": f"{type(error).__name__}: {error}"[:ERROR_TAG_LIMIT], "closed_by": "trial"})
    tracker.log_text("".join(traceback.format_exception(error)), "error.txt")
    tracker.finish("FAILED")


def close_finished_run(tracker, result: TrainResult, data_path: str, tags: dict[str, str], title: Optional[str] = None) -> None:
    """Tags, best score, checkpoints, history and plot; then FINISHED."""
    from galaxy_da.tracking import log_trial_outputs

    tracker.set_tags({"data_manifest_hash": result.manifest_hash, "data_path": data_path, **tags})
    tracker.log_metrics({"best/epoch": -1 if result.best_epoch is None else result.best_epoch, "best/score": result.best_score})
    log_trial_outputs(tracker, result.history, result.checkpoint_dir, title=title or tracker.run_id[:8], lineage=result.lineage)
    tracker.finish("FINISHED")


def run_trial(
    cfg: TrialConfig,
    *,
    track: bool = True,
    checkpoint_dir: Optional[Path] = None,
    resume: bool = False,
    progress: bool = False,
    parent_run_id: Optional[str] = None,
    run_id: Optional[str] = None,
    extra_report: Optional[Callable[[dict[str, Any], Trainer], None]] = None,
    extra_tags: Optional[dict[str, str]] = None,
    data: Optional[TrialData] = None,
    started: Optional[Callable[[Optional[str]], None]] = None,
) -> TrialOutcome:
    """Train ``cfg`` in a plain loop; log params, tags, per-epoch metrics and artifacts to one MLflow run.

    ``run_id`` re-attaches to an existing run (a resumed trial logs into the same run).
    ``extra_report(record, trainer)`` is called after MLflow logging each epoch,
    with the trainer between two epochs (its model in memory, its checkpoint
    folder); it cannot change the trial's random stream (see :class:`Trainer`).
    ``data``: the trial's splits when the caller already holds them.
    ``started(run_id)`` is called once the MLflow run exists (``None`` untracked), before the first epoch.
    """
    trainer = Trainer(cfg, checkpoint_dir=checkpoint_dir, resume=resume, data=data)
    trial = TrackedTrial(cfg, track=track, parent_run_id=parent_run_id, run_id=run_id, extra_tags=extra_tags, trainer=trainer)
    try:
        if started is not None:
            started(trial.run_id)
        for record in trial.epochs():
            if progress:
                print(format_record(record, cfg), flush=True)
            if extra_report is not None:
                extra_report(record, trainer)
    except BaseException as error:
        trial.fail(error)
        raise
    return trial.finish()
