"""The sweep study (bench/sweep_study.py, bench/rule_picks.py): each rule judged by its own choice, exact replays, fresh seeds.

- each label-free rule picks its own epoch in every trial and its own trial;
  regret and Spearman rho follow from those picks, over all trials, pruned ones
  included and marked (hand-made rows, hand-computed values);
- a retrained configuration is configs/benchmark.yaml plus the trial's overrides,
  and equals the trial's config but for seed, data path and tracking (a Laplacian
  pick keeps its Laplacian);
- the untuned baseline comes only from a quality table of protocol 2 or later with >= 10
  source-only seeds, and fresh seeds never overlap a seed that chose anything;
- ``--smoke`` runs the whole study (sweep, analysis, fresh jobs, JSON, BENCHMARKS
  section, plots) as a subprocess (slow).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from galaxy_da.config import load_config, save_config
from galaxy_da.sweep import space as search_space

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from rule_picks import plot_rule_picks, ranked_trials, rule_quality, rule_table, statement  # noqa: E402
from sweep_study import (  # noqa: E402
    BENCHMARK_CONFIG, SPACE, best_untuned_recipe, check_fresh_seeds, replayable, sweep_base, top_configurations,
)

NAN = math.nan


def checkpoint(run_id, epoch, src_val, entropy, f1, pruned=False):
    return {"run_id": run_id, "trial": f"trial-{run_id}", "pruned": pruned, "epoch": epoch,
            "scores": {"src_val": src_val, "entropy": entropy, "dev": NAN}, "target_f1": f1}


# Three trials; B was pruned by ASHA after its first scored epoch. The ORACLE's best checkpoint is B, epoch 1 (0.80).
ROWS = [
    checkpoint("A", 1, 0.5, 0.1, 0.40), checkpoint("A", 2, 0.7, 0.3, 0.50),
    checkpoint("B", 1, 0.6, 0.9, 0.80, pruned=True),
    checkpoint("C", 1, 0.9, 0.2, 0.30), checkpoint("C", 2, 0.8, NAN, 0.60),
]


def test_each_rule_picks_its_own_epoch_and_trial_and_is_scored_on_that_choice():
    study = rule_quality(ROWS, ["src_val", "entropy", "dev"])
    assert study["oracle_best"] == {"run_id": "B", "trial": "trial-B", "epoch": 1, "pruned": True, "target_f1": 0.80}
    assert (study["checkpoints"], study["trials"], study["pruned_trials"]) == (5, 3, 1)

    src_val = study["rules"]["src_val"]  # own epochs: A2 (0.7), B1 (0.6), C1 (0.9) -> picks C1
    assert [(p["run_id"], p["epoch"]) for p in src_val["picks"]] == [("A", 2), ("B", 1), ("C", 1)]
    assert (src_val["pick"]["run_id"], src_val["pick"]["epoch"]) == ("C", 1)
    assert src_val["regret"] == pytest.approx(0.80 - 0.30)
    assert src_val["spearman"] == pytest.approx(-1.0)  # scores 0.7, 0.6, 0.9 against F1 0.5, 0.8, 0.3
    assert (src_val["trials"], src_val["pruned_trials"]) == (3, 1)

    entropy = study["rules"]["entropy"]  # own epochs: A2 (0.3), B1 (0.9), C1 (0.2; C2's NaN is never picked)
    assert [(p["run_id"], p["epoch"]) for p in entropy["picks"]] == [("A", 2), ("B", 1), ("C", 1)]
    assert entropy["pick"] == {"run_id": "B", "trial": "trial-B", "epoch": 1, "pruned": True, "target_f1": 0.80, "score": 0.9}
    assert entropy["regret"] == 0.0 and entropy["spearman"] == pytest.approx(1.0)

    dev = study["rules"]["dev"]  # never scored: no pick, no regret
    assert dev["trials"] == 0 and dev["pick"] is None and math.isnan(dev["regret"])

    assert [(r["run_id"], r["epoch"]) for r in ranked_trials(ROWS, "src_val")] == [("C", 1), ("A", 2), ("B", 1)]
    text = statement(study)
    assert "All 3 trials are included, 1 of them pruned" in text and "own epoch" in text
    table = rule_table(study)
    assert "| src_val | 50.0 | trial-C, epoch 1 | 0.300 | -1.00 | 3 (1) |" in table
    assert "| entropy | 0.0 | trial-B†, epoch 1 | 0.800 | +1.00 | 3 (1) |" in table


def test_the_rule_plot_draws_every_rule(tmp_path):
    study = rule_quality(ROWS, ["src_val", "entropy", "dev"])
    path = plot_rule_picks(ROWS, study, "hand-made", tmp_path / "rules.png")
    assert path.stat().st_size > 10_000


def test_an_audited_trial_is_read_back_epoch_by_epoch_and_scored_on_target_test(toy_dataset, tmp_path):
    """A tracked trial with selection.audit_rules logs every rule's score and each scored epoch's model
    (checkpoints/scored/); collect() reads them back, and scores the models as galaxy_da.eval scores best.pt."""
    from mlflow.tracking import MlflowClient

    from galaxy_da.data.reader import ShardDataset
    from galaxy_da.eval import evaluate_run
    from galaxy_da.selection import SELECTION_RULES
    from galaxy_da.tracking import ensure_experiment
    from galaxy_da.trial import run_trial
    from scored_checkpoints import collect

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    parent = client.create_run(ensure_experiment(client, "audit", uri)).info.run_id
    cfg = load_config(BENCHMARK_CONFIG, {
        "data.path": str(toy_dataset), "data.batch_size": 16, "data.eval_batch_size": 64, "optim.steps_per_epoch": 2,
        "optim.epochs": 3, "optim.warmup_epochs": 1, "align.method": "laplacian", "selection.audit_rules": True,
        "tracking.tracking_uri": uri, "tracking.experiment": "audit"})
    outcome = run_trial(cfg, parent_run_id=parent)
    test = ShardDataset(str(toy_dataset)).evaluation_view().labelled("target", "test")
    rows, skipped = collect(client, parent, list(SELECTION_RULES), test)

    assert skipped == {} and [row["epoch"] for row in rows] == [1, 2] and not any(row["pruned"] for row in rows)
    history = {record["epoch"]: record for record in outcome.history}
    for row in rows:
        assert row["scores"] == pytest.approx({rule: history[row["epoch"]][f"select/{rule}"] for rule in SELECTION_RULES})
    best = evaluate_run(outcome.run_id, uri, log=False, plots=False, groups=("splits",), echo=False)
    assert next(row for row in rows if row["epoch"] == outcome.best_epoch)["target_f1"] == pytest.approx(best["eval/tgt_test/macro_f1"])


class RecordedRuns:
    """The two MLflow client calls top_configurations makes, over configs written to disk."""

    def __init__(self, configs, tags):
        self.configs, self.tags = configs, tags

    def download_artifacts(self, run_id, path, dst):
        save_config(self.configs[run_id], Path(dst) / path)
        return str(Path(dst) / path)

    def get_run(self, run_id):
        return SimpleNamespace(data=SimpleNamespace(tags=self.tags[run_id]))


@pytest.mark.parametrize("method", ["laplacian", "sinkhorn", "energy", "dann"])
def test_a_retrained_pick_is_the_trial_itself_on_the_benchmark_config(method, tmp_path):
    """benchmark.yaml (align.method none) + overrides, seed replaced = the trial's config but seed, data and tracking."""
    base = sweep_base(tmp_path / "quality", {"optim.epochs": 3, "optim.warmup_epochs": 1})
    sampled = {"align.method": method, "align.weight": 0.37, "align.blur": 2.0, "align": "topk-10", "schedules.align_weight": "sigmoid-ramp"}
    trial = search_space.trial_config(base.model_dump(mode="json"), SPACE, sampled)
    trial.data.path = str((tmp_path / "quality").resolve())  # the sweep logs absolute paths
    runs = RecordedRuns({"r1": trial}, {"r1": {"sweep.align.method": method}})
    ranked = [{"run_id": "r1", "trial": "t", "pruned": False, "epoch": 2, "scores": {"src_val": 0.7}, "target_f1": 0.5}]
    top = top_configurations(ranked, runs, 1)

    overrides = top[0]["overrides"]
    assert overrides["align.method"] == method and overrides["selection.audit_rules"] is True
    assert not any(key == "seed" or key == "data.path" or key.startswith("tracking.") for key in overrides)
    retrained = load_config(BENCHMARK_CONFIG, {**overrides, "seed": 100, "data.path": "elsewhere"})
    assert replayable(retrained.flat()) == replayable(trial.flat())
    assert retrained.seed == 100 and retrained.align.method == method and retrained.optim.epochs == 3
    assert json.loads(json.dumps(top))[0]["overrides"] == overrides  # pbt_study.py reads it back from the JSON


