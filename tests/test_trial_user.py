"""Trials log as a non-admin MLflow user with EDIT on the sweep's experiment: a real server behind MLflow's basic-auth app."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from galaxy_da.sweep.trial_user import PASSWORD_VARIABLE as PASSWORD, USER_VARIABLE as USERNAME, trial_credentials, trial_username

ADMIN = "galaxy-da-admin"
AUTH_INI = """\
[mlflow]
default_permission = READ
database_uri = sqlite:///{db}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
grant_default_workspace_access = false
"""


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """``(uri, admin password)`` of a real ``mlflow server --app-name basic-auth`` on a sqlite store."""
    from galaxy_da.sweep.tracking_server import _die_with_parent, free_port, stop_group, wait_healthy

    root = tmp_path_factory.mktemp("auth")
    (root / "auth.ini").write_text(AUTH_INI.format(db=root / "users.db"))
    password, port = secrets.token_hex(16), free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    env = os.environ | {"MLFLOW_AUTH_CONFIG_PATH": str(root / "auth.ini"), "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN,
                        "MLFLOW_AUTH_ADMIN_PASSWORD": password, "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
                        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    process = subprocess.Popen([str(mlflow), "server", "--app-name", "basic-auth", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                                "--default-artifact-root", (root / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port),
                                "--workers", "1"], env=env, stdout=open(root / "server.log", "wb"), stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, timeout=120)
        yield f"http://127.0.0.1:{port}", password
    finally:
        stop_group(process)


def as_user(monkeypatch, username: str, password: str):
    """MLflow's clients read their credentials from the environment at each request."""
    monkeypatch.setenv(USERNAME, username)
    monkeypatch.setenv(PASSWORD, password)


@pytest.mark.slow
def test_the_trial_user_logs_to_its_sweeps_experiment_and_can_delete_or_write_nothing_else(auth_server, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri, admin_password = auth_server
    as_user(monkeypatch, ADMIN, admin_password)
    admin = MlflowClient(uri)
    sweep_experiment, other_experiment = admin.create_experiment("sweep-exp"), admin.create_experiment("other-exp")
    others_run = admin.create_run(other_experiment).info.run_id

    credentials = trial_credentials(uri, sweep_experiment, "topk")
    assert credentials[USERNAME] == trial_username(sweep_experiment, "topk") != ADMIN
    assert credentials[PASSWORD] != admin_password and admin_password not in credentials.values()
    assert trial_credentials(uri, sweep_experiment, "topk")[PASSWORD] != credentials[PASSWORD]  # --resume: the same user, a fresh key

    credentials = trial_credentials(uri, sweep_experiment, "topk")
    as_user(monkeypatch, credentials[USERNAME], credentials[PASSWORD])
    trial = MlflowClient(uri)
    run = trial.create_run(sweep_experiment).info.run_id
    trial.log_metric(run, "train/loss", 0.5, step=0)
    trial.set_terminated(run, "FINISHED")
    assert [p.value for p in admin.get_metric_history(run, "train/loss")] == [0.5]
    refused = [lambda: trial.create_run(other_experiment), lambda: trial.log_metric(others_run, "train/loss", 1.0),
               lambda: trial.delete_run(run), lambda: trial.delete_experiment(sweep_experiment),
               lambda: trial.delete_experiment(other_experiment)]
    for attempt in refused:
        with pytest.raises(MlflowException, match="PERMISSION_DENIED|Permission denied"):
            attempt()


@pytest.mark.slow
def test_a_trial_retires_a_stale_run_it_may_not_delete_and_the_driver_deletes_it(auth_server, monkeypatch):
    from mlflow.tracking import MlflowClient

    from galaxy_da.sweep.leaderboard import TRIAL_TAG, child_runs
    from galaxy_da.sweep.state import delete_retired_runs
    from galaxy_da.sweep.trainable import retire_stale_runs, trial_runs

    uri, admin_password = auth_server
    as_user(monkeypatch, ADMIN, admin_password)
    admin = MlflowClient(uri)
    experiment = admin.create_experiment("retire-exp")
    parent = admin.create_run(experiment).info.run_id
    credentials = trial_credentials(uri, experiment, "retire")
    as_user(monkeypatch, credentials[USERNAME], credentials[PASSWORD])
    trial = MlflowClient(uri)
    stale = trial.create_run(experiment, tags={TRIAL_TAG: "t1", "mlflow.parentRunId": parent}).info.run_id
    retire_stale_runs(uri, "retire-exp", parent, "t1")  # the old code's delete_run is refused to this user
    assert trial_runs(uri, "retire-exp", parent, "t1") == [] and trial.get_run(stale).info.status == "KILLED"
    assert child_runs(trial, experiment, parent) == []
    as_user(monkeypatch, ADMIN, admin_password)  # the driver
    assert delete_retired_runs(admin, parent) == [stale] and admin.get_run(stale).info.lifecycle_stage == "deleted"


def test_a_trials_environment_holds_the_trial_user_and_no_admin_password(monkeypatch, tmp_path):
    import ray
    from ray import tune

    from galaxy_da.config import load_config
    from galaxy_da.sweep.trainable import SweepTrial
    from galaxy_da.sweep.ray_start import init_local_ray
    from galaxy_da.sweep.tuner import prepare_base

    admin_password = secrets.token_hex(16)
    monkeypatch.setenv(USERNAME, ADMIN)  # what the node (or a local Ray started by the driver) hands its processes
    monkeypatch.setenv(PASSWORD, admin_password)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://unused")
    credentials = {USERNAME: "galaxy-da-trials-1-topk", PASSWORD: secrets.token_hex(16)}
    init_local_ray(num_cpus=1, include_dashboard=False)
    try:
        trainable = tune.with_parameters(
            SweepTrial, base=prepare_base(load_config(None, {})), space={"optim.lr": {"loguniform": [1e-4, 1e-2]}},
            parent_run_id="p", tracking_uri="http://10.0.0.1:5000", experiment_path=str(tmp_path), threads=1, use_gpu=False,
            credentials=credentials,
        )
        trial = trainable(config={"optim.lr": 1e-3})  # setup runs here, in this process
        try:
            assert {key: os.environ[key] for key in (USERNAME, PASSWORD)} == credentials
            assert os.environ["MLFLOW_TRACKING_URI"] == "http://10.0.0.1:5000"
            assert admin_password not in os.environ.values()
        finally:
            trial.stop()
    finally:
        ray.shutdown()
