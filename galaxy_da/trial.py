"""A tracked trial: :func:`galaxy_da.train.train` plus an MLflow run around it.

Used by ``galaxy-da train`` and by the Ray Tune trainable, so a sweep's child
run holds exactly what a single ``galaxy-da train`` run holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from galaxy_da.config import TrialConfig
from galaxy_da.tracking import SCORED_ON_TAG, RunTracker
from galaxy_da.train import TrainResult, TrialData, load_trial_data, train


@dataclass
class TrialOutcome:
    run_id: Optional[str]
    best_epoch: Optional[int]
    best_score: float
    history: list[dict[str, Any]]
    checkpoint_dir: Path


def format_record(record: dict[str, Any], rule: str) -> str:
    return (
        f"epoch {record['epoch']:>3}  loss {record['train/loss']:.4f}  "
        f"src_val acc {record['src_val/acc']:.3f} f1 {record['src_val/macro_f1']:.3f}  "
        f"{rule} {record[f'select/{rule}']:.4f}  ({record['train/images_per_s']:.0f} img/s)"
    )


def scored_on(data: TrialData) -> str:
    """What the epoch scores are computed on, e.g. ``source val 160 of 300, target adapt 128 of 480``.

    ``data.max_source`` / ``data.max_target`` subsample the splits, so a trial's
    ``select/<rule>`` can differ from the same rule on the full splits (``galaxy-da eval``).
    """
    def sample(name: str, used: int, domain: str, split: str) -> str:
        total = sum(data.dataset.counts(domain, split))
        return f"{name} {used} of {total}" if used < total else f"{name} {total} (full split)"

    return f"{sample('source val', len(data.source_val), 'source', 'val')}, {sample('target adapt', len(data.target_adapt), 'target', 'adapt')}"


def run_trial(
    cfg: TrialConfig,
    *,
    track: bool = True,
    checkpoint_dir: Optional[Path] = None,
    resume: bool = False,
    progress: bool = False,
    parent_run_id: Optional[str] = None,
    run_id: Optional[str] = None,
    extra_report: Optional[Callable[[dict[str, Any], Path], None]] = None,
    extra_tags: Optional[dict[str, str]] = None,
) -> TrialOutcome:
    """Train ``cfg``; log params, tags, per-epoch metrics and artifacts to one MLflow run.

    ``run_id`` re-attaches to an existing run (a resumed trial logs into the same run).
    ``extra_report`` is called after MLflow logging each epoch (Ray Tune's report).
    """
    # A run of a sweep's trial exists already and is marked FAILED if its data fails to load; a new
    # run is created only once the data has loaded, so a bad path or shard leaves no empty FAILED run.
    tracker = RunTracker(cfg, run_id=run_id) if track and run_id is not None else None

    def report(record: dict[str, Any], ckpt: Path) -> None:
        if tracker is not None:
            tracker.log_epoch(record)
        if progress:
            print(format_record(record, cfg.selection.rule), flush=True)
        if extra_report is not None:
            extra_report(record, ckpt)

    try:
        data = load_trial_data(cfg)
        if track and tracker is None:
            tracker = RunTracker(cfg, parent_run_id=parent_run_id, extra_tags=extra_tags)
        if tracker is not None:
            tracker.set_tags({SCORED_ON_TAG: scored_on(data)})
        result: TrainResult = train(cfg, report, checkpoint_dir=checkpoint_dir, resume=resume, data=data)
    except BaseException:
        if tracker is not None:
            tracker.finish("FAILED")
        raise
    if tracker is not None:
        from galaxy_da.tracking import log_trial_outputs

        tracker.set_tags({"data_manifest_hash": result.manifest_hash, "data_path": cfg.data.path})
        tracker.log_metrics({"best/epoch": result.best_epoch if result.best_epoch is not None else -1, "best/score": result.best_score})
        log_trial_outputs(tracker, result.history, result.checkpoint_dir, title=cfg.tracking.run_name or tracker.run_id[:8])
        tracker.finish()
    return TrialOutcome(tracker.run_id if tracker else None, result.best_epoch, result.best_score, result.history, result.checkpoint_dir)
