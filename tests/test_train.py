import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from galaxy_da.checkpoint import LAST, load_checkpoint
from galaxy_da.config import load_config
from galaxy_da.losses.alignment import ALIGNMENT_METHODS, NoAlignment
from galaxy_da.optim import LR_SCHEDULES
from galaxy_da.step_log import NonFiniteLossError
from galaxy_da.train import train
from tests.conftest import tamper_with_shard

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = ["source_only", "dann", "laplacian_fixed", "laplacian_trainable", "laplacian_trainable_blur"]
BACKBONES = [["model.backbone=cnn"], ["model.backbone=steerable", "model.group=C8"], ["model.backbone=steerable", "model.group=D4"], ["model.backbone=resnet18"]]
TINY = ["model.width=4", "data.batch_size=16", "optim.steps_per_epoch=2", "optim.epochs=2", "optim.warmup_epochs=1", "data.eval_batch_size=64"]


def tiny(data_path, *extra, config=None):
    return load_config(config, [f"data.path={data_path}", *TINY, *extra])


def test_reference_experiment_configs_validate():
    for name in EXPERIMENTS + ["smoke"]:
        assert load_config(REPO / "configs" / f"{name}.yaml").optim.epochs >= 1


@pytest.mark.slow
@pytest.mark.parametrize("backbone", BACKBONES, ids=["cnn", "steerable-C8", "steerable-D4", "resnet18"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_trains_two_epochs_on_every_backbone(experiment, backbone, toy_dataset_odd, tmp_path):
    cfg = tiny(toy_dataset_odd, *backbone, config=REPO / "configs" / f"{experiment}.yaml")
    result = train(cfg, checkpoint_dir=tmp_path)
    assert [r["epoch"] for r in result.history] == [0, 1]
    last = result.history[-1]
    assert all(torch.isfinite(torch.tensor(last[k])) for k in ("train/loss", "src_val/acc", "select/src_val"))
    if cfg.align.method != "none":
        assert last["schedule/aligning"] == 1.0 and "train/loss_align" in last
    assert (tmp_path / LAST).is_file() and result.best_epoch == 1  # warm-up epoch 0 is not eligible


def test_two_plus_two_epochs_with_resume_equal_four(toy_dataset_odd, tmp_path):
    overrides = ["optim.epochs=4", "align.method=laplacian", "align.ot.weight=0.5", "align.entropy_weight=0.02", "model.dropout=0.3"]
    straight = train(tiny(toy_dataset_odd, *overrides), checkpoint_dir=tmp_path / "straight")
    train(tiny(toy_dataset_odd, *overrides), checkpoint_dir=tmp_path / "split", until_epoch=2)
    resumed = train(tiny(toy_dataset_odd, *overrides), checkpoint_dir=tmp_path / "split", resume=True)
    a = load_checkpoint(tmp_path / "straight" / LAST)["model"]
    b = load_checkpoint(tmp_path / "split" / LAST)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r["train/loss"] for r in straight.history] == [r["train/loss"] for r in resumed.history]


def test_seeded_runs_are_deterministic_and_seeds_differ(toy_dataset, tmp_path):
    runs = [train(tiny(toy_dataset, f"seed={seed}", "align.method=energy"), checkpoint_dir=tmp_path / str(i)) for i, seed in enumerate((3, 3, 4))]
    losses = [[r["train/loss"] for r in run.history] for run in runs]
    assert losses[0] == losses[1] and losses[0] != losses[2]


def test_non_finite_loss_names_step_and_component(toy_dataset, tmp_path, monkeypatch):
    class Poisoned(NoAlignment):
        def forward(self, source, target, *, blur, grl_strength, source_masses=None):
            return source.sum() * float("nan")

    monkeypatch.setitem(ALIGNMENT_METHODS, "poisoned", Poisoned)
    cfg = tiny(toy_dataset, "optim.warmup_epochs=0")
    cfg.align.__dict__["method"] = "poisoned"  # bypass validation: the name is test-only
    with pytest.raises(NonFiniteLossError, match=r"epoch 0, step 0: loss component 'align' is nan"):
        train(cfg, checkpoint_dir=tmp_path)


def test_a_loss_that_turns_nan_later_is_traced_to_its_first_step(toy_dataset, tmp_path, monkeypatch):
    """The check reads the epoch's per-step values once, at its end, and still names the first bad step."""

    class LateNaN(NoAlignment):
        calls = 0

        def forward(self, source, target, *, blur, grl_strength, source_masses=None):
            LateNaN.calls += 1
            return source.sum() * (float("nan") if LateNaN.calls == 3 else 0.0)

    monkeypatch.setitem(ALIGNMENT_METHODS, "late_nan", LateNaN)
    cfg = tiny(toy_dataset, "optim.warmup_epochs=0", "optim.steps_per_epoch=4", "optim.grad_clip=null")
    cfg.align.__dict__["method"] = "late_nan"  # bypass validation: the name is test-only
    with pytest.raises(NonFiniteLossError, match=r"epoch 0, step 2: loss component 'align' is nan"):
        train(cfg, checkpoint_dir=tmp_path)
    assert not (tmp_path / LAST).exists()  # the poisoned epoch is never checkpointed


def scramble_target_label_summaries(manifest_path: Path) -> None:
    """The manifest's per-class target counts and any target class priors, moved as the labels were (class c -> c+1),
    so that a read of either (a target label by another route) would change training too."""
    manifest = json.loads(manifest_path.read_text())
    names = manifest["class_names"]
    rotate = lambda per_class: {names[(i + 1) % len(names)]: per_class[name] for i, name in enumerate(names)}
    for survey in manifest["counts"]["target"].values():
        for split, per_class in survey.items():
            survey[split] = rotate(per_class)
    for survey in (manifest.get("targets") or {}).values():  # a rendered dataset's survey facts (the toy has none)
        if "class_prior" in survey:
            survey["class_prior"] = rotate(survey["class_prior"])
        if "class_counts" in survey:
            survey["class_counts"] = [survey["class_counts"][(i - 1) % len(names)] for i in range(len(names))]
    manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("audit, label_shift", [(False, "none"), (True, "none"), (False, "bbse"), (False, "em")],
                         ids=["selection rule", "every rule audited", "label shift by BBSE", "label shift by EM"])
def test_target_labels_never_reach_training(audit, label_shift, toy_dataset, tmp_path):
    """Scrambling every target label leaves training, every label-free score and the estimated target priors bit-for-bit unchanged."""
    scrambled = tmp_path / "scrambled"
    shutil.copytree(toy_dataset, scrambled)
    for shard in (scrambled / "target").glob("*.parquet"):
        table = pq.read_table(shard)
        flipped = pa.array([(v + 1) % 3 for v in table["label"].to_pylist()], pa.int8())
        pq.write_table(table.set_column(table.schema.get_field_index("label"), "label", flipped), shard)
    scramble_target_label_summaries(scrambled / "manifest.json")
    overrides = ["align.method=sinkhorn", "align.entropy_weight=0.1", "selection.rule=entropy", "optim.warmup_epochs=0",
                 "data.verify_hashes=false",  # the scrambled shards no longer match the manifest's sha256, on purpose
                 f"selection.audit_rules={str(audit).lower()}", f"align.label_shift={label_shift}"]
    a = train(tiny(toy_dataset, *overrides), checkpoint_dir=tmp_path / "a")
    b = train(tiny(scrambled, *overrides), checkpoint_dir=tmp_path / "b")
    timings = {"train/images_per_s", "train/step_s"}
    strip = lambda h: [{k: v for k, v in r.items() if k not in timings} for r in h]
    assert strip(a.history) == strip(b.history)
    assert all(("select/dev" in r) == audit for r in a.history)
    assert all(any(key.startswith("label_shift/prior/") for key in r) == (label_shift != "none") for r in a.history)


def test_early_stopping_uses_patience(toy_dataset, tmp_path):
    result = train(tiny(toy_dataset, "optim.epochs=12", "optim.warmup_epochs=0", "selection.patience=1", "optim.lr=1e-6", "optim.min_lr=1e-7"), checkpoint_dir=tmp_path)
    assert result.stopped_early and len(result.history) < 12


@pytest.mark.parametrize("schedule", sorted(LR_SCHEDULES))
def test_lr_schedules_reach_min_lr_at_the_last_epoch(schedule):
    values = [LR_SCHEDULES[schedule](e, 10, 1e-2, 1e-5) for e in range(10)]
    assert values[0] == pytest.approx(1e-2)
    assert values[-1] == pytest.approx(1e-5 if schedule != "constant" else 1e-2)
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_cli_train_logs_a_complete_mlflow_run(toy_dataset_odd, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = [sys.executable, "-m", "galaxy_da.cli", "train", "--config", str(REPO / "configs" / "smoke.yaml"),
               f"data.path={toy_dataset_odd}", "optim.epochs=2", "data.max_source=64", "--tracking-uri", uri]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    run_id = next(json.loads(line) for line in lines if line.startswith("{"))["run_id"]  # the JSON line for scripts
    # epochs numbered from 1 on screen (galaxy_da.epoch_numbers); where the run went; the next command last
    assert lines[0].startswith("epoch 1/2  warm-up") and lines[1].startswith("epoch 2/2  loss")
    assert "best src_val" in lines[2] and lines[2].endswith("at epoch 2") and lines[3].startswith("epoch 1 was warm-up")
    assert lines[4] == f"logged to MLflow: run {run_id}, experiment 'smoke', store {uri}"
    assert lines[-1].startswith(f"next: python -m galaxy_da.eval --run-id {run_id} --tracking-uri {uri}")

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.data.params["align.topk"] == "5" and run.data.params["model.backbone"] == "cnn"
    for tag in ("config_hash", "data_manifest_hash", "git_commit", "backbone", "method", "topk", "schedule"):
        assert run.data.tags.get(tag), tag
    assert [m.step for m in client.get_metric_history(run_id, "src_val/macro_f1")] == [1]  # warm-up epoch 0 is not scored
    # smoke.yaml warms up for one epoch; the OT solver's convergence is logged once alignment is on
    assert [m.step for m in client.get_metric_history(run_id, "align/topk_ot_marginal_error_max")] == [1]
    per_step = client.get_metric_history(run_id, "step/align/topk_ot_marginal_error")  # every step of epoch 1
    assert sorted(m.step for m in per_step) == list(range(8, 16)) and max(m.value for m in per_step) < 1e-4
    artifacts = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "checkpoints")} | {a.path for a in client.list_artifacts(run_id, "plots")}
    assert {"config.yaml", "history.json", "checkpoints/best.pt", "checkpoints/last.pt", "plots/training_history.png"} <= artifacts
    assert not (tmp_path / "mlruns").exists()  # artifacts live beside the store, not in the cwd


