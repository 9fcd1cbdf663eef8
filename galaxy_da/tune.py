"""Ray Tune glue: a base config plus a search space becomes a seeded, resumable sweep.

The launch layer: it imports Ray, and nothing in the core imports it.

- Trials: :func:`tune_trial` builds the trial's config with the sampled dotted
  overrides and calls the same :func:`galaxy_da.trial.run_trial` as
  ``galaxy-da train``; each epoch it reports the record and the trial's
  checkpoint folder (``last.pt``, ``best.pt``, ``mlflow_run.json``) to Tune.
  Data reaches trials as a shard path or URI, never through the object store.
- Search: Optuna's TPE (seeded) or Tune's random/grid generator
  (:data:`SEARCHERS`); ASHA prunes on ``epochs_done`` (``epoch + 1``, restored
  with the checkpoint), on the label-free metric ``select/<rule>``, maximised.
- Resources per trial by backbone (:data:`GPU_SHARE`): a quarter GPU for the
  small CNN, whole GPUs for ResNet-18 and steerable nets; CPUs otherwise.
- MLflow: one parent run per sweep (search space, settings, leaderboard,
  score plot, best config) and one nested child run per trial, logged through one
  tracking server (:mod:`galaxy_da.mlflow_server`). A restored trial re-attaches
  to its child run, so MLflow holds exactly one child run per trial.
- Resume: the parent run id lives in ``<experiment>/galaxy_da_sweep.json``;
  ``Tuner.restore`` brings back the searcher, the scheduler and every trial.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import ray
from ray import tune

from galaxy_da import search_space
from galaxy_da.config import ConfigError, TrialConfig, config_to_yaml
from galaxy_da.mlflow_server import tracking_server
from galaxy_da.search_space import Space
from galaxy_da.sweep_report import TRIAL_TAG, VARIED_TAG_PREFIX, leaderboard, plot_sweep_scores, to_markdown, write_csv
from galaxy_da.tracking import RunTracker, default_tracking_uri, ensure_experiment

RUN_ID_FILE = "mlflow_run.json"
SWEEP_STATE_FILE = "galaxy_da_sweep.json"
TIME_ATTR = "epochs_done"
RAY_CLUSTER_FILE = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"

# GPUs per trial when the cluster has GPUs; backbones not listed take one whole GPU.
GPU_SHARE: dict[str, float] = {"cnn": 0.25, "resnet18": 1.0, "steerable": 1.0}


@dataclass
class SweepSettings:
    """How a sweep runs: its search space, budget, pruning, resources and where things go."""

    name: str
    space: Space
    num_samples: int = 8
    max_concurrent: int = 2
    searcher: str = "optuna"
    seed: int = 0
    grace_period: int = 1
    reduction_factor: int = 2
    max_failures: int = 1
    cpus_per_trial: float = 1.0
    gpu_share: dict[str, float] = field(default_factory=lambda: dict(GPU_SHARE))
    use_gpu: Optional[bool] = None  # None: when the Ray cluster has GPUs
    storage_path: str = "ray_results"
    tracking_uri: Optional[str] = None  # None: the base config's, else the default store
    optuna_storage: Optional[str] = None  # e.g. sqlite:///ray_results/optuna.db, for a persistent study
    address: Optional[str] = None  # None: $RAY_ADDRESS, a live cluster on this node, else a fresh local one
    num_cpus: Optional[int] = None  # local Ray only

    @property
    def experiment_path(self) -> str:
        return f"{self.storage_path.rstrip('/')}/{self.name}"


@dataclass
class SweepResult:
    parent_run_id: str
    experiment_path: str
    complete: bool
    leaderboard: list[dict[str, Any]]
    tracking_uri: str


# --------------------------------------------------------------------------- trials


def resources_for(cfg: TrialConfig, settings: SweepSettings, has_gpu: bool) -> dict[str, float]:
    """Ray resources of one trial: a backbone's GPU share, or CPUs only."""
    resources = {"cpu": settings.cpus_per_trial}
    if has_gpu:
        resources["gpu"] = settings.gpu_share.get(cfg.model.backbone, 1.0)
    return resources


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


# --------------------------------------------------------------------------- search


def _optuna(settings: SweepSettings):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    storage = optuna.storages.RDBStorage(settings.optuna_storage) if settings.optuna_storage else None
    return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=settings.seed), storage=storage, study_name=settings.name if storage else None)


def _variants(settings: SweepSettings):
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=settings.seed)


SEARCHERS: dict[str, Callable[[SweepSettings], Any]] = {"optuna": _optuna, "random": _variants}


