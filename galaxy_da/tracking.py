"""MLflow: where runs go, what a run holds, and how to get a model back from one.

A trial run holds the flattened config as params; the config hash (with and
without seed), the data manifest's hash and path, the git commit, and the
backbone/method/target survey/top-k/schedule as tags; per-epoch metrics with ``step = epoch``;
``checkpoints/{best,last}.pt``, ``config.yaml``, ``history.json`` and the
training-history plot as artifacts. That is enough to rebuild the model later.

All calls go through :class:`mlflow.tracking.MlflowClient` (no global active
run), so a trial can log from any thread or process; :func:`mlflow_client`
creates and migrates a new local sqlite store first, one process at a time
(:mod:`galaxy_da.sqlite_store`). MLflow is imported only when a tracker is created.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from galaxy_da import strict_json
from galaxy_da.config import TrialConfig, config_to_yaml

DEFAULT_STORE = Path("mlflow")
EPOCH_METRIC = "train/loss"  # logged once per epoch by every trial, last: the epoch is complete once it is in (RunTracker.log_epoch)
PARAM_VALUE_LIMIT = 6000
SCORED_ON_TAG = "scored_on"  # what a trial's epoch scores were computed on (subsampled or full splits)
TRACKING_URI_HELP = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow/mlflow.db)"  # every --tracking-uri flag
# MLflow's experiment kind for classic ML and deep learning ("Model training" in its UI; the other kind is GenAI).
EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
UI_ADDRESS = "http://127.0.0.1:5000"  # where `make ui` serves the project's store (PORT=... make ui for another port)
# Logged first in every batch: MLflow's compare-runs page plots, by default, the first metric the first
# selected run logged (when every selected run has it), and a trial's first epoch would otherwise lead with lr.
LEAD_METRICS = ("best/score",)


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else the project's sqlite store ``mlflow/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_STORE.resolve() / 'mlflow.db'}"


def ui_command(tracking_uri: str) -> str:
    """A command that opens the MLflow UI on ``tracking_uri`` once a sweep's own server is gone.

    ``make ui`` (from the repository root) for this checkout's store, else the
    venv's ``mlflow ui`` on that store; a server URI is printed as it is.
    """
    checkout = Path(__file__).resolve().parents[1]
    if tracking_uri == f"sqlite:///{checkout / DEFAULT_STORE / 'mlflow.db'}" and (checkout / "Makefile").is_file():
        return "make ui"
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    mlflow = Path(sys.executable).with_name("mlflow")
    return f"{mlflow if mlflow.exists() else 'mlflow'} ui --backend-store-uri {tracking_uri}"


def ui_address(tracking_uri: str) -> str:
    """The MLflow UI's address for ``tracking_uri``: a tracking server is its own UI, a local store is served by ``make ui``."""
    return tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else UI_ADDRESS


