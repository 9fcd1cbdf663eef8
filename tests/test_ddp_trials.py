"""Multi-worker trials through Ray Train's TorchTrainer on a real local Ray: they report, checkpoint, resume and are pruned like any other."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from galaxy_da.checkpoint import LAST, load_checkpoint
from galaxy_da.config import load_config

TWO_WORKERS = {"model.width": 4, "data.batch_size": 8, "optim.steps_per_epoch": 3, "data.eval_batch_size": 64,
               "model.dropout": 0.0, "align.method": "laplacian", "resources.workers_per_trial": 2}


def config(data: Path, **extra):
    return load_config(None, {**TWO_WORKERS, "data.path": str(data), **extra})


@pytest.mark.slow
def test_a_sweep_of_two_worker_trials_reports_each_scored_epoch_and_prunes_the_worse_trial(toy_dataset, tmp_path):
    from mlflow.tracking import MlflowClient

    from galaxy_da.sweep.settings import SweepSettings
    from galaxy_da.sweep.tuner import run_sweep

    cfg = config(toy_dataset, **{"optim.epochs": 3, "optim.warmup_epochs": 1, "optim.lr_schedule": "constant", "optim.min_lr": 0.0,
                                 "tracking.experiment": "ddp-sweep"})
    settings = SweepSettings(
        name="ddp", space={"optim.lr": {"grid": [3e-3, 1e-12]}}, searcher="random", num_samples=1, max_concurrent=1, num_cpus=3,
        storage_path=str(tmp_path / "ray"), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    result = run_sweep(cfg, settings)
    assert result.complete
    client = MlflowClient(result.tracking_uri)
    assert client.get_run(result.parent_run_id).data.tags["use_gpu"].startswith("False")
    runs = {run.data.tags["sweep.optim.lr"]: run for run in client.search_runs(
        [client.get_run(result.parent_run_id).info.experiment_id], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")}
    assert set(runs) == {"0.003", "1e-12"}
    for run in runs.values():
        assert run.info.status == "FINISHED" and run.data.tags["workers"] == "2"
        assert json.loads(run.data.tags["gpu_ids"]) == [[], []] and len(run.data.tags["node_id"].split(",")) == 2
        assert {f.path for f in client.list_artifacts(run.info.run_id, "checkpoints")} == {"checkpoints/best.pt", "checkpoints/last.pt"}
    good, bad = runs["0.003"], runs["1e-12"]
    assert [m.step for m in client.get_metric_history(good.info.run_id, "select/src_val")] == [1, 2]  # every scored epoch reported
    assert "stopped_by" not in good.data.tags
    assert bad.data.tags["stopped_by"] == "asha" and bad.data.tags["stopped_after_epochs"] == "2"  # pruned at the first rung
    assert [m.step for m in client.get_metric_history(bad.info.run_id, "train/loss")] == [0, 1]  # the workers never ran ahead


@pytest.mark.slow
def test_a_two_worker_trial_stopped_and_resumed_from_its_checkpoint_ends_where_one_worker_with_the_double_batch_does(toy_dataset, tmp_path):
    import ray

    from galaxy_da.sweep.ddp import DistributedTrainer
    from galaxy_da.sweep.ray_start import init_local_ray
    from galaxy_da.train import train

    # scored: epochs 2 and 3. SGD: Adam would turn the float32 rounding of gradients summed in another order into steps
    # up to 1e-5 apart on near-zero-gradient weights (tests/test_distributed.py's trial_config)
    cfg = config(toy_dataset, **{"optim.epochs": 4, "optim.warmup_epochs": 1, "selection.eval_every": 2, "optim.optimizer": "sgd"})
    folder = tmp_path / "trial"
    folder.mkdir()
    options = dict(checkpoint_dir=folder, use_gpu=False, cpus_per_worker=1, storage_path=str(tmp_path / "train"))
    init_local_ray(num_cpus=2, include_dashboard=False)
    try:
        first = DistributedTrainer(cfg, resume=False, name="first", **options)
        records = first.epochs()
        assert [next(records)["epoch"], next(records)["epoch"]] == [0, 1]
        assert not (folder / LAST).exists()  # warm-up epoch 0 and epoch 1 are not scored: nothing to checkpoint yet
        assert next(records)["epoch"] == 2 and load_checkpoint(folder / LAST)["epoch"] == 2
        first.close()  # as when the scheduler stops the trial after a scored epoch
        second = DistributedTrainer(cfg, resume=True, name="second", **options)
        assert second.next_epoch == 3 and [r["epoch"] for r in second.history] == [0, 1, 2]
        assert [r["epoch"] for r in second.epochs()] == [3] and second.finished
        second.close()
    finally:
        ray.shutdown()
    one = cfg.model_copy(update={"data": cfg.data.model_copy(update={"batch_size": 16}), "resources": cfg.resources.model_copy(update={"workers_per_trial": 1})})
    train(one, checkpoint_dir=tmp_path / "one")
    a, b = load_checkpoint(tmp_path / "one" / LAST)["model"], load_checkpoint(folder / LAST)["model"]
    assert all(torch.allclose(a[key].double(), b[key].double(), rtol=0, atol=1e-5) for key in a)