def build_searcher(settings: SweepSettings):
    if settings.searcher not in SEARCHERS:
        raise ConfigError(f"searcher {settings.searcher!r}: choose from {sorted(SEARCHERS)}")
    if settings.searcher == "optuna" and search_space.uses_grid(settings.space):
        raise ConfigError("search space: 'grid' entries need searcher='random' (Optuna samples; it does not enumerate grids)")
    return SEARCHERS[settings.searcher](settings)


def build_scheduler(settings: SweepSettings, epochs: int):
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr=TIME_ATTR, max_t=epochs, grace_period=settings.grace_period, reduction_factor=settings.reduction_factor)


# --------------------------------------------------------------------------- driver


def resolve_address(address: Optional[str]) -> str:
    """``address``, else ``$RAY_ADDRESS``, else ``auto`` if a Ray cluster answers on this node, else ``local``.

    A stale ``/tmp/ray/ray_current_cluster`` (Ray stopped) must not make us dial a dead cluster.
    """
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        return address
    try:
        host, port = RAY_CLUSTER_FILE.read_text().strip().rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=1):
            return "auto"
    except (OSError, ValueError):
        return "local"


def start_ray(settings: SweepSettings) -> None:
    address = resolve_address(settings.address)
    local = address == "local"
    ray.init(address=address, num_cpus=settings.num_cpus if local else None, include_dashboard=False, ignore_reinit_error=True)


def prepare_base(cfg: TrialConfig) -> dict[str, Any]:
    """The base config as plain data, with local paths made absolute (trials run in their own folders)."""
    tree = cfg.model_dump(mode="json")
    for section, key in (("data", "path"), ("model", "pretrained_path")):
        value = tree[section][key]
        if value and "://" not in value:
            tree[section][key] = str(Path(value).resolve())
    tree["tracking"]["tracking_uri"] = None  # trials log through the sweep's server ($MLFLOW_TRACKING_URI)
    return tree


def _state_fs(settings: SweepSettings):
    import pyarrow.fs

    path = settings.experiment_path if "://" in settings.experiment_path else str(Path(settings.experiment_path).resolve())
    return pyarrow.fs.FileSystem.from_uri(path)


def read_sweep_state(settings: SweepSettings) -> Optional[dict[str, Any]]:
    fs, root = _state_fs(settings)
    try:
        with fs.open_input_stream(f"{root}/{SWEEP_STATE_FILE}") as stream:
            return json.loads(stream.read())
    except (FileNotFoundError, OSError):
        return None


def write_sweep_state(settings: SweepSettings, state: dict[str, Any]) -> None:
    fs, root = _state_fs(settings)
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(f"{root}/{SWEEP_STATE_FILE}") as stream:
        stream.write(json.dumps(state, indent=1).encode())


def open_parent_run(client, cfg: TrialConfig, settings: SweepSettings, store_uri: str, resume: bool) -> str:
    """The sweep's parent run: the stored one on resume, else a new one with the space and settings."""
    state = read_sweep_state(settings)
    if resume and state is not None:
        client.update_run(state["parent_run_id"], status="RUNNING")
        return state["parent_run_id"]
    experiment_id = ensure_experiment(client, cfg.tracking.experiment, store_uri)
    run = client.create_run(experiment_id, run_name=f"sweep-{settings.name}", tags={"sweep": settings.name, "run_kind": "sweep", "base_config_hash": cfg.hash()})
    parent_run_id = run.info.run_id
    for path, spec in settings.space.items():
        client.log_param(parent_run_id, f"space.{path}", json.dumps(spec)[:6000])
    for key in ("num_samples", "max_concurrent", "searcher", "seed", "grace_period", "reduction_factor", "max_failures", "cpus_per_trial"):
        client.log_param(parent_run_id, f"sweep.{key}", getattr(settings, key))
    client.log_param(parent_run_id, "sweep.metric", f"select/{cfg.selection.rule}")
    client.log_text(parent_run_id, json.dumps(settings.space, indent=1), "search_space.json")
    client.log_text(parent_run_id, json.dumps(asdict(settings), indent=1, default=str), "sweep_settings.json")
    client.log_text(parent_run_id, config_to_yaml(cfg), "base_config.yaml")
    write_sweep_state(settings, {"parent_run_id": parent_run_id, "experiment": cfg.tracking.experiment, "tracking_uri": store_uri})
    return parent_run_id


