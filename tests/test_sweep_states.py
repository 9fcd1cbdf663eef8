"""Sweeps judge alignment fairly and leave every trial's MLflow run in a state that says what happened."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from galaxy_da.config import ConfigError, load_config
from galaxy_da.sweep.settings import SweepSettings

ROOT = Path(__file__).resolve().parents[1]
TINY = {"model.width": 4, "data.batch_size": 16, "optim.steps_per_epoch": 2, "align.method": "laplacian", "data.eval_batch_size": 64}


def tiny_config(data: Path, experiment: str, **extra):
    return load_config(None, {**TINY, "data.path": str(data), "tracking.experiment": experiment, **extra})


def test_a_grace_period_inside_warmup_is_refused_naming_both_numbers(toy_dataset, tmp_path):
    from galaxy_da.sweep.tuner import run_sweep

    cfg = tiny_config(toy_dataset, "grace", **{"optim.epochs": 6, "optim.warmup_epochs": 2})
    settings = SweepSettings(name="grace", space={"optim.lr": {"loguniform": [1e-4, 1e-2]}}, grace_period=2,
                             storage_path=str(tmp_path / "ray"), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(ConfigError, match=r"grace period 2 would prune inside warm-up: trials warm up for 2 epoch\(s\).*--grace-period 3"):
        run_sweep(cfg, settings)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray").exists()  # refused before anything started


def test_the_default_first_rung_follows_the_longest_warmup_in_the_space(toy_dataset):
    from galaxy_da.sweep.schedulers import grace_period
    from galaxy_da.sweep.tuner import prepare_base

    base = prepare_base(tiny_config(toy_dataset, "grace", **{"optim.epochs": 8, "optim.warmup_epochs": 1}))
    assert grace_period(base, SweepSettings(name="g", space={"optim.lr": {"choice": [1e-3]}})) == 2
    assert grace_period(base, SweepSettings(name="g", space={"optim.warmup_epochs": {"choice": [1, 3]}})) == 4


def test_resume_with_a_different_base_config_is_refused_naming_both_hashes(toy_dataset, tmp_path):
    from galaxy_da.sweep.state import write_sweep_state
    from galaxy_da.sweep.tuner import base_hash, prepare_base, run_sweep

    cfg = tiny_config(toy_dataset, "hash", **{"optim.epochs": 3})
    settings = SweepSettings(name="hash", space={"optim.lr": {"loguniform": [1e-4, 1e-2]}},
                             storage_path=str(tmp_path / "ray"), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    write_sweep_state(settings, {"parent_run_id": "0" * 32, "base_config_hash": "0123456789abcdef"})
    changed = tiny_config(toy_dataset, "hash", **{"optim.epochs": 4})
    with pytest.raises(ConfigError, match=f"hashes to {base_hash(prepare_base(changed))} but sweep 'hash' was started from 0123456789abcdef"):
        run_sweep(changed, settings, resume=True)
    assert base_hash(prepare_base(cfg)) != base_hash(prepare_base(changed))
    assert not (tmp_path / "mlflow.db").exists()  # refused before the tracking server started


# --------------------------------------------------------------------------- a real pruned sweep


def child_runs(client, parent_run_id: str) -> list:
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'")


@pytest.fixture(scope="module")
def pruned_sweep(toy_dataset, tmp_path_factory):
    """Optuna + ASHA over a wide learning-rate range: 2 warm-up epochs of 5, so the first rung is at epoch 3.

    One trial at a time: which trial reaches a rung first decides whether ASHA stops one, and with two at once
    that order is the machine's; seeded and one at a time, the sweep is the same on every run."""
    from galaxy_da.sweep.tuner import run_sweep

    tmp = tmp_path_factory.mktemp("pruned")
    cfg = tiny_config(toy_dataset, "pruned", **{"optim.epochs": 5, "optim.warmup_epochs": 2})
    settings = SweepSettings(
        name="pruned", space={"optim.lr": {"loguniform": [2e-5, 3e-2]}}, num_samples=6, max_concurrent=1, num_cpus=2,
        storage_path=str(tmp / "ray"), tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}",
    )
    result = run_sweep(cfg, settings)
    assert result.complete
    return result, tmp


@pytest.mark.slow
def test_no_trial_is_stopped_before_its_first_post_warmup_epoch(pruned_sweep):
    from mlflow.tracking import MlflowClient

    result, tmp = pruned_sweep
    client = MlflowClient(result.tracking_uri)
    runs = child_runs(client, result.parent_run_id)
    assert len(runs) == 6
    stopped = [run for run in runs if "stopped_by" in run.data.tags]
    assert stopped, "ASHA stopped no trial: the test could not see an early stop"
    for run in runs:
        scored_epochs = [m.step for m in client.get_metric_history(run.info.run_id, "select/src_val")]
        assert scored_epochs and min(scored_epochs) == 2  # the first post-warm-up epoch; never a warm-up epoch
    for run in stopped:
        assert int(run.data.tags["stopped_after_epochs"]) >= 3  # warm-up (2) + one epoch of alignment


@pytest.mark.slow
def test_a_trial_the_scheduler_stops_closes_its_own_run_finished_with_its_artifacts(pruned_sweep):
    from mlflow.tracking import MlflowClient

    result, _ = pruned_sweep
    client = MlflowClient(result.tracking_uri)
    stopped = [run for run in child_runs(client, result.parent_run_id) if "stopped_by" in run.data.tags]
    assert stopped
    for run in stopped:
        assert run.info.status == "FINISHED"
        assert run.data.tags["stopped_by"] == "asha" and run.data.tags["closed_by"] == "trial"
        files = {f.path for folder in ("", "checkpoints", "plots") for f in client.list_artifacts(run.info.run_id, folder or None)}
        assert {"checkpoints/best.pt", "checkpoints/last.pt", "plots/training_history.png", "history.json"} <= files
        assert "best/score" in run.data.metrics


