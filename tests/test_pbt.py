"""Population-based training: a trainer takes new knobs at a checkpoint, PBT's copies are recorded, the copying
member's run shows the knobs in force and counts what it re-trains, and the explore step stays in the declared space."""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

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


def test_pbt_needs_the_random_searcher_pb2_a_continuous_knob_and_asha_no_synchronous_mode(toy_dataset, tmp_path):
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
    with pytest.raises(ConfigError, match="pbt/pb2 setting"):
        check_scheduler(base, SweepSettings(name="p", space={"optim.lr": {"loguniform": [1e-4, 1e-2]}}, synchronous=True))


EDGES = {  # one knob of every numeric kind, and a choice
    "align.weight": {"loguniform": [0.1, 3.0]}, "align.blur": {"uniform": [0.2, 2.0]},
    "optim.steps_per_epoch": {"randint": [1, 4]}, "align.entropy_weight": {"quniform": [0.0, 0.1, 0.02]},
    "align.topk": {"choice": [1, 5, 10]},
}


def inside(config: dict) -> bool:
    """Every knob of ``config`` inside EDGES as declared (randint's upper bound exclusive, quniform on its grid)."""
    q = config["align.entropy_weight"] / 0.02
    return (0.1 <= config["align.weight"] <= 3.0 and 0.2 <= config["align.blur"] <= 2.0
            and isinstance(config["optim.steps_per_epoch"], int) and 1 <= config["optim.steps_per_epoch"] <= 3
            and 0.0 <= config["align.entropy_weight"] <= 0.1 and abs(q - round(q)) < 1e-9 and config["align.topk"] in (1, 5, 10))


def test_pbt_explores_inside_the_declared_space():
    """Members at the bounds, perturbed x0.8/x1.2 (and resampled) 400 times: never outside (Ray alone reaches 3.6, 2.4, 4)."""
    from galaxy_da.sweep.schedulers import build_scheduler

    base = load_config(None, {}).model_dump(mode="json")
    scheduler = build_scheduler(base, SweepSettings(name="p", space=EDGES, scheduler="pbt", searcher="random", resample_probability=0.25))
    random.seed(0)
    highs = {"align.weight": 3.0, "align.blur": 2.0, "optim.steps_per_epoch": 3, "align.entropy_weight": 0.1, "align.topk": 10}
    lows = {"align.weight": 0.1, "align.blur": 0.2, "optim.steps_per_epoch": 1, "align.entropy_weight": 0.0, "align.topk": 1}
    explored = [scheduler._get_new_config(None, SimpleNamespace(config=dict(clone)))[0] for clone in (highs, lows) for _ in range(200)]
    assert all(inside(config) for config in explored)
    assert {config["align.weight"] for config in explored} > {3.0, 0.1}  # still explores


def test_a_population_sweeps_explorations_repeat_for_its_seed_and_asha_leaves_the_generators_alone():
    """Ray's PBT explores with the stdlib generator and takes no seed; the driver seeds it from the sweep's seed."""
    from galaxy_da.sweep.schedulers import build_scheduler
    from galaxy_da.sweep.tuner import seed_population_randomness

    base = load_config(None, {}).model_dump(mode="json")
    member = {"align.weight": 1.0, "align.blur": 1.0, "optim.steps_per_epoch": 2, "align.entropy_weight": 0.05, "align.topk": 5}

    def explorations(seed: int) -> list[dict]:
        settings = SweepSettings(name="p", space=EDGES, scheduler="pbt", searcher="random", seed=seed)
        scheduler = build_scheduler(base, settings)
        seed_population_randomness(settings)
        return [scheduler._get_new_config(None, SimpleNamespace(config=dict(member)))[0] for _ in range(30)]

    assert explorations(3) == explorations(3) and explorations(3) != explorations(4)
    random.seed(11)
    expected = random.random()
    random.seed(11)
    seed_population_randomness(SweepSettings(name="a", space=EDGES, scheduler="asha", searcher="random", seed=3))
    assert random.random() == expected


