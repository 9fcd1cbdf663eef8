"""What Ray's file sync copies to every node: ``cluster/gpu.yaml``'s excludes through real rsync.

Ray's launcher turns each ``rsync_exclude`` entry into ``--exclude ENTRY``
(``SSHCommandRunner``); the arguments here come from that same Ray code, and
rsync runs with them over this checkout (``--dry-run``: it lists, copies nothing).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
GPU_YAML = yaml.safe_load((ROOT / "cluster" / "gpu.yaml").read_text())
EXCLUDED = ["/.venv", "/data", "/mlflow/mlflow.db", "/mlflow/artifacts", "/ray_results"]  # the big folders and the local store

needs_rsync = pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed (make cluster-deps installs it)")


def rsync_arguments(config: dict) -> list[str]:
    """The filter arguments Ray's launcher gives rsync for ``config``'s file mounts."""
    from ray.autoscaler._private.command_runner import SSHCommandRunner

    runner = SSHCommandRunner("", "node", None, config["auth"], config["cluster_name"], subprocess, False)
    return runner._create_rsync_filter_args({"rsync_exclude": config.get("rsync_exclude"), "rsync_filter": config.get("rsync_filter")})


def synced(source: Path, config: dict, target: Path) -> set[str]:
    """Paths (relative to ``source``) that the sync of ``source`` to a node would send."""
    listing = subprocess.run(["rsync", "-a", "--dry-run", "--out-format=%n", *rsync_arguments(config), f"{source}/", f"{target}/"],
                             capture_output=True, text=True, check=True).stdout
    return {line.rstrip("/") for line in listing.splitlines() if line and line != "./"}


def package_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / "galaxy_da").rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@needs_rsync
def test_the_sync_sends_the_whole_package_and_leaves_the_big_folders(tmp_path):
    sent = synced(ROOT, GPU_YAML, tmp_path / "node")
    missing = sorted(package_files(ROOT) - sent)
    assert not missing, f"gpu.yaml's rsync_exclude drops {len(missing)} package file(s), e.g. {missing[:3]}"
    assert "galaxy_da/data/reader.py" in sent and "sweeps/topk.py" in sent and "pyproject.toml" in sent
    present = [path for path in EXCLUDED if (ROOT / path.lstrip("/")).exists()]
    assert not [name for name in sent for path in present if name == path.lstrip("/") or name.startswith(path.lstrip("/") + "/")]


@needs_rsync
def test_each_exclude_drops_only_its_own_top_level_path(tmp_path):
    """On a checkout that has every excluded path, and the same names deeper down: only the top-level ones stay behind."""
    checkout = tmp_path / "checkout"
    kept = ["galaxy_da/data/reader.py", "galaxy_da/__init__.py", "sweeps/data/keep.txt", "mlflow/serve.sh"]
    dropped = [".venv/bin/python", "data/synth/manifest.json", "mlflow/mlflow.db", "mlflow/artifacts/1/a.png",
               "ray_results/sweep/state.json", "galaxy_da/__pycache__/x.pyc", ".git/HEAD"]
    for name in kept + dropped:
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_text("x")
    sent = synced(checkout, GPU_YAML, tmp_path / "node")
    assert set(kept) <= sent
    assert not sent & set(dropped)


def test_the_test_bed_syncs_the_checkout_with_gpu_yamls_excludes():
    from cluster.testbed.scenarios import SYNCED_CODE, bed_cluster_config

    config = bed_cluster_config(ROOT, "10.213.0.1", ["10.213.0.2"])
    assert config["rsync_exclude"] == GPU_YAML["rsync_exclude"]
    assert config["file_mounts"][SYNCED_CODE] == str(ROOT) and GPU_YAML["file_mounts"]["~/galaxy-da"] == "."
    assert any('PYTHONPATH="$HOME/galaxy-da"' in command for command in config["setup_commands"])
