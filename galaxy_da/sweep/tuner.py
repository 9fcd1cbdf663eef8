"""Ray Tune glue: a base config plus a search space becomes a seeded, resumable sweep.

The launch layer: it imports Ray, and nothing in the core imports it.

- Trials: :class:`~galaxy_da.sweep.trainable.SweepTrial` trains the trial's
  config (the base plus the sampled dotted overrides) with the same
  :class:`~galaxy_da.trial.TrackedTrial` as ``galaxy-da train``, one scored epoch
  per Tune step, and closes its own MLflow run. Actors are reused between
  trials. Data reaches trials as a shard path or URI, never through the object store.
- Search: Optuna's TPE (seeded) or Tune's random/grid generator
  (:data:`SEARCHERS`); ASHA prunes on ``epochs_done`` (``epoch + 1``, restored
  with the checkpoint) on the label-free metric ``select/<rule>``, maximised,
  with its first rung after warm-up.
- Resources per trial by backbone (:data:`~galaxy_da.sweep.settings.GPU_SHARE`): a quarter GPU for the
  small CNN, whole GPUs for ResNet-18 and steerable nets; CPUs otherwise.
  Whether to ask for GPUs follows the node types the autoscaler can add
  (:mod:`galaxy_da.sweep.gpus`), so a cluster whose GPU workers start at zero
  scales them up. A trial with ``resources.workers_per_trial > 1`` trains on
  that many Ray Train workers (:mod:`galaxy_da.sweep.ddp`); on GPUs at most
  ``floor(GPUs / W)`` such trials run at once (:mod:`galaxy_da.sweep.capacity`).
- MLflow: one parent run per sweep (search space, settings, leaderboard,
  score plot, best config) and one nested child run per trial, logged through one
  tracking server (:mod:`galaxy_da.sweep.tracking_server`). A restored trial re-attaches
  to its child run, so MLflow holds exactly one child run per trial. Trials log as
  a user with EDIT on the sweep's experiment, never as the admin (:mod:`galaxy_da.sweep.trial_user`).
- Resume: the parent run id and the base config's hash live in
  ``<experiment>/galaxy_da_sweep.json``; ``Tuner.restore`` brings back the
  searcher and every trial, not the scheduler's state (Ray does not save it:
  ASHA's rungs and PBT's quantiles start afresh after a resume); a different
  base config is refused. Completeness comes from the recorded trial endings
  (:mod:`galaxy_da.sweep.ended`), not from Tune's trial states.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import ray
from ray import tune

from galaxy_da.config import ConfigError, TrialConfig, validate
from galaxy_da.data.manifest import unknown_target
from galaxy_da.data.reader import ShardDataset
from galaxy_da.data.schema import ORACLE_KIND, trains_on_target_labels
from galaxy_da.sweep import space as search_space
from galaxy_da.sweep.capacity import fit_concurrency
from galaxy_da.sweep.console import QUIET_ENV, TrialProgress
from galaxy_da.sweep.ended import RecordEndings, ended_trials
from galaxy_da.sweep.gpus import decide_use_gpu
from galaxy_da.sweep.hosts import cluster_hosts
from galaxy_da.sweep.ray_start import init_local_ray
from galaxy_da.sweep.reach import check_reach
from galaxy_da.sweep.settings import SweepResult, SweepSettings, resources_for
from galaxy_da.sweep.state import (
    check_resumable, close_orphaned_runs, finish_parent_run, mark_complete, open_parent_run, read_sweep_state,
)
from galaxy_da.sweep.schedulers import POPULATION_SCHEDULERS, build_scheduler, check_scheduler
from galaxy_da.sweep.tracking_server import tracking_server
from galaxy_da.sweep.trainable import SweepTrial
from galaxy_da.sweep.trial_user import trial_credentials
from galaxy_da.tracking import default_tracking_uri

# --------------------------------------------------------------------------- search


def _optuna(settings: SweepSettings):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory"
    storage = optuna.storages.RDBStorage(settings.optuna_storage) if settings.optuna_storage else None
    return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=settings.seed), storage=storage, study_name=settings.name if storage else None)


def _variants(settings: SweepSettings):
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=settings.seed, max_concurrent=settings.max_concurrent)  # Tune ignores max_concurrent_trials for it


SEARCHERS: dict[str, Callable[[SweepSettings], Any]] = {"optuna": _optuna, "random": _variants}


def build_searcher(settings: SweepSettings):
    if settings.searcher not in SEARCHERS:
        raise ConfigError(f"searcher {settings.searcher!r}: choose from {sorted(SEARCHERS)}")
    if settings.searcher == "optuna" and search_space.uses_grid(settings.space):
        raise ConfigError("search space: 'grid' entries need searcher='random' (Optuna samples; it does not enumerate grids)")
    return SEARCHERS[settings.searcher](settings)


def seed_population_randomness(settings: SweepSettings) -> None:
    """Seed the driver's global generators from ``settings.seed`` for a PBT/PB2 sweep.

    Ray's PBT explores and exploits with the stdlib ``random`` module and PB2 with numpy's global generator; neither
    takes a seed. Seeded here, a population sweep's perturbations repeat for its seed, given the same order of
    trial results (with one trial at a time, the same sweep).
    """
    if settings.scheduler in POPULATION_SCHEDULERS:
        import random

        import numpy as np

        random.seed(settings.seed)
        np.random.seed(settings.seed)


# --------------------------------------------------------------------------- driver


def resolve_address(address: Optional[str]) -> str:
    """``address``, else ``$RAY_ADDRESS``, else ``local``: a fresh Ray instance for this sweep alone.

    A running cluster is joined only when asked (``--address auto``, or
    ``RAY_ADDRESS``, which the cluster YAMLs and the SLURM launcher set): on a
    shared host, "the cluster on this node" may be somebody else's, or a dead
    one that ``/tmp/ray/ray_current_cluster`` still names.
    """
    return address or os.environ.get("RAY_ADDRESS") or "local"


def start_ray(settings: SweepSettings) -> bool:
    """Start or join Ray; whether it joined a running cluster (not a fresh local instance, whose start is retried
    when its raylet misses Ray's start-up window: :func:`init_local_ray`)."""
    address = resolve_address(settings.address)
    local = address == "local"
    # Ray's default token auth announces itself on every local start: not news, and not a trial event
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    options = dict(
        include_dashboard=False, ignore_reinit_error=True,
        log_to_driver=False, logging_level=logging.WARNING,  # the console shows TrialProgress lines, not worker logs
    )
    if local:
        init_local_ray(num_cpus=settings.num_cpus, **options)
    else:
        ray.init(address=address, **options)
    return not local


def base_hash(base: dict[str, Any]) -> str:
    """The hash of a prepared base config (absolute paths; the tracking section left out)."""
    return validate(base, "base config").hash()


def prepare_base(cfg: TrialConfig) -> dict[str, Any]:
    """The base config as plain data, with local paths made absolute (trials run in their own folders)."""
    tree = cfg.model_dump(mode="json")
    for section, key in (("data", "path"), ("model", "pretrained_path")):
        value = tree[section][key]
        if value and "://" not in value:
            tree[section][key] = str(Path(value).resolve())
    tree["tracking"]["tracking_uri"] = None  # trials log through the sweep's server ($MLFLOW_TRACKING_URI)
    return tree


def expected_trials(settings: SweepSettings) -> int:
    """``num_samples`` times the number of grid points."""
    return settings.num_samples * math.prod(len(search_space.options(p, spec)) for p, spec in settings.space.items() if "grid" in spec)


def trial_ids(grid) -> set[str]:
    """The ids of every trial Tune knows, from their folders."""
    return {trial_id_of_path(result.path) for result in grid if result.path}


def _complete(grid, ended: set[str], settings: SweepSettings) -> bool:
    """Whether every trial asked for ran to its end (finished, pruned or failed), from the recorded endings.

    Not from Tune's trial states: an interrupted sweep's live trials read TERMINATED after ``fit``
    (:mod:`galaxy_da.sweep.ended`).
    """
    known = trial_ids(grid)
    return len(known) >= expected_trials(settings) and known <= ended


def trial_dirname(trial) -> str:
    """``trial_<id>``: the trial's folder under the sweep's storage path (:func:`trial_id_of_path` reads it back)."""
    return f"trial_{trial.trial_id}"


def trial_id_of_path(path: str) -> str:
    return Path(path).name.removeprefix("trial_")


NO_DEFAULT_LOGGERS = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}  # Tune's loggers are :func:`result_loggers`


