"""A sweep's durable state: the state file beside Ray's results, and the MLflow parent run.

The parent run id lives in ``<storage>/<name>/galaxy_da_sweep.json`` (local path
or any pyarrow URI), so ``--resume`` re-opens the same parent run.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from galaxy_da.config import TrialConfig, config_to_yaml
from galaxy_da.sweep.leaderboard import leaderboard, pick_key, plot_sweep_scores, sweep_picks, to_markdown, write_csv
from galaxy_da.sweep.schedulers import POPULATION_SCHEDULERS
from galaxy_da.sweep.settings import SweepSettings
from galaxy_da.sweep.ui_view import logged_metric_keys, save_sweep_view
from galaxy_da.tracking import default_tracking_uri, ensure_experiment

SWEEP_STATE_FILE = "galaxy_da_sweep.json"


def _state_fs(settings: SweepSettings):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(settings.experiment_path)


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


def known_sweeps(settings: SweepSettings) -> list[str]:
    """The names of the sweeps in ``settings``' storage (folders holding a sweep state file)."""
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(settings.storage_uri)
    try:
        folders = [info for info in fs.get_file_info(pyarrow.fs.FileSelector(root)) if info.type == pyarrow.fs.FileType.Directory]
    except (FileNotFoundError, OSError):
        return []
    return sorted(info.base_name for info in folders if fs.get_file_info(f"{info.path}/{SWEEP_STATE_FILE}").is_file)


def check_resumable(settings: SweepSettings, state: Optional[dict[str, Any]]) -> None:
    """``--resume`` of a name with no sweep is refused in one line that lists the sweeps there."""
    if state is None:
        known = ", ".join(known_sweeps(settings)) or "none"
        raise LookupError(f"--resume: no sweep named {settings.name!r} in {settings.storage_uri} (sweeps there: {known}); "
                          "pass the --name and --storage-path it was started with")


def mark_complete(settings: SweepSettings) -> None:
    """Every trial of the sweep ended: a later ``--resume`` says so instead of starting Ray."""
    write_sweep_state(settings, {**(read_sweep_state(settings) or {}), "complete": True})


def discard_smoke_sweep(settings: SweepSettings) -> Optional[str]:
    """Delete the Ray folder of the previous smoke sweep of this name, so the smoke test runs again as it is.

    Only a folder whose state file says it holds a smoke sweep is deleted; any
    other sweep of that name is left for :func:`~galaxy_da.sweep.tuner.run_sweep`
    to refuse. Its MLflow runs stay in the store; the old parent run is renamed
    ``<name> (replaced <UTC time>)`` and tagged ``replaced=true``, so the new
    parent run is the only one of its name. Returns the old parent run id.
    """
    state = read_sweep_state(settings)
    if state is None or not state.get("smoke"):
        return None
    mark_replaced(state)
    fs, root = _state_fs(settings)
    fs.delete_dir(root)
    return state["parent_run_id"]


def mark_replaced(state: dict[str, Any]) -> None:
    """Rename and tag a replaced smoke sweep's parent run in the store its state names (a run already gone is left)."""
    from datetime import datetime, timezone

    from mlflow.exceptions import MlflowException

    from galaxy_da.tracking import mlflow_client

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    client = mlflow_client(state.get("tracking_uri") or default_tracking_uri())
    try:
        name = client.get_run(state["parent_run_id"]).info.run_name
    except MlflowException:  # the store was emptied since: nothing to rename
        return
    client.update_run(state["parent_run_id"], name=f"{name} (replaced {when})")
    client.set_tag(state["parent_run_id"], "replaced", "true")
    client.set_tag(state["parent_run_id"], "replaced_at", when)


def open_parent_run(client, cfg: TrialConfig, settings: SweepSettings, store_uri: str, resume: bool, base_hash: str) -> str:
    """The sweep's parent run: the stored one on resume, else a new one with the space and settings."""
    state = read_sweep_state(settings)
    if resume and state is not None:
        client.update_run(state["parent_run_id"], status="RUNNING")
        return state["parent_run_id"]
    experiment_id = ensure_experiment(client, cfg.tracking.experiment, store_uri)
    run = client.create_run(experiment_id, run_name=settings.parent_run_name, tags={"sweep": settings.name, "run_kind": "sweep", "base_config_hash": cfg.hash()})
    parent_run_id = run.info.run_id
    for path, spec in settings.space.items():
        client.log_param(parent_run_id, f"space.{path}", json.dumps(spec)[:6000])
    for key in ("num_samples", "max_concurrent", "searcher", "seed", "grace_period", "reduction_factor", "max_failures", "cpus_per_trial"):
        client.log_param(parent_run_id, f"sweep.{key}", getattr(settings, key))
    client.log_param(parent_run_id, "sweep.metric", f"select/{cfg.selection.rule}")
    client.log_text(parent_run_id, json.dumps(settings.space, indent=1), "search_space.json")
    client.log_text(parent_run_id, json.dumps(asdict(settings), indent=1, default=str), "sweep_settings.json")
    client.log_text(parent_run_id, config_to_yaml(cfg), "base_config.yaml")
    save_sweep_view(client, experiment_id, settings.name, parent_run_id, cfg.selection.rule, settings.space)
    write_sweep_state(settings, {
        "parent_run_id": parent_run_id, "experiment": cfg.tracking.experiment, "tracking_uri": store_uri,
        "base_config_hash": base_hash, "smoke": settings.smoke,
    })
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
        for target, best in sweep_picks(rows).items():  # one pick, or one per target survey
            best_config = client.download_artifacts(best["run_id"], "config.yaml", tempfile.mkdtemp(dir=tmp))
            client.log_text(parent_run_id, Path(best_config).read_text(), f"best_config{'_' + target if target else ''}.yaml")
            client.set_tag(parent_run_id, pick_key("best_run_id", target), best["run_id"])
            client.log_metric(parent_run_id, pick_key("best/score", target), best["score"])
    if settings.scheduler in POPULATION_SCHEDULERS:
        from galaxy_da.sweep.leaderboard import child_runs
        from galaxy_da.sweep.lineage import log_population

        log_population(client, parent_run_id, child_runs(client, experiment_id, parent_run_id))
    client.log_metric(parent_run_id, "sweep/trials", len(rows))
    save_sweep_view(client, experiment_id, settings.name, parent_run_id, rule, settings.space, logged_metric_keys(client, parent_run_id, experiment_id))
    client.set_terminated(parent_run_id, "FINISHED")
    return rows