@pytest.mark.slow
def test_a_run_whose_trial_tune_never_saved_is_deleted_and_the_others_are_left_alone(pruned_sweep):
    """A driver killed right after a trial started, before Tune saved it, leaves a RUNNING run no trial will close."""
    from mlflow.tracking import MlflowClient
    from ray import tune

    from galaxy_da.sweep.leaderboard import TRIAL_TAG
    from galaxy_da.sweep.state import close_orphaned_runs
    from galaxy_da.sweep.trainable import SweepTrial

    result, _ = pruned_sweep
    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    lost = client.create_run(parent.info.experiment_id, tags={"mlflow.parentRunId": result.parent_run_id, TRIAL_TAG: "lost0001"})
    grid = tune.Tuner.restore(result.experiment_path, trainable=SweepTrial).get_results()  # the sweep's real results
    before = {run.info.run_id: run.info.status for run in child_runs(client, result.parent_run_id) if run.info.run_id != lost.info.run_id}

    from galaxy_da.sweep.ended import ended_trials

    assert close_orphaned_runs(client, grid, result.parent_run_id, set(ended_trials(result.experiment_path))) == [lost.info.run_id]
    assert client.get_run(lost.info.run_id).info.lifecycle_stage == "deleted"
    assert {run.info.run_id: run.info.status for run in child_runs(client, result.parent_run_id)} == before


@pytest.mark.slow
def test_a_crashing_trial_stays_failed_with_its_error(toy_dataset, tmp_path):
    """An exploding learning rate gives a non-finite loss mid-training: FAILED, with the error, after the retry."""
    from mlflow.tracking import MlflowClient

    from galaxy_da.sweep.tuner import run_sweep

    cfg = tiny_config(toy_dataset, "crash", **{"optim.epochs": 2, "optim.warmup_epochs": 0, "optim.grad_clip": None})
    settings = SweepSettings(
        name="crash", space={"optim.lr": {"grid": [1e-3, 1e12]}}, searcher="random", num_samples=1, max_concurrent=2,
        num_cpus=2, max_failures=1, storage_path=str(tmp_path / "ray"), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    result = run_sweep(cfg, settings)
    client = MlflowClient(result.tracking_uri)
    runs = {run.data.tags["sweep.optim.lr"]: run for run in child_runs(client, result.parent_run_id)}
    assert set(runs) == {"0.001", "1e+12"}  # one run per trial, the retry included
    assert runs["0.001"].info.status == "FINISHED"
    failed = runs["1e+12"]
    assert failed.info.status == "FAILED" and "NonFiniteLossError" in failed.data.tags["error"]
    assert "error.txt" in {f.path for f in client.list_artifacts(failed.info.run_id)}


def statuses(db: Path) -> dict[str, str]:
    """{run id: status} of the live child runs (read straight from the sqlite store)."""
    if not db.is_file():
        return {}
    query = ("SELECT r.run_uuid, r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
             "WHERE t.key = 'mlflow.parentRunId' AND r.lifecycle_stage = 'active'")
    try:
        with sqlite3.connect(db, timeout=5) as connection:
            return dict(connection.execute(query).fetchall())
    except sqlite3.OperationalError:  # the schema is still being created
        return {}


def session_processes(session: int) -> list[str]:
    """The live processes of session ``session`` (a driver started with ``start_new_session`` and the Ray it started)."""
    import psutil

    alive = []
    for process in psutil.process_iter(["name", "status"]):
        try:
            if os.getsid(process.pid) == session and process.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(f"{process.pid} {process.info['name']}")
        except (ProcessLookupError, PermissionError):
            pass
    return alive


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_after_a_hard_killed_driver_and_resume_no_trial_is_failed_or_running(toy_dataset, tmp_path):
    db = tmp_path / "mlflow" / "mlflow.db"
    command = [
        sys.executable, str(ROOT / "sweeps" / "topk.py"), "--smoke-test", "--data", str(toy_dataset), "--name", "killed",
        "--tracking-uri", f"sqlite:///{db}", "--storage-path", str(tmp_path / "ray"), "--max-concurrent", "2",
        "--num-cpus", "2", "--num-samples", "3", "optim.epochs=3", "optim.steps_per_epoch=2",
    ]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while "FINISHED" not in statuses(db).values():
        assert driver.poll() is None and time.monotonic() < deadline, "the sweep ended before any trial finished"
        time.sleep(0.5)
    os.kill(driver.pid, signal.SIGKILL)  # no clean-up of any kind in the driver
    driver.wait(timeout=60)
    killed_at = time.monotonic()
    wait_until_gone(driver.pid, killed_at, but=RAY_AGENTS)  # the trials, the raylet, the GCS: what a resume competes with

    resumed = subprocess.run(command + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["complete"] and summary["trials"] == 3
    after = statuses(db)
    assert len(after) == 3 and set(after.values()) == {"FINISHED"}, after
    wait_until_gone(driver.pid, killed_at)


# Ray's two node agents outlive a killed raylet by about 60 s: before exiting they report its death to the GCS, which
# died with it, and that report waits out a fixed 60 s time-out (ray/_private/process_watcher.py, publish_error_to_driver).
RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def wait_until_gone(session: int, killed_at: float, but: tuple[str, ...] = (), within_s: float = 120) -> None:
    """Wait until no process of ``session`` (but those named in ``but``) is alive; fail ``within_s`` after ``killed_at``."""
    while left := [process for process in session_processes(session) if process.split(" ", 1)[1] not in but]:
        assert time.monotonic() < killed_at + within_s, f"Ray's processes outlived their killed driver by {within_s:.0f} s: {left}"
        time.sleep(0.2)