def result_loggers() -> list[tune.Callback]:
    """Tune's result files: JSON and CSV, which its ExperimentAnalysis reads. Not TensorBoard's, which Tune adds by
    default: trials log to MLflow, and that logger imports torch into the driver (1.5 s a sweep) and keeps a writer per trial."""
    return [tune.logger.JsonLoggerCallback(), tune.logger.CSVLoggerCallback()]


def build_tuner(cfg: TrialConfig, settings: SweepSettings, parent_run_id: str, tracking_uri: str, resume: bool, has_gpu: bool,
                credentials: dict[str, str]) -> tune.Tuner:
    """``credentials``: the MLflow user the trials log as (:mod:`galaxy_da.sweep.trial_user`)."""
    base = prepare_base(cfg)
    trainable = tune.with_parameters(
        SweepTrial, base=base, space=settings.space, parent_run_id=parent_run_id, tracking_uri=tracking_uri,
        experiment_path=settings.experiment_path, threads=settings.cpus_per_trial, use_gpu=has_gpu, credentials=credentials,
        population=settings.scheduler in POPULATION_SCHEDULERS,
    )
    trainable = tune.with_resources(
        trainable, lambda config: resources_for(search_space.trial_config(base, settings.space, config), settings, has_gpu),
    )
    metric = f"select/{cfg.selection.rule}"
    seed_population_randomness(settings)
    if resume and tune.Tuner.can_restore(settings.experiment_path):
        return tune.Tuner.restore(settings.experiment_path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space=search_space.to_tune(settings.space),
        tune_config=tune.TuneConfig(
            metric=metric, mode="max", search_alg=build_searcher(settings),
            scheduler=build_scheduler(base, settings), num_samples=settings.num_samples,
            max_concurrent_trials=settings.max_concurrent, reuse_actors=True,
            trial_name_creator=lambda trial: f"trial_{trial.trial_id}",
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=settings.name, storage_path=settings.storage_uri,
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            # a population keeps every checkpoint: members copy each other's, and the lineage plot reads them
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None if settings.scheduler in POPULATION_SCHEDULERS else 2, checkpoint_frequency=1),
            callbacks=[TrialProgress(settings.space, metric, cfg.optim.epochs, expected_trials(settings), settings.experiment_path, base),
                       RecordEndings(settings.experiment_path), *result_loggers()],
            verbose=0,  # no trial tables: TrialProgress prints one line per trial event
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


def check_datasets(base: dict[str, Any], space: search_space.Space, verify: bool) -> None:
    """Before anything starts, in one line: a missing, unfinished or corrupted dataset, one without a target survey
    some trial reads (the base's ``data.target`` or a value the space gives it), or an oracle copy whose source
    labels are a target survey's (a sweep would rank that upper bound among its candidates)."""
    targets = search_space.values_of(base, space, "data.target")
    for path in search_space.values_of(base, space, "data.path"):
        dataset = ShardDataset(path, verify=verify)
        if trains_on_target_labels(dataset.manifest):
            raise ConfigError(f"data.path {dataset.uri}: a target-as-source copy (manifest provenance kind {ORACLE_KIND!r}) trains "
                              "on target labels; it is an upper bound for analysis, never a sweep's candidate: train it with galaxy-da train")
        for target in targets:
            if target not in dataset.targets:
                raise unknown_target(dataset.uri, dataset.manifest, target)


def run_sweep(cfg: TrialConfig, settings: SweepSettings, resume: bool = False) -> SweepResult:
    """Run (or resume) a sweep; the search space is checked before Ray starts, the store's reach right after."""
    base = prepare_base(cfg)
    search_space.check_space(base, settings.space)
    build_searcher(settings)  # fail on a bad searcher/space pairing, or a grace period inside warm-up, before starting anything
    check_scheduler(base, settings)
    check_datasets(base, settings.space, cfg.data.verify_hashes)
    state = read_sweep_state(settings)
    if not resume and state is not None:
        raise FileExistsError(f"{settings.experiment_path}: a sweep named {settings.name!r} exists; resume it (--resume) or pick another name")
    if resume:
        check_resumable(settings, state)
    if resume and state is not None and state.get("base_config_hash") not in (None, base_hash(base)):
        raise ConfigError(
            f"--resume: the base config hashes to {base_hash(base)} but sweep {settings.name!r} was started from "
            f"{state['base_config_hash']}; resume with the same config, data path and overrides, or start a new --name"
        )
    store_uri = settings.tracking_uri or cfg.tracking.tracking_uri or default_tracking_uri()
    if resume and state.get("complete"):
        return _already_complete(settings, state, store_uri)
    with _environment(**QUIET_ENV, **NO_DEFAULT_LOGGERS):
        return _run(cfg, settings, resume, base, store_uri)


def _already_complete(settings: SweepSettings, state: dict[str, Any], store_uri: str) -> SweepResult:
    """``--resume`` of a sweep whose every trial ended: say so, and give its leaderboard (from ``store_uri``) without starting Ray."""
    from mlflow.tracking import MlflowClient

    from galaxy_da.sweep.leaderboard import leaderboard

    client = MlflowClient(store_uri)
    parent = client.get_run(state["parent_run_id"])
    rows = leaderboard(client, parent.info.experiment_id, state["parent_run_id"], list(settings.space))
    print(f"sweep {settings.name!r} is complete: every one of its {len(rows)} trials ended, nothing to resume "
          f"(parent run {state['parent_run_id']}).", flush=True)
    return SweepResult(state["parent_run_id"], settings.experiment_path, True, rows, store_uri)


@contextlib.contextmanager
def sweep_services(settings: SweepSettings, base: dict[str, Any], store_uri: str) -> Iterator[tuple[SweepSettings, tuple[bool, str], str]]:
    """Ray started or joined, the checks passed and the tracking server up, for the body of the ``with``; Ray shut down after.

    Yields ``(settings, (use GPUs, why), tracking URI)``, with ``max_concurrent`` fitted to W-GPU trials. The checks:
    every host reaches the store, data and storage (:func:`~galaxy_da.sweep.reach.check_reach`), and one W-GPU trial
    fits (:func:`~galaxy_da.sweep.capacity.fit_concurrency`). A fresh local Ray without an autoscaler config is one
    host, which the reach checks never refuse, so there the server starts while Ray does (seconds off every sweep on a
    laptop); elsewhere it starts only once the checks have passed, and a refused sweep leaves no store behind.
    """
    checked: dict[str, Any] = {}

    def start_and_check() -> None:
        joined = start_ray(settings)
        check_reach(store_uri, base["data"]["path"], settings.storage_uri, cluster_hosts(settings.autoscaler_config, joined))
        checked["gpu"] = decide_use_gpu(settings.use_gpu, settings.autoscaler_config)
        checked["settings"] = fit_concurrency(base, settings, checked["gpu"][0])  # W-GPU trials: at most floor(GPUs / W) at once

    one_host = resolve_address(settings.address) == "local" and not settings.autoscaler_config
    try:
        if not one_host:
            start_and_check()
        with tracking_server(store_uri, meanwhile=start_and_check if one_host else lambda: None) as tracking_uri:
            yield checked["settings"], checked["gpu"], tracking_uri
    finally:
        ray.shutdown()


def _run(cfg: TrialConfig, settings: SweepSettings, resume: bool, base: dict[str, Any], store_uri: str) -> SweepResult:
    """Run the tuner with Ray, the checks and the sweep's tracking server in place (:func:`sweep_services`)."""
    from mlflow.tracking import MlflowClient

    with sweep_services(settings, base, store_uri) as (settings, (has_gpu, why), tracking_uri), _environment(MLFLOW_TRACKING_URI=tracking_uri):
        client = MlflowClient(tracking_uri)
        parent_run_id = open_parent_run(client, cfg, settings, store_uri, resume, base_hash(base))
        try:
            client.set_tag(parent_run_id, "use_gpu", f"{has_gpu} ({why})")
            credentials = trial_credentials(tracking_uri, client.get_run(parent_run_id).info.experiment_id, settings.name)
            grid = build_tuner(cfg, settings, parent_run_id, tracking_uri, resume, has_gpu, credentials).fit()
            ended = set(ended_trials(settings.experiment_path))
            close_orphaned_runs(client, grid, parent_run_id, ended)
            complete = _complete(grid, ended, settings)
            rows = finish_parent_run(client, parent_run_id, cfg, settings) if complete else []
            if complete:
                mark_complete(settings)
            else:
                client.set_terminated(parent_run_id, "KILLED")
        except BaseException:
            client.set_terminated(parent_run_id, "KILLED")
            raise
    return SweepResult(parent_run_id, settings.experiment_path, complete, rows, store_uri)
