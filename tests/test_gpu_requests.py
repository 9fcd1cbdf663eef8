"""GPU requests follow the node types the cluster can add: a real autoscaling Ray cluster with logical GPUs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from galaxy_da.sweep.gpus import configured_node_types, decide_use_gpu, gpu_node_types

ROOT = Path(__file__).resolve().parents[1]
GPU_WORKER = {"resources": {"CPU": 4, "GPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 2}
TINY = {"model.width": 4, "data.batch_size": 16, "optim.steps_per_epoch": 2, "optim.epochs": 2, "optim.warmup_epochs": 0,
        "data.eval_batch_size": 64, "align.method": "laplacian"}


def test_gpu_node_types_are_those_with_gpus_that_may_start():
    types = {"head": {"resources": {"CPU": 8}}, "gpu": {"resources": {"GPU": 1}, "max_workers": 2},
             "retired": {"resources": {"GPU": 8}, "max_workers": 0}, "unbounded": {"resources": {"GPU": 2}}}
    assert gpu_node_types(types) == ["gpu", "unbounded"]


def test_the_cloud_cluster_declares_a_gpu_worker_type_that_starts_at_zero():
    types = configured_node_types(str(ROOT / "cluster" / "gpu.yaml"))
    assert gpu_node_types(types) == ["gpu_worker"] and types["gpu_worker"]["min_workers"] == 0


def test_a_flag_overrides_the_cluster_and_a_missing_config_file_is_named():
    assert decide_use_gpu(False, str(ROOT / "cluster" / "gpu.yaml")) == (False, "--no-use-gpu")
    with pytest.raises(FileNotFoundError, match="--autoscaler-config /nowhere.yaml"):
        configured_node_types("/nowhere.yaml")


@pytest.fixture(scope="module")
def gpu_cluster():
    """A head with 1 CPU and no GPU; GPU workers (4 CPUs, 1 GPU) start at zero, at most 2.

    An idle GPU worker stays up 30 minutes, not ``tests/autoscaling.py``'s 12 s, so no test sees one go: ``ray.nodes()``
    lists a gone node with no resources, and on a loaded machine more than 12 s can pass between a sweep's end
    and :func:`gpu_nodes`, which would then not count the removed worker as a GPU node; nor may the first test's
    worker go while the next test places its trials on it. The fixture's teardown ends the workers.
    """
    from tests.autoscaling import LocalAutoscalingCluster

    cluster = LocalAutoscalingCluster(head_resources={"CPU": 1}, worker_node_types={"gpu_worker": GPU_WORKER}, idle_timeout_minutes=30)
    cluster.start()
    yield cluster
    cluster.shutdown()


SWEEP_IN_A_FRESH_PROCESS = """
import json, sys
from galaxy_da.config import load_config
from galaxy_da.sweep.settings import SweepSettings
from galaxy_da.sweep.tuner import run_sweep
args = json.loads(sys.argv[1])
result = run_sweep(load_config(None, args["overrides"]), SweepSettings(**args["settings"]))
print(json.dumps({"complete": result.complete, "parent_run_id": result.parent_run_id}))
"""


def gpu_sweep(cluster, data: Path, tmp_path: Path, name: str, space: dict, concurrent: int, **extra):
    """A sweep on the autoscaling cluster, from a fresh driver process as the CLI would start it.

    It logs through one MLflow server (a multi-node sweep refuses a bare sqlite file). A driver
    process that already ran a local ``ray.init`` (earlier tests) loses its trials' actors on
    this cluster ("cancelled before it started running"), hence the fresh process; and a test process
    that joined this cluster would keep its (later deleted) session folder for the next tests' local Ray.
    """
    from mlflow.tracking import MlflowClient

    from galaxy_da.sweep.tracking_server import tracking_server

    overrides = {**TINY, "data.path": str(data), "tracking.experiment": name, **extra}
    with tracking_server(f"sqlite:///{tmp_path / 'mlflow.db'}") as tracking_uri:
        settings = dict(
            name=name, space=space, searcher="random", num_samples=1, max_concurrent=concurrent, grace_period=overrides["optim.epochs"],
            storage_path=str(tmp_path / "ray"), tracking_uri=tracking_uri, address=cluster.address,
            autoscaler_config=str(cluster.config_path),
        )
        env = os.environ | {"RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-c", SWEEP_IN_A_FRESH_PROCESS, json.dumps({"overrides": overrides, "settings": settings})],
                              env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["complete"]
        client = MlflowClient(tracking_uri)
        parent = client.get_run(result["parent_run_id"])
        runs = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{result['parent_run_id']}'")
    return parent, runs


GPU_NODES = """
import json, sys, ray
ray.init(address=sys.argv[1], include_dashboard=False)
print(json.dumps([node["NodeID"] for node in ray.nodes() if node["Resources"].get("GPU", 0) > 0]))
"""


def gpu_nodes(cluster) -> set[str]:
    """Every live node with a GPU, asked from a fresh process (see :func:`gpu_sweep`)."""
    env = os.environ | {"RAY_AUTH_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-c", GPU_NODES, cluster.address], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_a_cnn_sweep_makes_the_autoscaler_add_a_gpu_worker_and_packs_four_trials_on_it(gpu_cluster, toy_dataset, tmp_path):
    assert not gpu_nodes(gpu_cluster)  # nothing with a GPU is up when the sweep starts
    parent, runs = gpu_sweep(gpu_cluster, toy_dataset, tmp_path, "cnn-gpu", {"optim.lr": {"grid": [1e-3, 2e-3, 3e-3, 4e-3]}}, 4)
    assert parent.data.tags["use_gpu"] == "True (autoscaler config: GPU node types gpu_worker)"
    assert len(runs) == 4 and {run.info.status for run in runs} == {"FINISHED"}
    nodes = {run.data.tags["node_id"] for run in runs}
    assert len(nodes) == 1 and nodes == gpu_nodes(gpu_cluster)  # one GPU worker was added, and all four trials ran on it
    assert {run.data.tags["gpu_ids"] for run in runs} == {json.dumps(["0"])}  # a quarter of GPU 0 each


@pytest.mark.slow
def test_resnet18_trials_take_a_whole_gpu_each(gpu_cluster, toy_dataset, tmp_path):
    parent, runs = gpu_sweep(gpu_cluster, toy_dataset, tmp_path, "resnet-gpu", {"optim.lr": {"grid": [1e-3, 2e-3]}}, 2,
                             **{"model.backbone": "resnet18"})
    assert len(runs) == 2 and {run.info.status for run in runs} == {"FINISHED"}
    assert len({run.data.tags["node_id"] for run in runs}) == 2  # two trials of one GPU each need two one-GPU workers
    assert {run.data.tags["gpu_ids"] for run in runs} == {json.dumps(["0"])}
