"""Cluster launch files: Ray's own schema accepts both cluster YAMLs; submitit runs a job locally."""

from __future__ import annotations

import copy
import json
import socket
import subprocess
import sys
import time
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refuses(address: tuple[str, int], within_s: float = 10.0) -> bool:
    """Whether ``address`` refuses connections within ``within_s``: a stopping Ray node SIGKILLs its GCS and waits only
    about 1 s for it, and on a loaded machine the GCS may exit (and its port close) later."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            socket.create_connection(address, timeout=2).close()
        except OSError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def test_slurm_launcher_runs_a_sweep_against_a_ray_head_inside_the_allocation(toy_dataset, tmp_path):
    port = free_port()
    command = [
        sys.executable, str(ROOT / "cluster" / "slurm.py"), "--cluster", "local", "--folder", str(tmp_path / "logs"),
        "--nodes", "1", "--cpus-per-node", "1", "--gpus-per-node", "0", "--port", str(port), "--wait",
        str(ROOT / "sweeps" / "topk.py"), "--smoke-test", "--data", str(toy_dataset), "--num-samples", "1",
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--storage-path", str(tmp_path / "ray"),
        "optim.epochs=1", "optim.steps_per_epoch=1",
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert "LocalJob" in out.stdout and "Ray cluster up at " in out.stdout and "1 node(s), 1 CPUs, 0 GPUs" in out.stdout
    summary = json.loads([line for line in out.stdout.splitlines() if line.startswith('{"sweep"')][-1])
    assert summary["complete"] and summary["trials"] == 1
    head_ip = socket.gethostbyname(socket.gethostname())
    assert refuses((head_ip, port)), "the Ray head outlived the job"
