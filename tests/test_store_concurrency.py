"""Many processes on one new sqlite store: one creates and migrates it, the others wait; a broken store is refused in one line."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from galaxy_da.sqlite_store import StoreError, ready_store, store_lock

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def opener(uri: str, gate: Path, index: int, openers: int) -> list[str]:
    """A process that imports everything, waits until ``openers`` processes are at the gate, then logs one run to ``uri``."""
    code = f"""
from pathlib import Path
import time
import mlflow.store.tracking.sqlalchemy_store, mlflow.tracking  # imported before the gate: the openers meet at the store
from galaxy_da.config import load_config
from galaxy_da.tracking import RunTracker
gate = Path({str(gate)!r})
(gate / "{index}").touch()
while len(list(gate.iterdir())) < {openers}:
    time.sleep(0.01)
tracker = RunTracker(load_config(None, ["tracking.experiment=together", "tracking.run_name=opener-{index}"]), tracking_uri={uri!r})
tracker.finish()
"""
    return [sys.executable, "-c", code]


def runs(database: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(database) as connection:
        return sorted(connection.execute("SELECT name, status FROM runs").fetchall())


@pytest.mark.slow
def test_processes_that_open_a_new_store_together_all_log_their_run(tmp_path):
    """Three processes meet at a gate, then each logs a run to one new store (before the lock, two of three died)."""
    database, gate = tmp_path / "store" / "mlflow.db", tmp_path / "gate"
    gate.mkdir()
    uri = f"sqlite:///{database}"
    processes = [subprocess.Popen(opener(uri, gate, index, 3), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
                 for index in range(3)]
    outcomes = [(process.wait(timeout=180), process.stderr.read()) for process in processes]
    assert [status for status, _ in outcomes] == [0, 0, 0], "\n".join(err[-2000:] for _, err in outcomes)
    assert runs(database) == [(f"opener-{index}", "FINISHED") for index in range(3)]


def waits_for_flock(lock: Path, pid: int) -> bool:
    """Whether process ``pid`` is blocked on a ``flock`` of ``lock``: a ``->`` (waiting) line of /proc/locks,
    ``N: -> FLOCK ADVISORY WRITE <pid> <major>:<minor>:<inode> 0 EOF``."""
    inode = str(lock.stat().st_ino)
    for fields in (line.split() for line in Path("/proc/locks").read_text().splitlines()):
        if fields[1:3] == ["->", "FLOCK"] and fields[5] == str(pid) and fields[6].rsplit(":", 1)[-1] == inode:
            return True
    return False


def test_a_process_waits_for_the_store_lock_before_it_creates_the_store(tmp_path):
    database, gate = tmp_path / "mlflow.db", tmp_path / "gate"
    gate.mkdir()
    with store_lock(database) as lock:
        process = subprocess.Popen(opener(f"sqlite:///{database}", gate, 0, 1), stderr=subprocess.PIPE, text=True, env=ENV)
        deadline = time.monotonic() + 120
        while not waits_for_flock(lock, process.pid):  # past the gate, blocked on the lock: not timed
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()[-2000:]
            time.sleep(0.05)
        assert not database.exists() and lock == tmp_path / "mlflow.db.lock"
    assert process.wait(timeout=180) == 0, process.stderr.read()[-2000:]
    assert runs(database) == [("opener-0", "FINISHED")]


def broken_store(database: Path) -> None:
    """A store whose schema revision this MLflow does not know: what a killed migration or another MLflow can leave."""
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        connection.execute("INSERT INTO alembic_version VALUES ('0123456789ab')")


def test_a_broken_store_is_refused_in_one_line_naming_it(tmp_path):
    database = tmp_path / "mlflow.db"
    broken_store(database)
    with pytest.raises(StoreError) as info:
        ready_store(f"sqlite:///{database}", None)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"MLflow store {database} cannot be opened")
    assert "0123456789ab" in message and f"mlflow db upgrade sqlite:///{database}" in message


def test_a_command_on_a_broken_store_fails_in_one_line(tmp_path):
    database = tmp_path / "mlflow.db"
    broken_store(database)
    command = [sys.executable, "-m", "galaxy_da.cli", "eval", "--run-id", "0" * 32, "--tracking-uri", f"sqlite:///{database}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=tmp_path, env=ENV)
    errors = [line for line in done.stderr.splitlines() if "INFO mlflow" not in line]  # MLflow says it creates tables
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(errors) == 1 and errors[0].startswith(f"galaxy-da eval: error: MLflow store {database} cannot be opened"), errors


@pytest.mark.slow
def test_four_trainings_started_together_on_a_new_store_all_finish(toy_dataset_odd, tmp_path):
    """`galaxy-da train` x 4 at once on a fresh sqlite store: every one exits 0 and logs its run (no migration race)."""
    database = tmp_path / "mlflow.db"
    tiny = ["optim.epochs=2", "optim.warmup_epochs=1", "optim.steps_per_epoch=1", "data.max_source=64", "data.max_target=64"]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "galaxy_da.cli", "train", "--config", str(REPO / "configs" / "smoke.yaml"),
             f"data.path={toy_dataset_odd}", *tiny, f"tracking.run_name=together-{index}", "--tracking-uri", f"sqlite:///{database}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=ENV,
        )
        for index in range(4)
    ]
    outcomes = [process.communicate(timeout=900) for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, "\n".join(err[-2000:] for _, err in outcomes)
    assert runs(database) == [(f"together-{index}", "FINISHED") for index in range(4)]
