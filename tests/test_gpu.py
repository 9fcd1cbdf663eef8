"""The CUDA path: steps that never wait on the host, bf16 and channels_last, and the device data and solver. Skipped without a GPU."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from galaxy_da.config import load_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
TINY = ["model.width=4", "data.batch_size=16", "optim.steps_per_epoch=4", "optim.epochs=2", "optim.warmup_epochs=1", "data.eval_batch_size=64"]


def cfg(data, *extra):
    return load_config(None, [f"data.path={data}", *TINY, *extra])


@pytest.mark.parametrize("method", ["laplacian+topk_ot", "dann", "sinkhorn"])
def test_an_epoch_of_steps_waits_on_the_device_exactly_once(method, toy_dataset):
    """CUDA's sync debug mode flags every host wait; an epoch's only one is the StepLog read at its end."""
    from galaxy_da.train import Trainer, epoch_knobs

    name, _, extra = method.partition("+")
    trainer = Trainer(cfg(toy_dataset, f"align.method={name}", "align.ot.weight=0.5" if extra else "align.ot.weight=0", "device=cuda",
                          "align.weighting=trainable", "align.entropy_weight=0.1"), device=torch.device("cuda"))
    trainer._train_steps(1, epoch_knobs(trainer.cfg, 1))  # warm caches (allocator, cuDNN autotuning)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            record = trainer._train_steps(1, epoch_knobs(trainer.cfg, 1))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) == 1, [str(w.message) for w in syncs]
    assert record["train/loss_align"] > 0


def test_a_bf16_channels_last_trial_trains_on_cuda(toy_dataset, tmp_path):
    from galaxy_da.train import train

    result = train(cfg(toy_dataset, "device=cuda", "align.method=laplacian", "align.ot.weight=0.5"), checkpoint_dir=tmp_path)
    assert [r["epoch"] for r in result.history] == [0, 1] and all(torch.isfinite(torch.tensor(r["train/loss"])) for r in result.history)


def test_batches_made_on_the_gpu_equal_those_made_on_the_cpu(toy_dataset):
    from galaxy_da.data.loader import BatchStream, ChannelStats
    from galaxy_da.data.reader import ShardDataset

    source = ShardDataset(str(toy_dataset)).training_view().source("train")
    stats = ChannelStats.of(source.images)
    on = {device: list(BatchStream(source, 16, stats, seed=1, augment=True, device=device).epoch(3)) for device in ("cpu", "cuda")}
    for (x_cpu, y_cpu), (x_gpu, y_gpu) in zip(on["cpu"], on["cuda"]):
        assert torch.equal(x_cpu, x_gpu.cpu()) and torch.equal(y_cpu, y_gpu.cpu())


def test_the_sinkhorn_solver_gives_the_cpu_plan_on_cuda():
    from galaxy_da.losses.sinkhorn import entropic_plan
    from galaxy_da.losses.topk_ot import squared_distances

    g = torch.Generator().manual_seed(0)
    x, y = F.normalize(torch.randn(64, 32, generator=g), dim=1).double(), F.normalize(torch.randn(48, 32, generator=g) + 0.3, dim=1).double()
    cost = squared_distances(x, y)
    eps = 0.05 * cost.median()
    plan_cpu, iterations_cpu = entropic_plan(cost, eps, max_iter=1000, tol=1e-9)
    plan_gpu, iterations_gpu = entropic_plan(cost.cuda(), eps.cuda(), max_iter=1000, tol=1e-9)
    assert torch.allclose(plan_cpu, plan_gpu.cpu(), rtol=1e-9, atol=1e-12) and iterations_cpu.item() == iterations_gpu.item()
