"""What every cluster file promises: token-protected Ray, no public dashboard, no machine path, no secret in the repository,
no MLflow admin on a worker node."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
YAMLS = sorted((ROOT / "cluster").glob("*.yaml"))
SECRET_PATTERNS = {
    "an AWS access key id": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "a literal credential": re.compile(r"(?i)\b[A-Z_]*(PASSWORD|SECRET|TOKEN|SECRET_ACCESS_KEY)\s*[=:]\s*['\"]?[A-Za-z0-9+/_-]{12,}"),
}


def start_commands(config: dict) -> list[str]:
    return [c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in config[key] if "ray start" in c]


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_ray_is_token_protected_and_its_dashboard_is_off_or_on_loopback(path):
    config = yaml.safe_load(path.read_text())
    commands = start_commands(config)
    assert len(commands) == 2
    assert all("RAY_AUTH_MODE=token" in command for command in commands)
    head = next(c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert "--include-dashboard=false" in head or "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in path.read_text()
    assert config["file_mounts"]["~/.galaxy-da.env"] == "~/.galaxy-da.env"  # credentials travel in the node environment, not the file


def test_the_on_premise_yaml_names_no_machine_path():
    config = yaml.safe_load((ROOT / "cluster" / "local.yaml").read_text())
    commands = " ".join(config["setup_commands"] + start_commands(config))
    assert "$GALAXY_DA_HOME" in commands
    assert not re.search(r"(?<![$\w{])/(work|home|srv|opt|root)/", commands)


ADMIN_FILE = ".galaxy-da-admin.env"  # the MLflow admin's credentials: the head's alone
ADMIN_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
EVERY_NODE = ("file_mounts", "cluster_synced_files", "setup_commands", "worker_setup_commands", "worker_start_ray_commands")


def bed_config() -> dict:
    """The test bed's cluster config (cluster/local.yaml with its addresses and file sync)."""
    from cluster.testbed.scenarios import bed_cluster_config

    return bed_cluster_config(ROOT, "10.213.0.1", ["10.213.0.2", "10.213.0.3"])


CONFIGS = {path.name: lambda path=path: yaml.safe_load(path.read_text()) for path in YAMLS} | {"test bed": bed_config}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_only_the_heads_driver_gets_the_mlflow_admin(name):
    """Workers get no admin password: the admin file is in no mount or command every node runs; the head's login shell
    (the sweep's driver, which makes the trials' own user) loads it, and the head's Ray processes drop it."""
    config = CONFIGS[name]()
    everywhere = yaml.safe_dump({key: config.get(key) for key in EVERY_NODE})
    assert ADMIN_FILE not in everywhere and not any(variable in everywhere for variable in ADMIN_VARIABLES)
    assert any(ADMIN_FILE in command for command in config["head_setup_commands"])
    head_start = next(c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert all(f"-u {variable}" in head_start.split(" ray start")[0] for variable in ADMIN_VARIABLES)


def test_the_beds_node_environment_holds_no_mlflow_user():
    """What the bed writes to every node's ~/.galaxy-da.env has no MLflow user; the admin's credentials are apart."""
    from cluster.testbed.host import Host
    from cluster.testbed.services import Secrets, admin_env, node_env

    keys = Secrets()
    env = node_env(Host(0, "gda-h0", "10.213.0.1", "unused", Path("/nonexistent")), keys)
    assert not set(ADMIN_VARIABLES) & set(env) and keys.mlflow_password not in env.values()
    assert admin_env(keys) == {"MLFLOW_TRACKING_USERNAME": keys.mlflow_user, "MLFLOW_TRACKING_PASSWORD": keys.mlflow_password}


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / name for name in names if (ROOT / name).suffix not in {".png", ".parquet", ".pt"} and (ROOT / name).is_file()]


def test_no_secret_in_any_tracked_file():
    found = [f"{path.relative_to(ROOT)}: {what}" for path in tracked_text_files() for what, pattern in SECRET_PATTERNS.items()
             if pattern.search(path.read_text(errors="ignore"))]
    assert found == []


def test_the_secret_scan_is_not_vacuous():
    # built at run time, so that this file does not hold what it looks for
    assert SECRET_PATTERNS["a literal credential"].search("MLFLOW_TRACKING_PASSWORD=" + "hunter2" * 3)
    assert SECRET_PATTERNS["an AWS access key id"].search("key " + "AKIA" + "ABCDEFGHIJKLMNOP")
