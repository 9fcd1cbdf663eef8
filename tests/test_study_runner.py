"""The studies' runner (bench/jobs.py, bench/oracle.py, bench/study.py): cheap, and the same numbers as before.

- a split is read once per process inside ``cached_reads`` and the trial trained
  on cached splits is the trial trained on fresh reads, bit for bit;
- the ORACLE trace scores the in-memory model on scored epochs only, and gives the
  numbers the checkpoint on disk gives;
- an evaluation computes only the metric groups asked for;
- a study's BENCHMARKS.md section is replaced in place, nothing else touched.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from galaxy_da.config import load_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
TINY = {"model.width": 4, "data.batch_size": 16, "optim.steps_per_epoch": 2, "optim.epochs": 4, "optim.warmup_epochs": 1,
        "align.method": "laplacian", "data.eval_batch_size": 64}


def tiny_config(dataset: Path, **overrides):
    return load_config(None, {**TINY, "data.path": str(dataset), **overrides})


def test_inside_cached_reads_a_split_is_read_once_and_training_is_unchanged(toy_dataset, monkeypatch):
    from galaxy_da.data import reader
    from galaxy_da.train import Trainer

    reads = []
    original = reader.ShardDataset._read_image_set
    monkeypatch.setattr(reader.ShardDataset, "_read_image_set", lambda self, *key: reads.append(key) or original(self, *key))
    fresh = Trainer(tiny_config(toy_dataset))
    list(fresh.epochs())
    fresh_reads = len(reads)
    with reader.cached_reads():  # each trainer seeds the global random streams: build and train one after the other
        first = Trainer(tiny_config(toy_dataset))
        list(first.epochs())
        second = Trainer(tiny_config(toy_dataset))
        list(second.epochs())
    assert fresh_reads == 3 and len(reads) == 2 * fresh_reads  # the second trainer read nothing
    for cached in (first, second):
        assert [r["train/loss"] for r in cached.history] == [r["train/loss"] for r in fresh.history]
        assert all((a == b).all() for a, b in zip(cached.model.state_dict().values(), fresh.model.state_dict().values()))
    reader.ShardDataset(str(toy_dataset)).training_view().source("train")
    assert len(reads) == 2 * fresh_reads + 1  # outside the block every read goes to the shards again


def test_the_oracle_trace_scores_the_in_memory_model_on_scored_epochs_only(toy_dataset, tmp_path):
    from galaxy_da.checkpoint import LAST, load_checkpoint
    from galaxy_da.data.reader import ShardDataset
    from galaxy_da.train import Trainer
    from oracle import OracleTrace, score_state

    cfg = tiny_config(toy_dataset, **{"selection.eval_every": 2})
    trainer, trace = Trainer(cfg, checkpoint_dir=tmp_path), OracleTrace(cfg)
    on_disk = {}
    test = ShardDataset(str(toy_dataset)).evaluation_view().labelled("target", "test")
    for record in trainer.epochs():
        trace(record, trainer)
        on_disk[record["epoch"]] = score_state(load_checkpoint(tmp_path / LAST), cfg.model, test, "target")
    scored = [r["epoch"] for r in trainer.history if "select/src_val" in r]
    assert [row["epoch"] for row in trace.epochs] == scored == [2, 3]  # warm-up epoch 0 and unscored epoch 1 skipped
    for row in trace.epochs:
        assert row["macro_f1"] == pytest.approx(on_disk[row["epoch"]]["macro_f1"], abs=1e-9)
        assert row["predicted"] == on_disk[row["epoch"]]["predicted"]
    assert trace.best_scored()["macro_f1"] == max(row["macro_f1"] for row in trace.epochs)


def test_an_evaluation_computes_only_the_groups_it_is_asked_for(toy_dataset, tmp_path):
    from galaxy_da.eval import evaluate_run
    from galaxy_da.trial import run_trial

    cfg = tiny_config(toy_dataset, **{"tracking.tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"})
    outcome = run_trial(cfg)
    table = evaluate_run(outcome.run_id, cfg.tracking.tracking_uri, log=False, groups=("splits", "probe"), echo=False)
    full = evaluate_run(outcome.run_id, cfg.tracking.tracking_uri, log=False, echo=False)
    assert "eval/tgt_test/macro_f1" in table and "eval/domain/probe_auc" in table
    assert not any(key.startswith("eval/select/") or key == "eval/domain/sinkhorn" for key in table)
    assert {"eval/select/dev", "eval/select/snd", "eval/domain/sinkhorn"} <= set(full)
    assert {key: table[key] for key in table} == {key: full[key] for key in table}
    with pytest.raises(ValueError, match="unknown metric groups"):
        evaluate_run(outcome.run_id, cfg.tracking.tracking_uri, log=False, groups=("splits", "tsne"), echo=False)


def test_a_study_section_is_replaced_in_place(tmp_path):
    from study import read_section, write_section

    benchmarks = tmp_path / "BENCHMARKS.md"
    benchmarks.write_text("# Benchmarks\n\nintro\n")
    write_section(benchmarks, "quality", "| a |\n|---|")
    write_section(benchmarks, "sweep_study", "sweep text")
    write_section(benchmarks, "quality", "| b |\n|---|")
    text = benchmarks.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n") and text.count("study:quality -->") == 2
    assert read_section(benchmarks, "quality") == "| b |\n|---|" and read_section(benchmarks, "sweep_study") == "sweep text"


def test_a_resumed_study_keeps_the_timings_of_its_own_protocol_only(tmp_path):
    from study import invocation_timings, timing_text

    first = {"command": "python bench/x.py", "wall_seconds": 600.0, "jobs_run": 4, "load_average": (2.0, 2.0, 2.0), "parent_run_id": "p1"}
    redraw = {**first, "wall_seconds": 30.0, "jobs_run": 0, "parent_run_id": "p2"}
    previous = tmp_path / "x.json"
    previous.write_text(json.dumps({"protocol": 1, "timings": [first]}))
    assert invocation_timings(previous, 1, redraw) == [json.loads(json.dumps(first)), redraw]
    assert invocation_timings(previous, 2, redraw) == [redraw]  # another protocol's runs are not this table's
    assert invocation_timings(tmp_path / "absent.json", 1, first) == [first]
    text = timing_text([first, redraw], "python bench/x.py --seeds 0")
    assert text.startswith("wall time 10.0 min for 4 jobs run by `python bench/x.py` (") and "p2" not in text  # the redraw ran no job
    assert timing_text([first], "python bench/x.py").startswith("wall time 10.0 min for 4 jobs (")  # the heading's command: not repeated
    inside = {**first, "command": f"python bench/x.py --out {ROOT / 'bench' / 'results'} --data /elsewhere/data"}
    assert "run by `python bench/x.py --out bench/results --data /elsewhere/data`" in timing_text([inside], "python bench/x.py")
    from study import shown_command

    assert shown_command(f"galaxy-da train data.path={ROOT / 'data' / 'q'} out=/elsewhere seed=1") == "galaxy-da train data.path=data/q out=/elsewhere seed=1"


@pytest.mark.slow
def test_the_quality_study_smoke_runs_its_whole_pipeline(smoke_out, tmp_path):
    out = smoke_out("quality")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "quality.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    from quality import PROTOCOL

    payload = json.loads((out / "quality.json").read_text())
    assert payload["protocol"] == PROTOCOL and payload["smoke"] is True
    methods = {r["method"] for r in payload["results"]}
    best = payload["best_distance_by_label_free_score"]
    assert {"source_only", "target_oracle", "dann", best, f"{best}+topk_ot", "source_only · shared norm", f"{best} · shared norm"} <= methods
    seeds = lambda method: sorted(r["seed"] for r in payload["results"] if r["method"] == method)
    key_seeds = sorted(payload["seeds"] + payload["more_seeds"])
    for method in ("source_only", "dann", best, "dann · shared norm"):
        assert seeds(method) == key_seeds  # the key rows are paired on every seed
    for row in payload["results"]:
        assert row["epochs_trained"] == 3 and row["oracle_epochs"] and all(e["scored"] for e in row["oracle_epochs"])
        assert 0.0 <= row["metrics"]["eval/tgt_test/macro_f1"] <= 1.0 and "eval/select/dev" not in row["metrics"]
    assert (out / "quality.png").stat().st_size > 10_000
    section = (out / "BENCHMARKS.md").read_text().split("<!-- study:quality -->", 1)[1].split("<!-- /study:quality -->", 1)[0]
    assert "| source_only |" in section and "Wilcoxon p" in section and "galaxy-da train --config configs/benchmark.yaml" in section
    assert (ROOT / "BENCHMARKS.md").read_text().count("<!-- study:quality -->") <= 1  # the smoke wrote a copy, not the real file
    again = subprocess.run([sys.executable, str(ROOT / "bench" / "quality.py"), "--smoke", "--out", str(out)],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "jobs already done" in again.stdout and not re.search(r"^\[\d+/\d+\] ", again.stdout, re.M)  # continued from the job log: nothing re-run


def test_seed_drift_reports_each_methods_moves_on_the_seeds_both_runs_trained():
    from seed_drift import drift, drift_table

    row = lambda method, seed, f1: {"method": method, "seed": seed, "metrics": {"eval/tgt_test/macro_f1": f1}}
    before = [row("dann", 0, 0.70), row("dann", 1, 0.60), row("dann", 2, 0.50), row("sinkhorn", 0, 0.75), row("only_before", 0, 0.1)]
    after = [row("sinkhorn", 0, 0.76), row("sinkhorn", 9, 0.10), row("dann", 0, 0.20), row("dann", 1, 0.62), row("dann", 2, 0.50)]
    rows = drift(before, after)
    assert [r["method"] for r in rows] == ["sinkhorn", "dann"]  # after's order; a method in one run only is left out
    sinkhorn, dann = rows
    assert sinkhorn["seeds"] == [0] and sinkhorn["median_after"] == pytest.approx(0.76)  # seed 9 ran only after
    assert dann["median_abs_move"] == pytest.approx(0.02) and dann["largest_move"] == {"seed": 0, "before": 0.70, "after": 0.20}
    assert "| dann | 3 | 0.600 | 0.500 | 0.020 | 0.500 (seed 0: 0.700 → 0.200) |" in drift_table(rows)