def artifact_root_for(tracking_uri: str) -> Optional[str]:
    """Artifacts of a local sqlite store go beside it in ``artifacts/`` (never the cwd)."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent / "artifacts").as_uri()
    return None


def mlflow_client(tracking_uri: str):
    """An ``MlflowClient`` on ``tracking_uri``; a local sqlite store is created and migrated first, one process at a time.

    Raises :class:`~galaxy_da.sqlite_store.StoreError` (one line) for a store that cannot be opened.
    """
    from mlflow.tracking import MlflowClient

    from galaxy_da.sqlite_store import ready_store

    ready_store(tracking_uri, artifact_root_for(tracking_uri))
    return MlflowClient(tracking_uri=tracking_uri)


def git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def method_tag(cfg: TrialConfig) -> str:
    """What the trial aligns and how, each part off its default only: ``laplacian``, ``laplacian+topk_ot``
    (the top-k OT add-on), ``sinkhorn+reach0.5`` (unbalanced, ``align.reach``), ``laplacian+topk_ot+bbse``
    (the source side weighted by ``align.label_shift``'s class ratios). Weighted and marginal, unbalanced
    and balanced runs never share a method."""
    align = cfg.align
    parts = [align.method]
    parts += ["topk_ot"] if align.ot.weight > 0 and align.method != "topk_ot" else []
    parts += [f"reach{align.reach:g}"] if align.reach is not None else []
    parts += [align.label_shift] if align.label_shift != "none" else []
    return "+".join(parts)


def describe_tags(cfg: TrialConfig) -> dict[str, str]:
    """The tags users filter on in the MLflow UI."""
    return {
        "config_hash": cfg.hash(),
        "config_hash_noseed": cfg.hash_without_seed(),
        "backbone": cfg.model.backbone + (f"/{cfg.model.group}" if cfg.model.backbone == "steerable" else ""),
        "method": method_tag(cfg),
        "target": cfg.data.target,
        "weighting": cfg.align.weighting,
        "topk": str(cfg.align.topk),
        "schedule": f"w:{cfg.schedules.align_weight.kind},blur:{cfg.schedules.blur.kind},grl:{cfg.schedules.grl.kind}",
        "selection_rule": cfg.selection.rule,
        "seed": str(cfg.seed),
        "git_commit": git_commit(),
    }


def config_params(cfg: TrialConfig) -> dict[str, str]:
    """The run params of ``cfg``: every flattened key, lists and mappings as JSON, values cut at :data:`PARAM_VALUE_LIMIT`."""
    return {k: str(json.dumps(v) if isinstance(v, (list, dict)) else v)[:PARAM_VALUE_LIMIT] for k, v in cfg.flat().items()}


def numeric_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The finite numeric entries of a report record (``epoch`` becomes the step)."""
    return {
        key: float(value)
        for key, value in record.items()
        if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }


def ordered_for_logging(points: list[tuple[str, float, int]]) -> list[tuple[str, float, int]]:
    """The order points go to MLflow in: :data:`LEAD_METRICS` first, the rest as given."""
    return sorted(points, key=lambda point: point[0] not in LEAD_METRICS)


class RunTracker:
    """One MLflow run: create it, log epochs, attach artifacts, finish it."""

    def __init__(
        self,
        cfg: TrialConfig,
        tracking_uri: Optional[str] = None,
        parent_run_id: Optional[str] = None,
        extra_tags: Optional[dict[str, str]] = None,
        run_id: Optional[str] = None,
    ):
        self.tracking_uri = tracking_uri or cfg.tracking.tracking_uri or default_tracking_uri()
        self.client = mlflow_client(self.tracking_uri)
        if run_id is not None:  # re-attach (a resumed trial): epochs it logged before are not logged again
            self.run_id = run_id
            self.logged_epochs = {point.step for point in self.client.get_metric_history(run_id, EPOCH_METRIC)}
            self.maybe_cut_epoch: Optional[int] = max(self.logged_epochs, default=-1) + 1  # may hold points, not the marker
            return
        self.logged_epochs: set[int] = set()
        self.maybe_cut_epoch = None
        experiment_id = ensure_experiment(self.client, cfg.tracking.experiment, self.tracking_uri)
        tags = describe_tags(cfg) | (extra_tags or {})
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(experiment_id, run_name=cfg.tracking.run_name, tags=tags)
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in config_params(cfg).items()])
        self.log_text(config_to_yaml(cfg), "config.yaml")

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def log_epoch(self, record: dict[str, Any]) -> None:
        """Epoch metrics at ``step = epoch``; per-step diagnostics as ``step/<name>`` at the global step.

        An epoch this run already holds is skipped: a trial resumed from a checkpoint
        older than its last logged epoch (killed between logging and checkpointing)
        redoes that epoch, and MLflow keeps each epoch's points exactly once.
        After :meth:`relog_from` the epochs it names are logged again.

        :data:`EPOCH_METRIC` is the "epoch complete" marker: it goes last, in a batch
        of its own, after every other point of the epoch (which may take several
        batches). A failure between batches leaves the epoch without it, so a
        re-attached run logs that epoch again instead of skipping its missing points;
        the points that epoch's cut-off attempt did log are not logged twice
        (:meth:`_not_yet_logged`).
        """
        epoch = int(record["epoch"])
        if epoch in self.logged_epochs:
            return
        points = [(key, value, epoch) for key, value in numeric_metrics(record).items()]
        steps = record.get("steps") or []
        for index, diagnostics in enumerate(steps):
            global_step = epoch * len(steps) + index
            points += [(f"step/{key}", value, global_step) for key, value in numeric_metrics(diagnostics).items()]
        if epoch == self.maybe_cut_epoch:
            points, self.maybe_cut_epoch = self._not_yet_logged(points), None
        self._log_points([point for point in points if point[0] != EPOCH_METRIC])
        self._log_points([point for point in points if point[0] == EPOCH_METRIC])
        self.logged_epochs.add(epoch)

    def _not_yet_logged(self, points: list[tuple[str, float, int]]) -> list[tuple[str, float, int]]:
        """``points`` (key, value, step) of an epoch whose first attempt may have been cut between batches, less those
        the run already holds at their step.

        Batches go out in :meth:`_log_points`' order, the marker last, so what a cut
        attempt logged is a prefix of that order: if its first point is not in the run,
        none is, and one history read settles the usual case (a re-attach after a
        clean checkpoint).
        """
        ordered = ordered_for_logging([point for point in points if point[0] != EPOCH_METRIC])
        if not ordered or not self._held_steps(ordered[0][0], {ordered[0][2]}):
            return points
        held = {(key, step) for key in {key for key, _, _ in points}
                for step in self._held_steps(key, {step for k, _, step in points if k == key})}
        return [point for point in points if (point[0], point[2]) not in held]

    def _held_steps(self, key: str, steps: set[int]) -> set[int]:
        """Those of ``steps`` at which the run holds a point of ``key``."""
        return {point.step for point in self.client.get_metric_history(self.run_id, key)} & steps

    def relog_from(self, epoch: int) -> None:
        """Log epochs ``epoch``, ``epoch + 1``, ... again although the run holds them.

        A PBT member that continues another member's *older* checkpoint re-trains
        epochs it had logged, under other weights and knobs. Their new points are
        logged at the same steps with later timestamps; MLflow keeps both. The point
        in force at a step is the newest one: a reader of a metric's history takes,
        per step, the point with the largest timestamp (MLflow's own latest value,
        the newest point at the largest step, is the one in force too once the
        member has re-trained its last epoch).
        """
        self.logged_epochs = {logged for logged in self.logged_epochs if logged < epoch}
        self.maybe_cut_epoch = None  # re-trained epochs log every point anew: the newest is in force

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: Optional[str] = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """Finite values only."""
        self._log_points([(key, value, step) for key, value in numeric_metrics(metrics).items()])

    def _log_points(self, points: list[tuple[str, float, int]]) -> None:
        """(key, value, step) triples in batches (MLflow caps one batch at 1000 metrics), :data:`LEAD_METRICS` first."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value, step in ordered_for_logging(points)]
        for start in range(0, len(metrics), 900):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 900])

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def ensure_experiment(client, name: str, tracking_uri: str) -> str:
    """Get or create ``name``, with artifacts beside a local sqlite store, tagged as MLflow's model-training kind.

    An experiment created before it was tagged gets the tag now; one that names another kind keeps it.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if EXPERIMENT_KIND_TAG not in experiment.tags:
            from mlflow.exceptions import MlflowException

            try:
                client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
            except MlflowException:  # another process tagged it at the same moment
                pass
        return experiment.experiment_id
    root = artifact_root_for(tracking_uri)
    location = f"{root}/{name}" if root else None
    try:
        return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
    except Exception:  # another process created it first
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def log_trial_outputs(tracker: RunTracker, history: list[dict[str, Any]], checkpoint_dir: Path, title: str,
                      lineage: Optional[list[dict[str, Any]]] = None) -> None:
    """Checkpoints (and the kept models of scored epochs, ``selection.audit_rules``), history JSON and the
    history plot at the end of a trial; a PBT member's ancestry too."""
    from galaxy_da.checkpoint import BEST, LAST, SCORED_DIR
    from galaxy_da.plots import plot_history, save

    for name in (BEST, LAST):
        if (checkpoint_dir / name).is_file():
            tracker.log_artifact(checkpoint_dir / name, "checkpoints")
    if (checkpoint_dir / SCORED_DIR).is_dir():
        tracker.client.log_artifacts(tracker.run_id, str(checkpoint_dir / SCORED_DIR), f"checkpoints/{SCORED_DIR}")
    tracker.log_text(strict_json.dumps(history, indent=1, default=str), "history.json")
    if lineage:
        tracker.log_text(strict_json.dumps(lineage, indent=1), "lineage.json")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "training_history.png"
        save(plot_history(history, title=title), path)
        tracker.log_artifact(path, "plots")


def load_run_checkpoint(run_id: str, which: str = "best", tracking_uri: Optional[str] = None) -> dict[str, Any]:
    """Fetch and load ``checkpoints/<which>.pt`` of a run (``weights_only``); the download is removed after.

    A run or checkpoint that does not exist raises :class:`LookupError` with a clear message.
    """
    from mlflow.exceptions import MlflowException

    client = mlflow_client(tracking_uri or default_tracking_uri())
    try:
        client.get_run(run_id)
    except MlflowException as exc:
        raise LookupError(f"run {run_id!r} not found in {client.tracking_uri}: {exc.message}") from None
    names = {Path(f.path).name for f in client.list_artifacts(run_id, "checkpoints")}
    if f"{which}.pt" not in names:
        raise LookupError(f"run {run_id!r} has no checkpoints/{which}.pt (it has: {sorted(names) or 'no checkpoints'})")
    from galaxy_da.checkpoint import load_checkpoint

    with tempfile.TemporaryDirectory(prefix="galaxy-da-run-") as tmp:
        return load_checkpoint(client.download_artifacts(run_id, f"checkpoints/{which}.pt", tmp))