def quality_table(path: Path, protocol, seeds: int) -> Path:
    medians = {"source_only": 0.40, "dann": 0.45, "laplacian": 0.55, "target_oracle": 0.90, "laplacian · shared norm": 0.70}
    results = [{"method": m, "seed": s, "metrics": {"eval/tgt_test/macro_f1": f1 + 0.001 * s}} for m, f1 in medians.items() for s in range(seeds)]
    path.write_text(json.dumps({"protocol": protocol, "results": results} if protocol else {"results": results}))
    return path


@pytest.mark.parametrize("protocol, seeds", [(None, 10), (1, 10), (2, 3)])
def test_a_superseded_or_thin_quality_table_is_refused_in_one_line(protocol, seeds, tmp_path):
    path = quality_table(tmp_path / "quality.json", protocol, seeds)
    with pytest.raises(SystemExit) as refused:
        best_untuned_recipe(path)
    message = str(refused.value)
    assert "\n" not in message and str(path) in message and "bench/quality.py" in message and "--baseline" in message


@pytest.mark.parametrize("protocol", [2, 3])
def test_the_baseline_is_the_best_recipe_of_a_protocol_2_or_later_table(protocol, tmp_path):
    """Recipes only: never the target-oracle (an upper bound) nor a re-run row."""
    recipe, seeds = best_untuned_recipe(quality_table(tmp_path / "quality.json", protocol, 10))
    assert recipe == "laplacian" and seeds == set(range(10))