class FakeTrial:
    """What PB2 reads of a Tune trial."""

    def __init__(self, name: str, config: dict):
        self.name, self.config, self.evaluated_params, self.experiment_tag = name, config, {}, name
        self.run_metadata = SimpleNamespace(checkpoint_manager=SimpleNamespace(checkpoint_config=SimpleNamespace(num_to_keep=None)))

    def __str__(self) -> str:
        return self.name


def test_pb2_explores_a_loguniform_knob_in_log10_coordinates():
    """PB2's GP works on log10(lr) in [-4, -2]; every proposal is 10 ** that coordinate, inside the space."""
    import numpy as np
    from ray.tune.schedulers.pbt import _PBTTrialState

    from galaxy_da.sweep.schedulers import build_scheduler

    space = {"optim.lr": {"loguniform": [1e-4, 1e-2]}, "align.blur": {"uniform": [0.2, 2.0]}}
    scheduler = build_scheduler(load_config(None, {}).model_dump(mode="json"), SweepSettings(name="p", space=space, scheduler="pb2", searcher="random"))
    scheduler.set_search_properties("select/src_val", "max")
    rng = np.random.default_rng(0)
    trials = [FakeTrial(f"t{i}", {"optim.lr": float(10 ** rng.uniform(-4, -2)), "align.blur": float(rng.uniform(0.2, 2.0))}) for i in range(4)]
    for trial in trials:
        scheduler.on_trial_add(SimpleNamespace(search_alg=None), trial)
        assert trial.config["log10:optim.lr"] == pytest.approx(math.log10(trial.config["optim.lr"]))
    for epochs in (2, 4, 6):
        for trial in trials:
            score = -abs(math.log10(trial.config["optim.lr"]) + 3) + 0.1 * rng.normal()
            scheduler._save_trial_state(_PBTTrialState(trial), epochs, {"select/src_val": score, "epochs_done": epochs}, trial)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the GP's fit on 12 noisy points: sklearn convergence notes
        proposals = [scheduler._get_new_config(trials[0], trials[i % 4])[0] for i in range(12)]
    for config in proposals:
        assert -4 <= config["log10:optim.lr"] <= -2 and 0.2 <= config["align.blur"] <= 2.0
        assert config["optim.lr"] == pytest.approx(10 ** config["log10:optim.lr"]) and 1e-4 <= config["optim.lr"] <= 1e-2
    from galaxy_da.sweep.explore import into_space

    # the middle of the GP's box is the log-midpoint 1e-3, not the linear one 5.05e-3
    assert into_space(space)({"log10:optim.lr": -3.0, "optim.lr": None, "align.blur": 9.0}) == {"log10:optim.lr": -3.0, "optim.lr": pytest.approx(1e-3), "align.blur": 2.0}


