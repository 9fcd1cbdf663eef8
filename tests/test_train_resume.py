"""``galaxy-da train`` stopped with Ctrl-C and resumed logs into one MLflow run, every epoch's points once.

The checkpoint folder notes its run (``mlflow_run.json``); ``--resume`` re-opens that run when it is in the
same store and not deleted, and says so; otherwise it opens a new run and says why.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from galaxy_da.commands.train import RUN_FILE, remembered_run
from galaxy_da.tracking import EPOCH_METRIC, mlflow_client

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


def interrupted_after_first_epoch(command: list[str], cwd: Path) -> tuple[list[str], str]:
    """Run ``command`` until it prints an epoch line, then SIGINT; (stdout lines up to that one, last stderr line)."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd) as process:
        lines = [process.stdout.readline()]
        while lines[-1] and not lines[-1].startswith("epoch "):
            lines.append(process.stdout.readline())
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=300)
    assert process.returncode == 130 and "Traceback" not in err, err
    return lines, err.strip().splitlines()[-1]


def test_a_resumed_train_logs_into_the_run_it_interrupted(toy_dataset, tmp_path):
    store, folder = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "ckpt"
    words = [f"data.path={toy_dataset}", "optim.epochs=1000", "optim.warmup_epochs=0", "optim.steps_per_epoch=1", "model.width=2"]
    first_lines, line = interrupted_after_first_epoch(
        [sys.executable, "-m", "galaxy_da.cli", "train", "--config", SMOKE, *words, "--tracking-uri", store, "--checkpoint-dir", str(folder)],
        tmp_path)
    run_id = json.loads((folder / RUN_FILE).read_text())["run_id"]
    assert f"(MLflow run {run_id}, closed KILLED; resuming re-opens it)" in line
    resume = shlex.split(line.split("resume with: ", 1)[1])
    assert resume[:2] == ["galaxy-da", "train"]
    resumed_lines, _ = interrupted_after_first_epoch([sys.executable, "-m", "galaxy_da.cli", *resume[1:]], tmp_path)
    assert resumed_lines[0].strip() == f"resuming MLflow run {run_id} (epochs it holds are not logged again)"

    client = mlflow_client(store)
    runs = client.search_runs([client.get_run(run_id).info.experiment_id])
    assert [run.info.run_id for run in runs] == [run_id]  # one run, not one per start
    steps = [point.step for point in client.get_metric_history(run_id, EPOCH_METRIC)]
    assert len(steps) == len(set(steps)) and {0, 1} <= set(steps)  # the first start's epoch and the resumed one, each once
    assert runs[0].info.status == "KILLED" and json.loads((folder / RUN_FILE).read_text())["run_id"] == run_id


def test_resume_opens_a_new_run_and_says_why_when_the_noted_one_cannot_be_continued(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert remembered_run(tmp_path, store) == (None, f"resuming into a new MLflow run: {tmp_path} notes no run ({RUN_FILE} is missing)")
    (tmp_path / RUN_FILE).write_text("{")
    assert remembered_run(tmp_path, store)[1].startswith(f"resuming into a new MLflow run: {tmp_path / RUN_FILE} is unreadable (JSONDecodeError")
    (tmp_path / RUN_FILE).write_text(json.dumps({"run_id": "abc", "tracking_uri": "sqlite:///elsewhere.db"}))
    assert remembered_run(tmp_path, store) == (None, f"resuming into a new MLflow run in {store}: the checkpoints' run abc is in sqlite:///elsewhere.db")
    client = mlflow_client(store)
    run = client.create_run(client.create_experiment("x"))
    client.delete_run(run.info.run_id)
    (tmp_path / RUN_FILE).write_text(json.dumps({"run_id": run.info.run_id, "tracking_uri": store}))
    assert remembered_run(tmp_path, store) == (None, f"resuming into a new MLflow run: the checkpoints' run {run.info.run_id} is deleted in {store}")
    (tmp_path / RUN_FILE).write_text(json.dumps({"run_id": "0" * 32, "tracking_uri": store}))
    assert remembered_run(tmp_path, store)[1].endswith(f"run {'0' * 32} is missing in {store}")
