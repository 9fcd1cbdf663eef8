"""Population-based training: a trainer takes new knobs at a checkpoint, and PBT's copies are recorded."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from galaxy_da.checkpoint import LAST, load_checkpoint
from galaxy_da.config import load_config
from galaxy_da.sweep.settings import SweepSettings

ROOT = Path(__file__).resolve().parents[1]
TINY = {"model.width": 4, "data.batch_size": 16, "optim.steps_per_epoch": 2, "align.method": "laplacian",
        "align.ot.weight": 0.5, "data.eval_batch_size": 64, "optim.epochs": 4, "optim.warmup_epochs": 1, "optim.min_lr": 1e-7}


def test_a_trainer_continues_another_members_state_under_new_knobs(toy_dataset, tmp_path):
    from galaxy_da.sweep.lineage import weights_sha256
    from galaxy_da.train import Trainer, epoch_knobs

    source_cfg = load_config(None, {**TINY, "data.path": str(toy_dataset), "align.weight": 1.0, "align.topk": 5, "optim.lr": 2e-3})
    source = Trainer(source_cfg, checkpoint_dir=tmp_path / "a")
    for _ in source.epochs(until_epoch=2):
        pass
    (tmp_path / "b").mkdir()
    shutil.copy2(tmp_path / "a" / LAST, tmp_path / "b" / LAST)  # what PBT's exploit hands the member

    perturbed = load_config(None, {**TINY, "data.path": str(toy_dataset), "align.weight": 1.2, "align.topk": 10, "optim.lr": 1.6e-3})
    member = Trainer(perturbed, checkpoint_dir=tmp_path / "b", resume=True)
    assert weights_sha256(member.model.state_dict()) == weights_sha256(load_checkpoint(tmp_path / "a" / LAST)["model"])
    assert member.next_epoch == 2 and member.restored_config["align"]["weight"] == 1.0
    assert member.optimizer.state_dict()["state"].keys() == source.optimizer.state_dict()["state"].keys()
    assert epoch_knobs(member.cfg, 2).align_weight == pytest.approx(1.2 * epoch_knobs(source_cfg, 2).align_weight)
    record = next(member.epochs())
    assert record["epoch"] == 2 and record["schedule/topk"] == 10.0 and record["lr"] < 1.6e-3 * 1.0001
    assert member.history[:2] == source.history  # the learned schedule runs along the lineage


def test_pbt_needs_the_random_searcher_and_pb2_a_continuous_knob(toy_dataset, tmp_path):
    from galaxy_da.config import ConfigError
    from galaxy_da.sweep.schedulers import check_scheduler

    base = load_config(None, {**TINY, "data.path": str(toy_dataset)}).model_dump(mode="json")
    with pytest.raises(ConfigError, match="searcher='random'"):
        check_scheduler(base, SweepSettings(name="p", space={"align.weight": {"loguniform": [0.1, 1]}}, scheduler="pbt"))
    with pytest.raises(ConfigError, match="continuous knobs only"):
        check_scheduler(base, SweepSettings(name="p", space={"align.topk": {"choice": [1, 5]}}, scheduler="pb2", searcher="random"))
    with pytest.raises(ConfigError, match="must also be in the search space"):
        check_scheduler(base, SweepSettings(name="p", space={"align.topk": {"choice": [1, 5]}}, scheduler="pbt", searcher="random",
                                            mutations={"optim.lr": {"loguniform": [1e-4, 1e-2]}}))


def checkpoint_of(experiment: Path, trial_id: str, epoch: int) -> Path:
    """The Tune checkpoint of ``trial_id`` whose ``last.pt`` is at ``epoch``."""
    for folder in sorted((experiment / f"trial_{trial_id}").glob("checkpoint_*")):
        if load_checkpoint(folder / LAST)["epoch"] == epoch:
            return folder / LAST
    raise AssertionError(f"no checkpoint of trial {trial_id} at epoch {epoch}")


@pytest.mark.slow
def test_pbt_exploit_then_explore_on_a_two_member_population(toy_dataset, tmp_path):
    """The weak member copies the strong one's weights (same sha256) and perturbs its alignment weight by x0.8 or x1.2."""
    from mlflow.tracking import MlflowClient

    from galaxy_da.sweep.lineage import weights_sha256
    from galaxy_da.sweep.tuner import run_sweep

    cfg = load_config(None, {**TINY, "data.path": str(toy_dataset), "optim.epochs": 6, "tracking.experiment": "pbt"})
    settings = SweepSettings(
        name="pbt", space={"optim.lr": {"grid": [1e-6, 3e-3]}, "align.weight": {"loguniform": [0.5, 2.0]}},
        mutations={"align.weight": {"loguniform": [0.5, 2.0]}}, scheduler="pbt", searcher="random", num_samples=1,
        perturbation_interval=1, quantile_fraction=0.5, resample_probability=0.0, max_concurrent=2, num_cpus=2,
        storage_path=str(tmp_path / "ray"), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    result = run_sweep(cfg, settings)
    assert result.complete
    client = MlflowClient(result.tracking_uri)
    events = json.loads(Path(client.download_artifacts(result.parent_run_id, "population/lineage.json", str(tmp_path))).read_text())
    assert events, "no member copied another: the test saw no exploit"
    for event in events:
        assert event["from_trial"] != event["member"] and event["epoch"] >= 1  # never inside warm-up (epoch 0)
        copied = load_checkpoint(checkpoint_of(tmp_path / "ray" / "pbt", event["from_trial"], event["epoch"]))["model"]
        assert event["weights_sha256"] == weights_sha256(copied)
        weight = event["knobs"]["align.weight"]
        assert weight["after"] / weight["before"] == pytest.approx(0.8) or weight["after"] / weight["before"] == pytest.approx(1.2)
        assert event["knobs"]["optim.lr"]["after"] == event["knobs"]["optim.lr"]["before"] == 3e-3  # copied, not mutated
    files = {f.path for f in client.list_artifacts(result.parent_run_id, "population")}
    assert {"population/lineage.md", "population/learned_schedules.png"} <= files


@pytest.mark.slow
def test_the_pbt_schedules_sweep_smoke_test_runs(toy_dataset, tmp_path):
    command = [sys.executable, str(ROOT / "sweeps" / "pbt_schedules.py"), "--smoke-test", "--data", str(toy_dataset),
               "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--storage-path", str(tmp_path / "ray"), "--num-cpus", "2",
               "--perturbation-interval", "1", "optim.epochs=3"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["complete"] and summary["trials"] == 3