def mlflow_runs(db: Path) -> list[tuple[str, str]]:
    """(name, status) of every run in a sqlite store (none if the store was never created)."""
    import sqlite3

    if not db.is_file():
        return []
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT name, status FROM runs").fetchall()


@pytest.mark.parametrize("fault", ["tampered shard", "missing dataset"])
def test_a_bad_dataset_fails_in_one_line_before_any_mlflow_run_exists(fault, toy_dataset, tmp_path):
    data = tmp_path / "data"
    if fault == "tampered shard":
        shutil.copytree(toy_dataset, data)
        tamper_with_shard(data / "source" / "part-00000.parquet")
    db = tmp_path / "mlflow.db"
    command = [sys.executable, "-m", "galaxy_da.cli", "train", f"data.path={data}", *TINY, "--tracking-uri", f"sqlite:///{db}"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    expected = f"{data}/source/part-00000.parquet: sha256" if fault == "tampered shard" else f"{data}: no manifest.json"
    assert done.stderr.startswith(f"galaxy-da train: error: {expected}") and done.stderr.count("\n") == 1, done.stderr
    assert mlflow_runs(db) == []  # no empty FAILED run left behind


def test_the_shard_check_can_be_switched_off(toy_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(toy_dataset, data)
    tamper_with_shard(data / "source" / "part-00000.parquet")
    assert len(train(tiny(data, "data.verify_hashes=false"), checkpoint_dir=tmp_path / "ckpt").history) == 2


def final_weights(checkpoint_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(checkpoint_dir / LAST)["model"]


def test_a_report_callback_cannot_shift_the_trainers_random_stream(toy_dataset, tmp_path):
    """An analysis hook that builds a model and samples (bench/quality.py's oracle did) changes nothing."""
    import numpy as np

    from galaxy_da.models.registry import build_model

    overrides = ["optim.epochs=3", "align.method=dann", "model.dropout=0.3"]

    def greedy_hook(record, checkpoint_dir):
        build_model(tiny(toy_dataset).model, 3, 3, 17)
        torch.rand(1000)
        np.random.rand(1000)

    train(tiny(toy_dataset, *overrides), checkpoint_dir=tmp_path / "plain")
    train(tiny(toy_dataset, *overrides), greedy_hook, checkpoint_dir=tmp_path / "hooked")
    plain, hooked = final_weights(tmp_path / "plain"), final_weights(tmp_path / "hooked")
    assert all(torch.equal(plain[key], hooked[key]) for key in plain)


def test_scoring_every_k_epochs_skips_warmup_and_changes_no_weight(toy_dataset, tmp_path):
    overrides = ["optim.epochs=6", "optim.warmup_epochs=1", "align.method=energy"]
    every = train(tiny(toy_dataset, *overrides), checkpoint_dir=tmp_path / "every")
    sparse = train(tiny(toy_dataset, *overrides, "selection.eval_every=2"), checkpoint_dir=tmp_path / "sparse")
    scored = lambda result: [r["epoch"] for r in result.history if "select/src_val" in r]
    assert scored(every) == [1, 2, 3, 4, 5]  # never the warm-up epoch
    assert scored(sparse) == [2, 4, 5]  # every 2nd post-warm-up epoch, and the last
    a, b = final_weights(tmp_path / "every"), final_weights(tmp_path / "sparse")
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert sparse.best_epoch in scored(sparse)


@pytest.mark.parametrize("rule, reads", [("src_val", {"source_val"}), ("entropy", {"target"}), ("dev", {"source_val", "target"})])
def test_an_epoch_is_scored_on_the_splits_its_rule_reads_only(rule, reads, toy_dataset, tmp_path, monkeypatch):
    import galaxy_da.train as train_module

    predicted = []
    real_predict = train_module.predict

    def counting_predict(model, data, stats, **options):
        predicted.append(len(data))
        return real_predict(model, data, stats, **options)

    monkeypatch.setattr(train_module, "predict", counting_predict)
    cfg = tiny(toy_dataset, f"selection.rule={rule}", "optim.warmup_epochs=0", "optim.epochs=1", "align.method=energy")
    result = train(cfg, checkpoint_dir=tmp_path)
    from galaxy_da.trial_data import load_trial_data

    data = load_trial_data(cfg)
    sizes = {"source_val": len(data.source_val), "target": len(data.target_adapt)}
    assert sorted(predicted) == sorted(sizes[split] for split in reads)
    assert ("src_val/macro_f1" in result.history[0]) == ("source_val" in reads)


def test_checkpoints_carry_the_cuda_generator_state_slot(toy_dataset, tmp_path):
    train(tiny(toy_dataset, "optim.epochs=1", "optim.warmup_epochs=0"), checkpoint_dir=tmp_path)
    state = load_checkpoint(tmp_path / LAST)
    assert "cuda_rng" in state
    assert (state["cuda_rng"] is None) == (not torch.cuda.is_available())


def test_auditing_the_rules_scores_every_rule_keeps_each_scored_model_and_changes_no_choice(toy_dataset, tmp_path):
    """selection.audit_rules: select/<rule> for every label-free rule on each scored epoch and scored/epoch-<k>.pt;
    the weights, best.pt and the selected epoch are those of the plain run (selection stays on selection.rule)."""
    from galaxy_da.checkpoint import BEST
    from galaxy_da.selection import SELECTION_RULES
    from galaxy_da.train import scored_checkpoint

    overrides = ["optim.epochs=3", "optim.warmup_epochs=1", "align.method=energy", "selection.rule=src_val"]
    plain = train(tiny(toy_dataset, *overrides), checkpoint_dir=tmp_path / "plain")
    audited = train(tiny(toy_dataset, *overrides, "selection.audit_rules=true"), checkpoint_dir=tmp_path / "audited")
    scored = [r["epoch"] for r in audited.history if "select/src_val" in r]
    assert scored == [1, 2]
    for record in audited.history:
        keys = {k for k in record if k.startswith("select/")}
        assert keys == ({f"select/{rule}" for rule in SELECTION_RULES} if record["epoch"] in scored else set())
        assert all(math.isfinite(record[k]) for k in keys)
    assert all(set(k for k in r if k.startswith("select/")) <= {"select/src_val"} for r in plain.history)
    assert sorted(p.name for p in (tmp_path / "audited" / "scored").iterdir()) == [Path(scored_checkpoint(e)).name for e in scored]
    last_scored = load_checkpoint(tmp_path / "audited" / scored_checkpoint(2))
    assert last_scored["epoch"] == 2 and "optimizer" not in last_scored
    assert all(torch.equal(last_scored["model"][k], v) for k, v in final_weights(tmp_path / "audited").items())
    assert not (tmp_path / "plain" / "scored").exists()
    assert audited.best_epoch == plain.best_epoch and audited.best_score == plain.best_score
    a, b = final_weights(tmp_path / "plain"), final_weights(tmp_path / "audited")
    assert all(torch.equal(a[key], b[key]) for key in a)
    best_a, best_b = load_checkpoint(tmp_path / "plain" / BEST)["model"], load_checkpoint(tmp_path / "audited" / BEST)["model"]
    assert all(torch.equal(best_a[key], best_b[key]) for key in best_a)
