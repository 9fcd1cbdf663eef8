"""compute.*: bf16 autocast, channels_last and torch.compile take the CPU through the same code as the GPU."""

from __future__ import annotations

import pytest
import torch

from galaxy_da.accel import CompiledOrEager, autocast, memory_format
from galaxy_da.checkpoint import LAST, load_checkpoint
from galaxy_da.config import ModelConfig, load_config
from galaxy_da.models.registry import build_model
from galaxy_da.train import train

TINY = ["model.width=4", "data.batch_size=16", "optim.steps_per_epoch=2", "optim.epochs=2", "optim.warmup_epochs=1",
        "data.eval_batch_size=64", "align.method=laplacian", "align.ot.weight=0.5", "model.dropout=0.0"]


def weights(data, folder, *extra):
    train(load_config(None, [f"data.path={data}", *TINY, *extra]), checkpoint_dir=folder)
    return load_checkpoint(folder / LAST)


def test_layout_follows_the_backbone_unless_set():
    assert memory_format("cnn", None) == torch.channels_last and memory_format("resnet18", None) == torch.channels_last
    assert memory_format("steerable", None) == torch.contiguous_format and memory_format("cnn", False) == torch.contiguous_format
    assert memory_format("steerable", True) == torch.channels_last


def test_precision_auto_is_fp32_on_cpu_and_bf16_runs_the_convolutions_in_bfloat16():
    model = build_model(ModelConfig(width=2), 3, 3, 9)
    images = torch.randn(4, 3, 9, 9)
    with autocast(torch.device("cpu"), "auto"):
        assert model(images)[1].dtype == torch.float32
    with autocast(torch.device("cpu"), "bf16"):
        assert model(images)[1].dtype == torch.bfloat16


def test_channels_last_changes_the_layout_not_the_training(toy_dataset, tmp_path):
    contiguous = weights(toy_dataset, tmp_path / "a", "compute.channels_last=false")
    last = weights(toy_dataset, tmp_path / "b", "compute.channels_last=true")
    assert all(torch.allclose(contiguous["model"][k], last["model"][k], atol=1e-4) for k in contiguous["model"])


def test_a_bf16_trial_trains_close_to_the_fp32_one(toy_dataset, tmp_path):
    fp32 = weights(toy_dataset, tmp_path / "a", "compute.precision=fp32")
    bf16 = weights(toy_dataset, tmp_path / "b", "compute.precision=bf16")
    for a, b in zip(fp32["history"], bf16["history"]):
        assert b["train/loss"] == pytest.approx(a["train/loss"], rel=0.1)
    assert any(not torch.equal(fp32["model"][k], bf16["model"][k]) for k in fp32["model"])  # it did run in bf16


def test_a_compile_that_fails_warns_once_and_runs_eagerly():
    model = build_model(ModelConfig(width=2), 3, 3, 9).eval()
    images = torch.randn(4, 3, 9, 9)
    with pytest.warns(RuntimeWarning, match="compute.compile='no_such_backend' failed"):
        forward = CompiledOrEager(model, "no_such_backend")
    assert torch.equal(forward(images)[0], model(images)[0])


@pytest.mark.slow
def test_a_compiled_model_trains_like_the_eager_one(toy_dataset, tmp_path):
    eager = weights(toy_dataset, tmp_path / "a")
    compiled = weights(toy_dataset, tmp_path / "b", "compute.compile=aot_eager")
    assert all(torch.allclose(eager["model"][k], compiled["model"][k], atol=1e-5) for k in eager["model"])