def close_orphaned_runs(client, grid, parent_run_id: str, ended: set[str]) -> list[str]:
    """Close the runs of trials that ended (``ended``: :mod:`galaxy_da.sweep.ended`) but not in MLflow's eyes; return their ids.

    A trial closes its own run. Only a driver killed between a scheduler's stop
    and the trial's clean-up (the trial's actor dies with the driver) can leave
    the run of an ended trial RUNNING or KILLED; after ``--resume`` the driver
    closes it from the trial's last checkpoint, tagged ``closed_by=driver``.
    A driver killed before Tune saved a just-started trial leaves a run whose
    trial Tune never recorded (the searcher suggests it again under a new id):
    that run is deleted (:func:`delete_forgotten_runs`).
    """
    from galaxy_da.sweep.trainable import RUN_ID_FILE
    from galaxy_da.sweep.tuner import trial_id_of_path

    closed = []
    for result in grid:
        if result.error is not None or result.checkpoint is None or trial_id_of_path(result.path) not in ended:
            continue  # an interrupted trial's run stays KILLED: --resume re-opens it
        with result.checkpoint.as_directory() as folder:
            run_id = json.loads((Path(folder) / RUN_ID_FILE).read_text())["run_id"]
            if client.get_run(run_id).info.status in ("RUNNING", "KILLED"):
                close_from_checkpoint(client, run_id, Path(folder))
                closed.append(run_id)
    return closed + delete_forgotten_runs(client, grid, parent_run_id) + delete_retired_runs(client, parent_run_id)


def close_from_checkpoint(client, run_id: str, folder: Path) -> None:
    """Close run ``run_id`` as its trial would have, from the trial's checkpoint in ``folder``, tagged ``closed_by=driver``
    (and ``stopped_by=scheduler`` when it ended before its last epoch). Imports torch: only a run left open needs it."""
    from galaxy_da.checkpoint import LAST, load_checkpoint
    from galaxy_da.tracking import RunTracker
    from galaxy_da.train import TrainResult
    from galaxy_da.trial import close_finished_run

    state = load_checkpoint(folder / LAST)
    epochs_done, epochs = state["epoch"] + 1, state["config"]["optim"]["epochs"]
    best = state["best"]
    outcome = TrainResult(state["history"], best["epoch"], best["score"], folder, manifest_hash=state["data_manifest_hash"])
    stop_tags = {"stopped_by": "scheduler", "stopped_after_epochs": str(epochs_done)} if epochs_done < epochs and not state.get("stopped_early") else {}
    close_finished_run(RunTracker(TrialConfig(), tracking_uri=client.tracking_uri, run_id=run_id), outcome, state["data_path"], {"closed_by": "driver", **stop_tags})


def delete_forgotten_runs(client, grid, parent_run_id: str) -> list[str]:
    """Delete the still-RUNNING child runs of trials that are not in ``grid``; return their ids.

    Called after a sweep whose trials all ended: a run of a trial Tune knows is
    closed by then, so a RUNNING one belongs to a trial lost with a killed driver
    before its first save. Deletion is MLflow's soft delete (``mlflow gc`` purges).
    """
    from galaxy_da.sweep.leaderboard import TRIAL_TAG
    from galaxy_da.sweep.tuner import trial_id_of_path

    known = {trial_id_of_path(result.path) for result in grid if result.path}
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    forgotten = [run for run in client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}' and attributes.status = 'RUNNING'")
                 if run.data.tags.get(TRIAL_TAG) not in known]
    for run in forgotten:
        client.set_tag(run.info.run_id, "closed_by", "driver: trial lost with a killed driver before Tune saved it")
        client.delete_run(run.info.run_id)
    return [run.info.run_id for run in forgotten]


def delete_retired_runs(client, parent_run_id: str) -> list[str]:
    """Delete the child runs that trials retired (restarted without a checkpoint, :func:`~galaxy_da.sweep.trainable.retire_stale_runs`); their ids.

    The driver does it: a trial's MLflow user has EDIT on the experiment, which does not delete runs.
    """
    from galaxy_da.sweep.leaderboard import RETIRED_TAG

    experiment_id = client.get_run(parent_run_id).info.experiment_id
    retired = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.{RETIRED_TAG} = 'true'", max_results=10000)
    for run in retired:
        client.delete_run(run.info.run_id)
    return [run.info.run_id for run in retired]