def test_the_study_refuses_a_missing_quality_table_before_any_compute(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "sweep_study.py"), "--out", str(tmp_path), "--quality-json",
                           str(tmp_path / "none.json")], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode != 0 and done.stderr.strip().count("\n") == 0, done.stderr
    assert "none.json" in done.stderr and "run bench/quality.py first" in done.stderr
    assert not (tmp_path / "mlflow").exists() and not (tmp_path / "ray_results").exists()


def test_fresh_seeds_never_overlap_a_seed_that_chose():
    choosing = {"sweep trials": {0}, "quality table": set(range(10))}
    check_fresh_seeds([100, 101, 102], choosing)
    with pytest.raises(SystemExit, match=r"the sweep trials used \[0\]; the quality table used \[0, 9\]"):
        check_fresh_seeds([0, 9, 100], choosing)
    with pytest.raises(SystemExit, match="repeated"):
        check_fresh_seeds([100, 100], choosing)


# --------------------------------------------------------------------------- the whole study, at smoke size


@pytest.mark.slow
def test_the_smoke_study_runs_sweep_analysis_fresh_seeds_tables_and_plots_and_continues(smoke_out, tmp_path):
    from mlflow.tracking import MlflowClient

    smoke_out("")
    command = [sys.executable, str(ROOT / "bench" / "sweep_study.py"), "--smoke", "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    payload = json.loads((tmp_path / "sweep_study.json").read_text())

    assert payload["smoke"] and payload["trials"] == 4 and payload["skipped"] == {}
    assert payload["baseline"] == "laplacian" and payload["fresh_seeds"] == [100]
    assert "pruned" in payload["analysis"] and "own epoch" in payload["analysis"]
    for rule in ("src_val", "entropy", "dev", "snd"):  # every rule scored every trial, by its own choice
        quality = payload["rules"][rule]
        assert quality["trials"] == 4 and math.isfinite(quality["regret"]) and quality["regret"] >= 0
        assert quality["pick"]["score"] == max(p["score"] for p in quality["picks"])

    from galaxy_da.sweep.stops import announced_stop

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    experiment = str(tmp_path / "ray_results" / payload["sweep"])  # what ASHA itself announced, not the tag the study read
    stopped = {row["run_id"]: announced_stop(experiment, client.get_run(row["run_id"]).data.tags["ray_trial_id"]) == "asha"
               for row in payload["checkpoints"]}
    assert all(row["pruned"] == stopped[row["run_id"]] for row in payload["checkpoints"])  # ASHA-pruned trials marked
    assert sum(stopped.values()) == payload["pruned_trials"]
    for run_id, pruned in stopped.items():  # scored epochs 1 and 2 (epoch 0 is warm-up); a pruned trial stopped after 1
        epochs = sorted(row["epoch"] for row in payload["checkpoints"] if row["run_id"] == run_id)
        assert epochs == ([1] if pruned else [1, 2])

    top = payload["top"][0]
    trial = load_config(client.download_artifacts(top["run_id"], "config.yaml", str(tmp_path)))
    assert top["overrides"]["align.method"] == trial.align.method
    retrained = load_config(BENCHMARK_CONFIG, {**top["overrides"], "seed": 100, "data.path": "elsewhere"})
    assert replayable(retrained.flat()) == replayable(trial.flat())

    fresh = {(r["method"], r["seed"]): r["metrics"]["eval/tgt_test/macro_f1"] for r in payload["fresh"]}
    assert set(fresh) == {(m, 100) for m in ("sweep #1", "untuned laplacian", "source_only", "target_oracle")}
    assert all(0 <= f1 <= 1 for f1 in fresh.values())
    assert {"gain_points", "best_rule", "best_rule_regret_points"} <= set(payload["goals"])

    section = (tmp_path / "BENCHMARKS.md").read_text().split("<!-- study:sweep_study -->", 1)[1].split("<!-- /study:sweep_study -->")[0]
    assert "Every label-free rule by its own choice" in section and "| dev |" in section and "sweep #1" in section
    assert str(tmp_path) not in (ROOT / "BENCHMARKS.md").read_text()  # the smoke wrote into its copy only
    for plot in ("sweep_study_rules.png", "sweep_study_fresh.png"):
        assert (tmp_path / plot).stat().st_size > 10_000

    again = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)  # continues: nothing retrained
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "already finished" in again.stdout and "4 of 4 jobs already done" in again.stdout
    assert json.loads((tmp_path / "sweep_study.json").read_text())["parent_run_id"] == payload["parent_run_id"]
