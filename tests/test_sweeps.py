"""The sweep scripts: their spaces validate, and an interrupted sweep resumes without rerunning trials."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from galaxy_da.sweep import space as search_space
from galaxy_da.config import load_config
from galaxy_da.sweep.cli import SMOKE_CONFIG, SMOKE_DATA, base_config_path, smoke_data_path

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "sweeps").glob("[!_]*.py"))
# The quality benchmark's data; the label-shift sweep's holds both target surveys (bench/label_shift_study.py renders it).
REAL_DATA = ("data/quality", "data/label_shift")


def load_sweep(path: Path) -> dict:
    namespace: dict = {"__name__": "sweep_under_test", "__file__": str(path)}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace


def test_there_are_the_three_sweeps():
    assert {p.stem for p in SWEEPS} >= {"topk", "backbones", "schedules"}


def sweep_base(path: Path) -> Path:
    return load_sweep(path).get("CONFIG", base_config_path(path.stem))


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_value_of_every_sweep_is_valid_on_that_sweeps_own_base_config(path):
    sweep = load_sweep(path)
    for space, config in ((sweep["SPACE"], sweep_base(path)), (sweep.get("SMOKE_SPACE") or sweep["SPACE"], SMOKE_CONFIG)):
        search_space.check_space(load_config(config).model_dump(mode="json"), space)
        assert set(search_space.to_tune(space)) == set(space)


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_real_sweeps_tune_real_trials_not_the_smoke_configuration(path):
    """The base config is sized for the quality benchmark: all its galaxies, not smoke.yaml's few hundred."""
    cfg = load_config(sweep_base(path))
    assert sweep_base(path) != SMOKE_CONFIG and cfg.data.path in REAL_DATA
    assert cfg.data.max_source is None and cfg.data.max_target is None
    assert cfg.optim.epochs * (cfg.optim.steps_per_epoch or 1) >= 8 * 16


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_sweep_documents_the_shared_flags(path):
    out = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    for flag in ("--smoke-test", "--resume", "--tracking-uri", "--num-samples", "--data", "--max-concurrent", "--storage-path", "--use-gpu", "--no-use-gpu", "--autoscaler-config"):
        assert flag in out.stdout


def test_a_sweep_reads_the_targets_its_space_gives_and_its_smoke_renders_only_those():
    label_shift = load_sweep(ROOT / "sweeps" / "label_shift.py")
    base = load_config(SMOKE_CONFIG).model_dump(mode="json")
    assert search_space.values_of(base, label_shift["SPACE"], "data.target") == ["sdss", "desi"]
    assert search_space.values_of(base, load_sweep(ROOT / "sweeps" / "topk.py")["SPACE"], "data.target") == ["sdss"]
    assert search_space.values_of(base, {"data.target": {"grid": ["desi"]}}, "data.target") == ["desi"]  # no trial keeps the base's
    assert smoke_data_path(["sdss"]) == SMOKE_DATA and smoke_data_path(["sdss", "desi"]) == SMOKE_DATA.with_name("smoke-desi-sdss")