def test_a_member_that_copies_an_older_checkpoint_shows_the_knobs_in_force_and_counts_what_it_retrains(toy_dataset, tmp_path):
    """B trains epochs 0-2, then continues A's epoch-1 checkpoint with λ 1.2: its run is renamed, re-tagged and
    re-configured, its params record the copy, epoch 2 is logged again (the newer point in force), and it counts 5 epochs."""
    from mlflow.tracking import MlflowClient

    from galaxy_da.config import config_to_yaml
    from galaxy_da.sweep.lineage import config_in_force, record_copy
    from galaxy_da.sweep.trainable import counted_epochs, epochs_trained
    from galaxy_da.trial import TrackedTrial

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def config(weight: float, name: str):
        return load_config(None, {**TINY, "data.path": str(toy_dataset), "align.weight": weight, "tracking.run_name": name,
                                  "tracking.tracking_uri": uri, "tracking.experiment": "pbt-copy"})

    def train(trial, trained: int, last_epoch: int) -> None:
        for record in counted_epochs(trial.epochs(), trial.tracker, trained):
            if record["epoch"] == last_epoch:
                break

    a = TrackedTrial(config(1.0, "weight1"), checkpoint_dir=tmp_path / "a", extra_tags={"sweep.align.weight": "1"})
    train(a, 0, last_epoch=1)
    b = TrackedTrial(config(0.5, "weight0.5"), checkpoint_dir=tmp_path / "b", extra_tags={"sweep.align.weight": "0.5"})
    train(b, 0, last_epoch=2)
    b.interrupt()
    shutil.copy2(tmp_path / "a" / LAST, tmp_path / "b" / LAST)  # PBT's exploit: A's epoch-1 state
    in_force = config(1.2, "weight1.2")
    copy = TrackedTrial(in_force, checkpoint_dir=tmp_path / "b", resume=True, run_id=b.run_id)
    record_copy(copy, "b", {"trial_id": "a", "run_id": a.run_id}, {"sweep.align.weight": "1.2"})
    client = MlflowClient(uri)
    train(copy, epochs_trained(client, b.run_id), last_epoch=3)

    run = client.get_run(b.run_id)
    assert run.info.run_name == "weight1.2" and run.data.tags["sweep.align.weight"] == "1.2"
    assert run.data.tags["config_hash"] == in_force.hash() and run.data.tags["config_hash"] != config(0.5, "weight0.5").hash()
    assert Path(client.download_artifacts(b.run_id, "config.yaml", str(tmp_path))).read_text() == config_to_yaml(in_force)
    assert run.data.params["align.weight"] == "0.5" and run.data.params["pbt.copy-1/align.weight"] == "1.2"  # start, and since copy 1
    assert run.data.params["pbt.copy-1"] == in_force.hash()
    assert config_in_force(run.data.params)["align.weight"] == "1.2"
    retrained = sorted((p for p in client.get_metric_history(b.run_id, "schedule/align_weight") if p.step == 2), key=lambda p: p.timestamp)
    assert len(retrained) == 2 and retrained[-1].value == pytest.approx(copy.trainer.history[2]["schedule/align_weight"])
    assert retrained[-1].value == pytest.approx(retrained[0].value * 1.2 / 0.5)
    assert [p.step for p in client.get_metric_history(b.run_id, "train/loss")] == [0, 1, 2, 2, 3]
    assert epochs_trained(client, b.run_id) == 5 and epochs_trained(client, a.run_id) == 2  # B's own count, not A's


def test_the_config_in_force_is_the_start_params_overridden_by_the_newest_copy_only():
    from galaxy_da.sweep.lineage import config_in_force

    params = {"align.weight": "0.5", "seed": "201", "pbt.copy-1": "h1", "pbt.copy-1/align.weight": "1.2", "pbt.copy-1/seed": "200"}
    assert config_in_force(params) == {"align.weight": "1.2", "seed": "200"}
    assert config_in_force({**params, "pbt.copy-2": "h2"}) == {"align.weight": "0.5", "seed": "201"}  # copy 2: back to the start
    assert config_in_force({**params, "pbt.copy-10": "h", "pbt.copy-10/seed": "7"}) == {"align.weight": "0.5", "seed": "7"}


def checkpoint_of(experiment: Path, trial_id: str, epoch: int) -> Path:
    """The Tune checkpoint of ``trial_id`` whose ``last.pt`` is at ``epoch``."""
    for folder in sorted((experiment / f"trial_{trial_id}").glob("checkpoint_*")):
        if load_checkpoint(folder / LAST)["epoch"] == epoch:
            return folder / LAST
    raise AssertionError(f"no checkpoint of trial {trial_id} at epoch {epoch}")


