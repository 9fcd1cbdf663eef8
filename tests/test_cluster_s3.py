"""Every node of ``cluster/gpu.yaml`` reaches the bucket: workers carry an IAM instance profile, and setup fails without access.

The YAML is read as Ray's launcher reads it (its validator, its own merge of
the setup commands for a worker); the probe runs for real against a moto S3
server on 127.0.0.1.
"""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROBE = "-m galaxy_da.data.probe"


def gpu_config() -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((ROOT / "cluster" / "gpu.yaml").read_text()))
    validate_config(config)
    return config


def worker_types(config: dict) -> dict[str, dict]:
    return {name: spec for name, spec in config["available_node_types"].items() if name != config["head_node_type"]}


def setup_of(config: dict, node_type: str) -> list[str]:
    """The commands Ray's autoscaler runs to set up a worker of ``node_type``.

    As ``StandardAutoscaler`` picks them from a prepared config: ``prepare_config`` has
    put ``setup_commands`` in front of ``worker_setup_commands``, and a node type's
    own ``worker_setup_commands`` replace the merged list.
    """
    spec = config["available_node_types"][node_type]
    return spec.get("initialization_commands", config["initialization_commands"]) + spec.get("worker_setup_commands", config["worker_setup_commands"])


def test_every_worker_node_type_has_an_iam_instance_profile():
    config = gpu_config()
    assert worker_types(config)
    for name, spec in worker_types(config).items():
        profile = spec["node_config"].get("IamInstanceProfile") or {}
        assert profile.get("Name") or profile.get("Arn", "").startswith("arn:aws:iam::"), f"node type {name}: no IamInstanceProfile"


def test_every_worker_setup_probes_the_bucket_with_the_node_environment_exported():
    config = gpu_config()
    for name in worker_types(config):
        commands = setup_of(config, name)
        probes = [i for i, command in enumerate(commands) if PROBE in command]
        assert probes, f"node type {name}: no bucket probe in its setup"
        probe = commands[probes[0]]
        assert "set -a" in probe and "${GALAXY_DA_BUCKET:?" in probe  # AWS_* reach the probe; an unset bucket stops setup
        install = next(i for i, command in enumerate(commands) if "pip install" in command and "-e ." in command)
        assert probes[0] > install  # the probe runs in the venv the package was installed into


def test_the_checks_are_not_vacuous():
    config = gpu_config()
    broken = copy.deepcopy(config)
    for spec in worker_types(broken).values():
        spec["node_config"].pop("IamInstanceProfile")
    broken["worker_setup_commands"] = [c for c in broken["worker_setup_commands"] if PROBE not in c]
    assert not any(worker_types(broken)[name]["node_config"].get("IamInstanceProfile") for name in worker_types(broken))
    assert not any(PROBE in c for name in worker_types(broken) for c in setup_of(broken, name))


moto_server = pytest.importorskip("moto.server", reason="the [cluster] extra (moto)")


@pytest.fixture(scope="module")
def s3_env():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1"}
    filesystem = pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], access_key="test", secret_key="test",
                                   region="us-east-1", allow_bucket_creation=True)
    filesystem.create_dir("galaxy")
    with filesystem.open_output_stream("galaxy/da/synth/manifest.json") as stream:
        stream.write(b"{}")
    yield env
    server.stop()


def run_probe(uri: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "galaxy_da.data.probe", uri], env=os.environ | env,
                          capture_output=True, text=True, timeout=120)


def test_the_probe_passes_on_a_bucket_the_node_can_list(s3_env):
    result = run_probe("s3://galaxy/da", s3_env)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("uri", ["s3://no-such-bucket/da", "s3://galaxy/not-there"])
def test_the_probe_fails_the_setup_with_one_line_naming_the_uri(s3_env, uri):
    result = run_probe(uri, s3_env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and uri in lines[0] and "IamInstanceProfile" in lines[0], result.stderr