def test_a_sweep_over_a_target_the_data_lacks_is_refused_in_one_line_before_any_run(toy_dataset, tmp_path):
    """The toy dataset holds the sdss target only; sweeps/label_shift.py varies data.target over sdss and desi."""
    db = tmp_path / "mlflow.db"
    command = [sys.executable, str(ROOT / "sweeps" / "label_shift.py"), "--data", str(toy_dataset),
               "--storage-path", str(tmp_path / "ray"), "--tracking-uri", f"sqlite:///{db}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr[-2000:]
    assert f"data.target 'desi': {toy_dataset} holds no such target survey; it holds sdss" in done.stderr
    assert not db.exists() and not (tmp_path / "ray").exists()


def test_a_sweep_on_an_oracle_copy_is_refused_in_one_line_before_any_run(toy_dataset, tmp_path):
    """A target-as-source copy trains on target labels: as a sweep's data, or one value of data.path in its space,
    a label-free sweep would rank that upper bound among its candidates."""
    sys.path.insert(0, str(ROOT / "bench"))
    from oracle import write_target_as_source

    oracle = write_target_as_source(str(toy_dataset), tmp_path / "as-source", seed=0)
    db = tmp_path / "mlflow.db"
    command = [sys.executable, str(ROOT / "sweeps" / "topk.py"), "--data", str(oracle),
               "--storage-path", str(tmp_path / "ray"), "--tracking-uri", f"sqlite:///{db}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr[-2000:]
    assert f"data.path {oracle}: a target-as-source copy" in done.stderr and "galaxy-da train" in done.stderr
    assert not db.exists() and not (tmp_path / "ray").exists()
    from galaxy_da.config import ConfigError
    from galaxy_da.sweep.tuner import check_datasets

    base = load_config(SMOKE_CONFIG, [f"data.path={toy_dataset}"]).model_dump(mode="json")
    check_datasets(base, {"data.path": {"grid": [str(toy_dataset)]}}, verify=False)
    with pytest.raises(ConfigError, match="a target-as-source copy"):
        check_datasets(base, {"data.path": {"grid": [str(toy_dataset), str(oracle)]}}, verify=False)


def child_runs(db: Path) -> list[tuple[str, str]]:
    """(run id, status) of the live child runs in the store."""
    if not db.is_file():
        return []
    query = (
        "SELECT r.run_uuid, r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
        "WHERE t.key = 'mlflow.parentRunId' AND r.lifecycle_stage = 'active'"
    )
    try:
        with sqlite3.connect(db, timeout=5) as connection:
            return connection.execute(query).fetchall()
    except sqlite3.OperationalError:  # the server is still creating the schema
        return []


def epoch_steps(db: Path, run_id: str) -> list[int]:
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT step FROM metrics WHERE run_uuid = ? AND key = 'train/loss' ORDER BY step", (run_id,)).fetchall()
    return [step for (step,) in rows]


def parent_status(db: Path, run_id: str) -> str:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT status FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()[0]


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["before-first", "inside-trial", "between-trials"])
def test_an_interrupted_sweep_says_so_and_resume_runs_exactly_what_never_ended(moment, toy_dataset, tmp_path):
    """Ctrl-C at each moment that matters, sent by the driver at the event itself (tests/interrupting_sweep.py), not by timing."""
    db = tmp_path / "mlflow" / "mlflow.db"
    flags = [
        "--smoke-test", "--data", str(toy_dataset), "--tracking-uri", f"sqlite:///{db}", "--storage-path", str(tmp_path / "ray"),
        "--max-concurrent", "1", "--num-cpus", "1", "--num-samples", "2", "optim.epochs=3", "optim.steps_per_epoch=2",
    ]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    first = subprocess.run([sys.executable, str(ROOT / "tests" / "interrupting_sweep.py"), moment, *flags],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert f"SIGINT at {moment}" in first.stdout, (first.stdout + first.stderr)[-3000:]
    interrupted = json.loads(first.stdout.strip().splitlines()[-1])
    assert first.returncode == 130 and interrupted["complete"] is False, (first.stdout + first.stderr)[-3000:]
    assert parent_status(db, interrupted["parent_run_id"]) != "FINISHED"  # no leaderboard of a part of the sweep
    ended_before = {run: epoch_steps(db, run) for run, status in child_runs(db) if status == "FINISHED"}
    assert len(ended_before) == {"before-first": 0, "inside-trial": 0, "between-trials": 1}[moment]

    second = subprocess.run([sys.executable, str(ROOT / "sweeps" / "topk.py"), *flags, "--resume"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    assert "Failed to fetch metrics" not in second.stdout + second.stderr  # trials that never reported: resumed, not warned about
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    assert summary["complete"] and summary["parent_run_id"] == interrupted["parent_run_id"]
    assert parent_status(db, summary["parent_run_id"]) == "FINISHED"
    assert second.stdout.count("  started") == 2 - len(ended_before)  # only the trials that had not ended ran
    runs = child_runs(db)
    assert len(runs) == 2 == summary["trials"]  # exactly one child run per trial
    assert all(status == "FINISHED" for _, status in runs)
    for run, steps in ended_before.items():
        assert epoch_steps(db, run) == steps  # not run again: no epoch logged twice
    for run, _ in runs:
        steps = epoch_steps(db, run)
        assert steps == sorted(set(steps)) and steps[0] == 0  # each epoch once, from the first
    assert len(sorted((tmp_path / "ray" / "topk-smoke").glob("trial_*"))) == 2


@pytest.mark.slow
def test_benchmark_sweep_smoke_runs_every_recipe_to_the_last_epoch(toy_dataset, tmp_path):
    """sweeps/benchmark.py --smoke-test: a grid of recipes, never pruned, one child run each."""
    command = [
        sys.executable, str(ROOT / "sweeps" / "benchmark.py"), "--smoke-test", "--data", str(toy_dataset),
        "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--storage-path", str(tmp_path / "ray"), "--num-cpus", "2",
        "optim.epochs=3", "optim.warmup_epochs=1",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["complete"] and summary["trials"] == 2
    runs = child_runs(tmp_path / "mlflow.db")
    assert len(runs) == 2 and {status for _, status in runs} == {"FINISHED"}
    for run_id, _ in runs:
        assert epoch_steps(tmp_path / "mlflow.db", run_id) == [0, 1, 2]


@pytest.fixture(scope="module")
def two_target_dataset(tmp_path_factory) -> Path:
    """96 source galaxies and 80 of each target survey (sdss, desi) at 17 px: smaller than the smoke's own data."""
    from galaxy_da.data.synth import generate

    return generate(tmp_path_factory.mktemp("two-targets") / "data", seed=0, n_source=96, n_target=80, size=17, progress=False)


@pytest.mark.slow
def test_label_shift_sweep_smoke_runs_a_weighted_trial_on_each_target(two_target_dataset, tmp_path):
    """sweeps/label_shift.py --smoke-test: a BBSE-weighted trial on each survey of a two-target dataset, each reading its own."""
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path}/mlflow.db"
    command = [
        sys.executable, str(ROOT / "sweeps" / "label_shift.py"), "--smoke-test", "--data", str(two_target_dataset),
        "--tracking-uri", store, "--storage-path", str(tmp_path / "ray"), "--num-cpus", "2",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["complete"] and summary["trials"] == 2
    runs = child_runs(tmp_path / "mlflow.db")
    assert len(runs) == 2 and {status for _, status in runs} == {"FINISHED"}
    client = MlflowClient(store)
    targets = set()
    for run_id, _ in runs:
        run = client.get_run(run_id)
        target = run.data.params["data.target"]
        targets.add(target)
        assert run.data.params["align.label_shift"] == "bbse" and run.info.run_name == f"bbse·{target}", run.info.run_name
        assert run.data.tags["method"] == "laplacian+topk_ot+bbse" and run.data.tags["target"] == target  # not grouped with marginal runs
        assert any(key.startswith("label_shift/prior/") for key in run.data.metrics)  # the priors were estimated: the trial weighed
    assert targets == {"sdss", "desi"}
    parent = client.get_run(client.get_run(runs[0][0]).data.tags["mlflow.parentRunId"])
    picks = {key: value for key, value in parent.data.tags.items() if key.startswith("best_run_id")}
    assert set(picks) == {"best_run_id/sdss", "best_run_id/desi"}  # a pick per survey, none across them
    assert {client.get_run(run_id).data.params["data.target"] for run_id in picks.values()} == {"sdss", "desi"}
    assert "evaluate the best on sdss:" in done.stdout and "evaluate the best on desi:" in done.stdout


# --------------------------------------------------------------------------- a newcomer's first hour


def sweep_command(*args: str) -> dict[str, list[str]]:
    """The same sweep from both entry points: the script, and `galaxy-da sweep`."""
    return {
        "script": [sys.executable, str(ROOT / "sweeps" / "topk.py"), *args],
        "galaxy-da sweep": [sys.executable, "-m", "galaxy_da.cli", "sweep", "topk", *args],
    }


def test_an_existing_sweep_is_refused_in_one_line_from_every_entry_point(toy_dataset, tmp_path):
    from galaxy_da.sweep.settings import SweepSettings
    from galaxy_da.sweep.state import SWEEP_STATE_FILE, write_sweep_state

    storage, db = tmp_path / "ray", tmp_path / "mlflow.db"
    write_sweep_state(SweepSettings(name="taken", space={}, storage_path=str(storage)), {"parent_run_id": "p0", "smoke": False})
    state = (storage / "taken" / SWEEP_STATE_FILE).read_text()
    common = ("--name", "taken", "--storage-path", str(storage), "--data", str(toy_dataset), "--tracking-uri", f"sqlite:///{db}")
    for smoke in ((), ("--smoke-test",)):  # a smoke test never replaces a sweep that is not a smoke sweep
        for entry, command in sweep_command(*common, *smoke).items():
            done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
            assert done.returncode == 2, (entry, done.stdout[-2000:], done.stderr[-2000:])
            assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, (entry, done.stderr)
            assert f"{storage / 'taken'}: a sweep named 'taken' exists; resume it (--resume)" in done.stderr, (entry, done.stderr)
    assert (storage / "taken" / SWEEP_STATE_FILE).read_text() == state and not db.exists()  # nothing lost, no run made


@pytest.mark.parametrize("fault", ["--num-samples 0", "--num-samples -2", "missing data", "tampered shard"])
def test_bad_sweep_input_fails_in_one_line_before_any_run(fault, toy_dataset, tmp_path):
    from tests.conftest import tamper_with_shard

    data, extra = toy_dataset, fault.split() if fault.startswith("--") else []
    if fault == "missing data":
        data = tmp_path / "nowhere"
    if fault == "tampered shard":
        data = tmp_path / "copy"
        shutil.copytree(toy_dataset, data)
        tamper_with_shard(data / "target" / "part-00000.parquet")
    db = tmp_path / "mlflow.db"
    command = sweep_command("--data", str(data), "--storage-path", str(tmp_path / "ray"), "--tracking-uri", f"sqlite:///{db}", *extra)["script"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr[-2000:]
    expected = {"missing data": "no manifest.json", "tampered shard": "target/part-00000.parquet: sha256"}.get(fault, "num_samples (--num-samples): must be >= 1")
    assert expected in done.stderr
    assert not db.exists() and not (tmp_path / "ray").exists()
