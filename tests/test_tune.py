"""The sweep layer: search spaces, resources, the MLflow server, and real local Ray sweeps."""

from __future__ import annotations

import contextlib
import json
import runpy
import shutil
import socket
import sqlite3
import urllib.request
from pathlib import Path

import pytest
import yaml

from galaxy_da.sweep import space as search_space
from galaxy_da.config import ConfigError, TrialConfig, load_config
from galaxy_da.sweep.tracking_server import tracking_server
from galaxy_da.tracking import numeric_metrics

SMALL = {
    "model.width": 4, "data.batch_size": 16, "optim.epochs": 2, "optim.warmup_epochs": 0,
    "optim.steps_per_epoch": 2, "align.method": "laplacian", "data.eval_batch_size": 64,
}


def small_config(data: Path, experiment: str, **extra) -> TrialConfig:
    return load_config(None, {**SMALL, "data.path": str(data), "tracking.experiment": experiment, **extra})


# --------------------------------------------------------------------------- search space (no Ray)


def test_named_choice_merges_into_its_section_and_plain_values_pass_through():
    space = {
        "schedules.align_weight": {"choice": {"ramp": {"kind": "linear", "start": 0.0, "end": 0.5}}},
        "align.topk": {"choice": [1, 5]},
        "optim.lr": {"loguniform": [1e-4, 1e-2]},
    }
    cfg = search_space.trial_config(TrialConfig().model_dump(mode="json"), space, {"schedules.align_weight": "ramp", "align.topk": 5, "optim.lr": 3e-3})
    assert (cfg.schedules.align_weight.kind, cfg.schedules.align_weight.end, cfg.align.topk, cfg.optim.lr) == ("linear", 0.5, 5, 3e-3)
    assert cfg.schedules.align_weight.rate == TrialConfig().schedules.align_weight.rate  # untouched field keeps its base value


def test_to_tune_searches_labels_of_non_scalar_options():
    from ray.tune.search.sample import Categorical, Float

    domains = search_space.to_tune({"align": {"choice": {"a": {"method": "energy"}, "b": {"method": "sinkhorn"}}}, "optim.lr": {"uniform": [0.001, 0.01]}})
    assert isinstance(domains["align"], Categorical) and domains["align"].categories == ["a", "b"]
    assert isinstance(domains["optim.lr"], Float) and (domains["optim.lr"].lower, domains["optim.lr"].upper) == (0.001, 0.01)


