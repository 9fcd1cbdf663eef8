"""Cluster launch files: Ray's own schema accepts both cluster YAMLs; submitit runs a job locally."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def validated(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.mark.parametrize("name", ["gpu.yaml", "local.yaml"])
def test_cluster_yaml_passes_rays_validator(name):
    config = yaml.safe_load((ROOT / "cluster" / name).read_text())
    prepared = validated(config)
    assert prepared["cluster_name"].startswith("galaxy-da")
    assert any("venv" in command or ".venv" in command for command in prepared["setup_commands"])


def test_the_validator_is_not_vacuous():
    import jsonschema

    config = yaml.safe_load((ROOT / "cluster" / "gpu.yaml").read_text())
    config["available_node_types"]["gpu_worker"]["min_workers"] = "two"
    with pytest.raises(jsonschema.ValidationError, match="two"):
        validated(config)


def test_gpu_cluster_autoscales_gpu_workers_behind_a_cpu_head():
    config = yaml.safe_load((ROOT / "cluster" / "gpu.yaml").read_text())
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["min_workers"] < workers["max_workers"]
    assert config["head_node_type"] == "head" and config["provider"]["type"] == "aws"
    assert "MLFLOW_TRACKING_URI" in " ".join(config["setup_commands"])


def test_local_cluster_is_this_host():
    config = yaml.safe_load((ROOT / "cluster" / "local.yaml").read_text())
    assert config["provider"] == {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}


def test_slurm_launcher_falls_back_to_a_local_job_and_trains(toy_dataset, tmp_path):
    command = [
        sys.executable, str(ROOT / "cluster" / "slurm.py"), "--cluster", "local", "--folder", str(tmp_path / "logs"), "--wait",
        str(ROOT / "galaxy_da" / "cli.py"), "train", "--no-track", f"data.path={toy_dataset}", "model.width=4",
        "optim.epochs=2", "optim.steps_per_epoch=2", "data.batch_size=16", "--checkpoint-dir", str(tmp_path / "ckpt"),
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "LocalJob" in out.stdout
    assert (tmp_path / "ckpt" / "last.pt").is_file()
    job_logs = "".join(p.read_text() for p in (tmp_path / "logs").rglob("*_log.out"))
    assert json.loads([line for line in job_logs.splitlines() if line.startswith('{"run_id"')][-1])["run_id"] is None