@pytest.mark.slow
def test_pbt_exploit_then_explore_on_a_two_member_population(toy_dataset, tmp_path):
    """The weak member copies the strong one's weights (same sha256) and perturbs its alignment weight by x0.8 or x1.2
    (clipped to the space); its run then shows that weight, and counts every epoch it trained."""
    from mlflow.tracking import MlflowClient

    from galaxy_da.sweep.leaderboard import TRIAL_TAG, child_runs
    from galaxy_da.sweep.lineage import config_in_force, weights_sha256
    from galaxy_da.sweep.naming import compact_number
    from galaxy_da.sweep.trainable import epochs_trained
    from galaxy_da.sweep.tuner import run_sweep

    cfg = load_config(None, {**TINY, "data.path": str(toy_dataset), "tracking.experiment": "pbt"})
    settings = SweepSettings(
        name="pbt", space={"optim.lr": {"grid": [1e-6, 3e-3]}, "align.weight": {"loguniform": [0.5, 2.0]}},
        mutations={"align.weight": {"loguniform": [0.5, 2.0]}}, scheduler="pbt", searcher="random", num_samples=1,
        perturbation_interval=1, quantile_fraction=0.5, synchronous=True, resample_probability=0.0, max_concurrent=2, num_cpus=2,
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
        assert any(weight["after"] == pytest.approx(min(max(weight["before"] * factor, 0.5), 2.0)) for factor in (0.8, 1.2))
        assert event["knobs"]["optim.lr"]["after"] == event["knobs"]["optim.lr"]["before"]  # copied, not mutated (either member may lead)
    files = {f.path for f in client.list_artifacts(result.parent_run_id, "population")}
    assert {"population/lineage.md", "population/learned_schedules.png"} <= files
    runs = {run.data.tags[TRIAL_TAG]: run for run in child_runs(client, client.get_run(result.parent_run_id).info.experiment_id, result.parent_run_id)}
    for member, run in runs.items():
        last = [e for e in events if e["member"] == member][-1:]
        if last:  # the weight of its newest copy is the one its run shows
            after = last[0]["knobs"]["align.weight"]["after"]
            assert run.data.tags["sweep.align.weight"] == f"{after:.4g}" and compact_number(after) in run.info.run_name
            assert float(config_in_force(run.data.params)["align.weight"]) == pytest.approx(after)
        assert epochs_trained(client, run.info.run_id) == len(client.get_metric_history(run.info.run_id, "train/loss"))  # every epoch trained, once each


@pytest.mark.slow
def test_pb2_copies_and_explores_a_loguniform_knob_inside_its_interval(toy_dataset, tmp_path):
    """PB2 in a real sweep: the weak member copies the strong one and its λ (explored in log10) stays in [0.5, 2]."""
    from mlflow.tracking import MlflowClient

    from galaxy_da.sweep.leaderboard import child_runs
    from galaxy_da.sweep.tuner import run_sweep

    cfg = load_config(None, {**TINY, "data.path": str(toy_dataset), "tracking.experiment": "pb2"})
    settings = SweepSettings(
        name="pb2", space={"optim.lr": {"grid": [1e-6, 3e-3]}, "align.weight": {"loguniform": [0.5, 2.0]}},
        mutations={"align.weight": {"loguniform": [0.5, 2.0]}}, scheduler="pb2", searcher="random", num_samples=1,
        perturbation_interval=1, quantile_fraction=0.5, synchronous=True, max_concurrent=2, num_cpus=2,
        storage_path=str(tmp_path / "ray"), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    result = run_sweep(cfg, settings)
    assert result.complete
    client = MlflowClient(result.tracking_uri)
    events = json.loads(Path(client.download_artifacts(result.parent_run_id, "population/lineage.json", str(tmp_path))).read_text())
    assert events, "no member copied another: the test saw no exploit"
    assert all(0.5 <= event["knobs"]["align.weight"]["after"] <= 2.0 for event in events)
    runs = child_runs(client, client.get_run(result.parent_run_id).info.experiment_id, result.parent_run_id)
    assert all(0.5 <= float(run.data.tags["sweep.align.weight"]) <= 2.0 for run in runs)


@pytest.mark.slow
def test_the_pbt_schedules_sweep_smoke_test_runs(toy_dataset, tmp_path):
    command = [sys.executable, str(ROOT / "sweeps" / "pbt_schedules.py"), "--smoke-test", "--data", str(toy_dataset),
               "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--storage-path", str(tmp_path / "ray"), "--num-cpus", "2",
               "--perturbation-interval", "1", "optim.epochs=3"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["complete"] and summary["trials"] == 3