@pytest.mark.parametrize(
    "space, named",
    [
        ({"align.topk_typo": {"choice": [1, 2]}}, "align.topk_typo"),
        ({"align.topk": {"choice": [5, 0]}}, "align.topk"),
        ({"optim.lr": {"loguniform": [0.0, 1e-2]}}, "optim.lr"),
        ({"model.backbone": {"normal": [0, 1]}}, "model.backbone"),
    ],
)
def test_check_space_rejects_bad_paths_and_values_naming_the_path(space, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        search_space.check_space(TrialConfig().model_dump(mode="json"), space)


def test_grid_needs_the_random_searcher():
    from galaxy_da.sweep.settings import SweepSettings
    from galaxy_da.sweep.tuner import build_searcher

    with pytest.raises(ConfigError, match="grid"):
        build_searcher(SweepSettings(name="x", space={"align.topk": {"grid": [1, 2]}}, searcher="optuna"))


def test_resources_follow_the_backbone():
    from galaxy_da.sweep.settings import DRIVER_CPU, SweepSettings, resources_for

    settings = SweepSettings(name="x", space={}, cpus_per_trial=2)
    cnn, resnet = TrialConfig(), load_config(None, {"model.backbone": "resnet18"})
    assert resources_for(cnn, settings, has_gpu=True) == {"cpu": 2, "gpu": 0.25}
    assert resources_for(resnet, settings, has_gpu=True) == {"cpu": 2, "gpu": 1.0}
    assert resources_for(resnet, settings, has_gpu=False) == {"cpu": 2}
    two_workers = load_config(None, {"resources.workers_per_trial": 2})
    assert resources_for(two_workers, settings, has_gpu=True) == {"cpu": DRIVER_CPU}  # its Ray Train workers ask for theirs


def test_a_sweep_joins_a_running_cluster_only_when_asked(monkeypatch):
    """Another Ray instance on the host (another user's, or a dead one) is never joined by default."""
    from galaxy_da.sweep import tuner as sweep_tune

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert sweep_tune.resolve_address(None) == "local"
    assert sweep_tune.resolve_address("auto") == "auto"
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert sweep_tune.resolve_address(None) == "ray://head:10001"


# What Ray 2.60 raises, type and words (ray/_private/node.py), when a new node's raylet misses its 30 s to register.
RAYLET_MISSED_STARTUP = ("The current node timed out during startup. This could happen because some of the raylet failed to "
                         "startup or the GCS has become overloaded.")


def ray_starts(monkeypatch, failures: list[Exception]) -> list[str]:
    """Replace ``ray.init`` (failing with ``failures``, in turn, then starting) and ``ray.shutdown``; the calls, in order."""
    import ray

    calls = []

    def init(**options):
        calls.append("init")
        if failures:
            raise failures.pop(0)

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    return calls


def test_a_local_ray_whose_raylet_missed_its_start_up_window_is_shut_down_and_started_again(monkeypatch):
    from galaxy_da.sweep.settings import SweepSettings
    from galaxy_da.sweep.tuner import start_ray

    calls = ray_starts(monkeypatch, [Exception(RAYLET_MISSED_STARTUP)])
    assert start_ray(SweepSettings(name="retry", space={}, address="local")) is False
    assert calls == ["init", "shutdown", "init"]


def test_other_start_up_errors_are_not_retried_and_a_third_missed_window_is_raised(monkeypatch):
    from galaxy_da.sweep.settings import SweepSettings
    from galaxy_da.sweep.tuner import start_ray

    settings = SweepSettings(name="retry", space={}, address="local")
    calls = ray_starts(monkeypatch, [ValueError("num_cpus must be >= 0")])
    with pytest.raises(ValueError, match="num_cpus"):
        start_ray(settings)
    assert calls == ["init"]
    calls = ray_starts(monkeypatch, [Exception(RAYLET_MISSED_STARTUP) for _ in range(3)])
    with pytest.raises(Exception, match="timed out during startup"):
        start_ray(settings)
    assert calls == ["init", "shutdown", "init", "shutdown", "init"]


# --------------------------------------------------------------------------- MLflow server


def test_tracking_server_serves_the_sqlite_store_and_stops(tmp_path):
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracking_server(store) as url:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            assert response.status == 200
        experiment = MlflowClient(url).create_experiment("served", artifact_location=(tmp_path / "art").as_uri())
        defaulted = MlflowClient(url).create_experiment("defaulted")
    assert MlflowClient(store).get_experiment(experiment).name == "served"  # it went into the sqlite file
    assert MlflowClient(store).get_experiment(defaulted).artifact_location == f"{(tmp_path / 'artifacts').as_uri()}/{defaulted}"
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_the_server_gets_its_store_through_the_environment_variables_mlflow_server_sets():
    """The server is uvicorn started directly (not through ``mlflow server``): the names it is given must be MLflow's."""
    from mlflow.environment_variables import _MLFLOW_SGI_NAME
    from mlflow.server import constants

    from galaxy_da.sweep.tracking_server import SERVER_ENVIRONMENT

    assert SERVER_ENVIRONMENT == {"backend": constants.BACKEND_STORE_URI_ENV_VAR, "registry": constants.REGISTRY_STORE_URI_ENV_VAR,
                                  "artifact_root": constants.ARTIFACT_ROOT_ENV_VAR, "server": _MLFLOW_SGI_NAME.name}


def servers() -> list:
    """This process's tracking-server children (uvicorn); a child that exits while they are listed is not one."""
    import psutil

    found = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if "uvicorn" in " ".join(child.cmdline()):
                found.append(child)
    return found


def test_what_runs_meanwhile_finds_the_store_ready_and_the_server_launched_and_its_error_stops_the_server(tmp_path):
    import psutil

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    seen = {}

    def meanwhile():  # where a sweep on one host starts Ray
        seen.update(store_ready=(tmp_path / "mlflow.db").is_file(), servers=servers())

    with tracking_server(store, meanwhile=meanwhile):
        pass
    assert seen["store_ready"] and len(seen["servers"]) == 1

    def fails():
        seen["servers"] = servers()
        raise RuntimeError("Ray did not start")

    with pytest.raises(RuntimeError, match="Ray did not start"):
        with tracking_server(store, meanwhile=fails):
            pytest.fail("the body ran after an error in meanwhile")
    assert len(seen["servers"]) == 1
    _, alive = psutil.wait_procs(seen["servers"], timeout=10)
    assert not alive, "the server outlived the error"


def test_a_non_sqlite_uri_is_used_as_is():
    with tracking_server("http://tracking.example:5000") as url:
        assert url == "http://tracking.example:5000"


# --------------------------------------------------------------------------- real sweeps


def metric_points(db: Path, run_id: str) -> dict[tuple[str, int], float]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT key, step, value FROM metrics WHERE run_uuid = ?", (run_id,)).fetchall()
    points: dict[tuple[str, int], float] = {}
    for key, step, value in rows:
        assert (key, step) not in points or key.startswith("best/"), f"{key} logged twice at step {step}"
        points[(key, step)] = value
    return points


@pytest.mark.slow
def test_four_concurrent_trials_lose_no_metric_and_the_parent_holds_the_leaderboard(toy_dataset, tmp_path):
    from mlflow.tracking import MlflowClient

    from galaxy_da.sweep.settings import SweepSettings
    from galaxy_da.sweep.tuner import run_sweep

    db = tmp_path / "mlflow" / "mlflow.db"
    cfg = small_config(toy_dataset, "concurrent")
    settings = SweepSettings(
        name="concurrent", space={"align.topk": {"grid": [1, 2, 3, 4]}}, searcher="random", num_samples=1,
        max_concurrent=4, num_cpus=4, grace_period=2, storage_path=str(tmp_path / "ray"), tracking_uri=f"sqlite:///{db}",
    )
    result = run_sweep(cfg, settings)
    assert result.complete

    client = MlflowClient(f"sqlite:///{db}")
    children = client.search_runs([client.get_run(result.parent_run_id).info.experiment_id], "tags.`mlflow.parentRunId` = '" + result.parent_run_id + "'")
    assert sorted(run.data.tags["topk"] for run in children) == ["1", "2", "3", "4"]
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["backbone"] == "cnn" and run.data.tags["method"] == "laplacian"
        history = json.loads(Path(client.download_artifacts(run.info.run_id, "history.json", str(tmp_path))).read_text())
        assert [record["epoch"] for record in history] == [0, 1]
        points = metric_points(db, run.info.run_id)
        expected = {(key, record["epoch"]): value for record in history for key, value in numeric_metrics(record).items() if not key.startswith("best/")}
        assert len(expected) > 2 * 15
        assert {key: points.get(key) for key in expected} == pytest.approx(expected)
        assert {Path(f.path).name for f in client.list_artifacts(run.info.run_id, "checkpoints")} >= {"best.pt", "last.pt"}

    parent_files = {f.path for f in client.list_artifacts(result.parent_run_id)}
    assert {"leaderboard.csv", "leaderboard.md", "best_config.yaml", "search_space.json", "plots"} <= parent_files
    board = Path(client.download_artifacts(result.parent_run_id, "leaderboard.csv", str(tmp_path))).read_text().splitlines()
    assert len(board) == 1 + 4 and "align.topk" in board[0]
    best = yaml.safe_load(Path(client.download_artifacts(result.parent_run_id, "best_config.yaml", str(tmp_path))).read_text())
    assert best["align"]["topk"] == int(result.leaderboard[0]["align.topk"])
    assert json.loads(Path(client.download_artifacts(result.parent_run_id, "search_space.json", str(tmp_path))).read_text()) == settings.space


@pytest.mark.slow
def test_a_crashing_trial_is_retried_then_failed_and_the_sweep_goes_on(toy_dataset, tmp_path):
    from mlflow.tracking import MlflowClient

    from galaxy_da.sweep.settings import SweepSettings
    from galaxy_da.sweep.tuner import run_sweep

    corrupt = tmp_path / "corrupt"  # a manifest that opens, a source shard cut in half: the trial crashes reading it
    shutil.copytree(toy_dataset, corrupt)
    shard = sorted((corrupt / "source").glob("*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    settings = SweepSettings(
        name="crash", space={"data.path": {"grid": [str(toy_dataset), str(corrupt)]}}, searcher="random",
        num_samples=1, max_concurrent=2, num_cpus=2, max_failures=1, storage_path=str(tmp_path / "ray"),
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    result = run_sweep(small_config(toy_dataset, "crash", **{"data.verify_hashes": False}), settings)  # unchecked: found by the trial
    assert result.complete
    statuses = sorted(row["status"] for row in result.leaderboard)
    assert statuses == ["FAILED", "FINISHED"]  # one child run per trial, retries included
    client = MlflowClient(result.tracking_uri)
    assert client.get_run(result.parent_run_id).info.status == "FINISHED"
    assert client.get_run(result.parent_run_id).data.tags["best_run_id"] == result.leaderboard[0]["run_id"]


# --------------------------------------------------------------------------- settings, names, summary (no Ray run)


def test_a_relative_storage_path_is_resolved_once_and_ray_can_read_it(tmp_path, monkeypatch):
    """`Tuner.can_restore('ray_results/topk-smoke')` raised 'URI has empty scheme': --resume crashed."""
    from ray import tune

    from galaxy_da.sweep.settings import SweepSettings

    monkeypatch.chdir(tmp_path)
    settings = SweepSettings(name="topk-smoke", space={})  # the CLI's default --storage-path is "ray_results"
    assert settings.experiment_path == str(tmp_path / "ray_results" / "topk-smoke")
    assert tune.Tuner.can_restore(settings.experiment_path) is False
    assert SweepSettings(name="x", space={}, storage_path="s3://bucket/results").experiment_path == "s3://bucket/results/x"


@pytest.mark.parametrize("key, value", [("num_samples", 0), ("num_samples", -3), ("max_concurrent", 0)])
def test_a_sweep_of_no_trials_is_refused(key, value):
    from galaxy_da.sweep.settings import SweepSettings

    with pytest.raises(ConfigError, match=f"{key} \\(--{key.replace('_', '-')}\\): must be >= 1, got {value}"):
        SweepSettings(name="x", space={}, **{key: value})


def test_a_trial_run_is_named_after_what_it_varied():
    from galaxy_da.sweep.naming import trial_run_name

    space = {
        "align": {"choice": {"laplacian": {"method": "laplacian"}, "sinkhorn": {"method": "sinkhorn"}}},
        "align.topk": {"choice": [1, 8]},
        "schedules.align_weight": {"choice": {"cosine": {"kind": "cosine"}}},
        "optim.lr": {"loguniform": [1e-4, 1e-2]},
        "model.class_scales": {"choice": [True, False]},
    }
    sampled = {"optim.lr": 0.003, "align.topk": 8, "align": "laplacian", "schedules.align_weight": "cosine", "model.class_scales": False}
    assert trial_run_name(space, sampled) == "lap·k8·lr3e-3·no-class_scales·cos"
    assert trial_run_name({"optim.lr": {"uniform": [0.1, 1]}}, {"optim.lr": 0.5}) == "lr0.5"


def test_a_topk_trial_name_leads_with_the_method_and_fits_the_ui_column():
    """sweeps/topk.py lists k, then the schedule, then the method: the name puts the method first whatever the
    space's order, the backbone next, schedules last, its labels shortened: at most 23 characters (the sweep's view
    shows 25 in its Run Name column, bench/ui_screenshots.py checks it)."""
    from galaxy_da.sweep.naming import trial_run_name

    space = runpy.run_path(str(Path(__file__).resolve().parents[1] / "sweeps" / "topk.py"), run_name="topk")["SPACE"]
    names = {
        trial_run_name(space, {"align.topk": k, "schedules.align_weight": schedule, "align": method})
        for k in space["align.topk"]["choice"] for schedule in space["schedules.align_weight"]["choice"] for method in space["align"]["choice"]
    }
    assert "lap+topk·k1·lin-0-0.5" in names and "topk_ot·k20·const-0.1" in names
    assert {name.split("·")[0] for name in names} == {"lap+topk", "sink+topk", "topk_ot"}
    assert max(len(name) for name in names) <= 23
    reordered = {"schedules.blur": {"choice": ["a"]}, "model": {"choice": {"cnn": {"backbone": "cnn"}}}, "align.method": {"choice": ["sinkhorn"]}}
    assert trial_run_name(reordered, {"schedules.blur": "a", "model": "cnn", "align.method": "sinkhorn"}) == "sink·cnn·a"


def test_a_trial_name_shows_the_label_shift_reach_and_target_its_base_sets_off_their_defaults():
    """Weighted and marginal, unbalanced and balanced, DESI-like and SDSS-like trials never share a name, varied or not."""
    from galaxy_da.sweep.naming import trial_run_name

    sweeps = Path(__file__).resolve().parents[1] / "sweeps"
    topk = runpy.run_path(str(sweeps / "topk.py"), run_name="topk")["SPACE"]
    sampled = {"align.topk": 1, "schedules.align_weight": "linear-0-0.5", "align": "laplacian+topk"}

    def base(*overrides: str) -> dict:
        return load_config(sweeps.parent / "configs" / "sweep_topk.yaml", list(overrides)).model_dump(mode="json")

    assert trial_run_name(topk, sampled, base()) == trial_run_name(topk, sampled) == "lap+topk·k1·lin-0-0.5"
    assert trial_run_name(topk, sampled, base("align.label_shift=bbse")) == "lap+topk·bbse·k1·lin-0-0.5"
    assert trial_run_name(topk, sampled, base("align.label_shift=em", "data.target=desi")) == "lap+topk·em·k1·desi·lin-0-0.5"
    unbalanced = base("align.method=sinkhorn", "align.reach=0.5")
    assert trial_run_name({"align.method": {"choice": ["sinkhorn"]}}, {"align.method": "sinkhorn"}, unbalanced) == "sink·reach0.5"
    label_shift = runpy.run_path(str(sweeps / "label_shift.py"), run_name="label_shift")["SPACE"]
    varied = {"align": "sinkhorn+reach1", "align.label_shift": "em", "data.target": "desi"}
    assert trial_run_name(label_shift, varied, base("align.label_shift=bbse", "data.target=desi")) == "sink+reach1·em·desi"  # each shown once


def test_the_summary_points_at_commands_that_outlive_the_sweep(tmp_path):
    from galaxy_da.sweep.settings import SweepResult
    from galaxy_da.sweep.summary import next_steps
    from galaxy_da.tracking import DEFAULT_STORE

    root = Path(__file__).resolve().parents[1]
    rows = [{"run_id": "b" * 32, "score": 0.7}, {"run_id": "c" * 32, "score": float("nan")}]
    result = SweepResult("a" * 32, str(tmp_path), True, rows, f"sqlite:///{root / DEFAULT_STORE / 'mlflow.db'}")
    steps = next_steps(result, "smoke-sweeps", "sweep-topk-smoke")
    assert steps.splitlines() == [
        "look at the runs:   make ui   (experiment 'smoke-sweeps', parent run 'sweep-topk-smoke')",
        f"evaluate the best:  python -m galaxy_da.eval --run-id {'b' * 32}",
        f"report the sweep:   galaxy-da report --sweep {'a' * 32}",
    ]
    assert "http://" not in steps
    view = "http://127.0.0.1:5000/#/experiments/1/runs?viewStateShareKey=x&workflowType=machine_learning"
    assert next_steps(result, "smoke-sweeps", "sweep-topk-smoke", view).splitlines()[1].startswith(f"compare the trials: {view}")