def finish_parent_run(client, parent_run_id: str, cfg: TrialConfig, settings: SweepSettings) -> list[dict[str, Any]]:
    """Leaderboard (CSV + markdown), score plot and best config on the parent run."""
    from galaxy_da.plots import save

    experiment_id = client.get_run(parent_run_id).info.experiment_id
    rule = cfg.selection.rule
    rows = leaderboard(client, experiment_id, parent_run_id, list(settings.space))
    with tempfile.TemporaryDirectory() as tmp:
        client.log_artifact(parent_run_id, str(write_csv(rows, Path(tmp) / "leaderboard.csv")))
        client.log_text(parent_run_id, to_markdown(rows, rule), "leaderboard.md")
        figure = save(plot_sweep_scores(rows, rule, f"sweep {settings.name}: {rule} per trial"), Path(tmp) / "sweep_scores.png")
        client.log_artifact(parent_run_id, str(figure), "plots")
        scored = [row for row in rows if math.isfinite(row["score"])]
        if scored:
            best = scored[0]
            best_config = client.download_artifacts(best["run_id"], "config.yaml", tmp)
            client.log_text(parent_run_id, Path(best_config).read_text(), "best_config.yaml")
            client.set_tag(parent_run_id, "best_run_id", best["run_id"])
            client.log_metric(parent_run_id, "best/score", best["score"])
    client.log_metric(parent_run_id, "sweep/trials", len(rows))
    client.set_terminated(parent_run_id, "FINISHED")
    return rows


def expected_trials(settings: SweepSettings) -> int:
    """``num_samples`` times the number of grid points."""
    return settings.num_samples * math.prod(len(search_space.options(p, spec)) for p, spec in settings.space.items() if "grid" in spec)


def _complete(grid, settings: SweepSettings) -> bool:
    """Whether every trial ran and ended (finished, pruned or failed) rather than being interrupted."""
    return grid.num_terminated + grid.num_errors >= expected_trials(settings)


def build_tuner(cfg: TrialConfig, settings: SweepSettings, parent_run_id: str, tracking_uri: str, resume: bool) -> tune.Tuner:
    base = prepare_base(cfg)
    has_gpu = settings.use_gpu if settings.use_gpu is not None else ray.cluster_resources().get("GPU", 0) > 0
    trainable = tune.with_parameters(
        tune_trial, base=base, space=settings.space, parent_run_id=parent_run_id, tracking_uri=tracking_uri,
        threads=int(settings.cpus_per_trial),
    )
    trainable = tune.with_resources(
        trainable, lambda config: resources_for(search_space.trial_config(base, settings.space, config), settings, has_gpu),
    )
    if resume and tune.Tuner.can_restore(settings.experiment_path):
        return tune.Tuner.restore(settings.experiment_path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space=search_space.to_tune(settings.space),
        tune_config=tune.TuneConfig(
            metric=f"select/{cfg.selection.rule}", mode="max", search_alg=build_searcher(settings),
            scheduler=build_scheduler(settings, cfg.optim.epochs), num_samples=settings.num_samples,
            max_concurrent_trials=settings.max_concurrent,
            trial_name_creator=lambda trial: f"trial_{trial.trial_id}",
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=settings.name, storage_path=settings.storage_path if "://" in settings.storage_path else str(Path(settings.storage_path).resolve()),
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=[ChildRunCloser()],
        ),
    )


@contextlib.contextmanager
def _environment(**variables: str) -> Iterator[None]:
    previous = {key: os.environ.get(key) for key in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for key, value in previous.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


def run_sweep(cfg: TrialConfig, settings: SweepSettings, resume: bool = False) -> SweepResult:
    """Run (or resume) a sweep; the search space is checked against the config before Ray starts."""
    from mlflow.tracking import MlflowClient

    search_space.check_space(cfg.model_dump(mode="json"), settings.space)
    build_searcher(settings)  # fail on a bad searcher/space pairing before starting anything
    if not resume and read_sweep_state(settings) is not None:
        raise FileExistsError(f"{settings.experiment_path}: a sweep named {settings.name!r} exists; resume it (--resume) or pick another name")
    store_uri = settings.tracking_uri or cfg.tracking.tracking_uri or default_tracking_uri()
    with tracking_server(store_uri) as tracking_uri, _environment(MLFLOW_TRACKING_URI=tracking_uri):
        client = MlflowClient(tracking_uri)
        parent_run_id = open_parent_run(client, cfg, settings, store_uri, resume)
        start_ray(settings)
        try:
            grid = build_tuner(cfg, settings, parent_run_id, tracking_uri, resume).fit()
            complete = _complete(grid, settings)
            rows = finish_parent_run(client, parent_run_id, cfg, settings) if complete else []
            if not complete:
                client.set_terminated(parent_run_id, "KILLED")
        except BaseException:
            client.set_terminated(parent_run_id, "KILLED")
            raise
        finally:
            ray.shutdown()
    return SweepResult(parent_run_id, settings.experiment_path, complete, rows, store_uri)
