"""W-GPU trials run at most floor(GPUs / W) at once: counted on a real Ray instance with logical GPUs and the real cluster YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from galaxy_da.config import ConfigError, load_config
from galaxy_da.sweep.capacity import addable_gpus, fit_concurrency
from galaxy_da.sweep.gpus import configured_node_types
from galaxy_da.sweep.settings import SweepSettings
from galaxy_da.sweep.ray_start import init_local_ray
from galaxy_da.sweep.tuner import prepare_base

ROOT = Path(__file__).resolve().parents[1]
GPU_YAML = str(ROOT / "cluster" / "gpu.yaml")


def test_the_cloud_cluster_can_add_eight_gpus_and_a_gpu_type_without_a_limit_is_unbounded():
    assert addable_gpus(configured_node_types(GPU_YAML)) == 8  # gpu_worker: 1 GPU x max_workers 8
    assert addable_gpus({"head": {"resources": {"CPU": 8}}, "big": {"resources": {"GPU": 4}}}) == float("inf")


@pytest.fixture(scope="module")
def three_gpus():
    """A local Ray instance with 3 logical GPUs and no autoscaler."""
    import ray

    init_local_ray(num_cpus=1, num_gpus=3, include_dashboard=False)
    yield
    ray.shutdown()


def settings(tmp_path: Path, max_concurrent: int, autoscaler_config: str) -> SweepSettings:
    return SweepSettings(name="cap", space={"optim.lr": {"loguniform": [1e-4, 1e-2]}}, max_concurrent=max_concurrent,
                         autoscaler_config=autoscaler_config, storage_path=str(tmp_path))


def no_autoscaler(tmp_path: Path) -> str:
    path = tmp_path / "bootstrap.yaml"
    path.write_text("available_node_types:\n  head:\n    resources: {CPU: 1}\n")
    return str(path)


def test_surplus_w_gpu_trials_are_capped_at_the_gpus_up_now_divided_by_w_with_one_line(three_gpus, tmp_path, capsys):
    base = prepare_base(load_config(None, {"resources.workers_per_trial": 2}))
    capped = fit_concurrency(base, settings(tmp_path, 4, no_autoscaler(tmp_path)), has_gpu=True)
    assert capped.max_concurrent == 1  # floor(3 / 2)
    assert capsys.readouterr().out.strip() == ("--max-concurrent 4 capped at 1: the cluster has or can add 3 GPUs "
                                               "and each trial holds workers_per_trial=2 of them")


def test_the_gpus_the_autoscaler_can_add_count_and_one_worker_or_cpu_trials_are_left_alone(three_gpus, tmp_path):
    two = prepare_base(load_config(None, {"resources.workers_per_trial": 2}))
    assert fit_concurrency(two, settings(tmp_path, 16, GPU_YAML), has_gpu=True).max_concurrent == 4  # floor(max(3, 8) / 2)
    assert fit_concurrency(two, settings(tmp_path, 3, GPU_YAML), has_gpu=True).max_concurrent == 3  # fits already
    assert fit_concurrency(two, settings(tmp_path, 16, no_autoscaler(tmp_path)), has_gpu=False).max_concurrent == 16
    one = prepare_base(load_config(None, {}))
    assert fit_concurrency(one, settings(tmp_path, 16, no_autoscaler(tmp_path)), has_gpu=True).max_concurrent == 16


def test_a_trial_wider_than_the_cluster_is_refused_naming_gpus_w_and_max_concurrent(three_gpus, tmp_path):
    base = prepare_base(load_config(None, {}))
    space = {"optim.lr": {"loguniform": [1e-4, 1e-2]}, "resources.workers_per_trial": {"choice": [2, 4]}}  # the widest counts
    wide = SweepSettings(name="wide", space=space, max_concurrent=2, autoscaler_config=no_autoscaler(tmp_path), storage_path=str(tmp_path))
    with pytest.raises(ConfigError, match=r"^resources.workers_per_trial=4: each trial needs 4 GPUs and the cluster has or can add 3; "
                                          r"no trial could start \(--max-concurrent 2\)"):
        fit_concurrency(base, wide, has_gpu=True)
