"""The label-shift study (bench/label_shift_study.py, bench/label_shift_tables.py).

- the estimator is chosen by the label-free selection score, never by a target metric;
- the tables pair seeds against source-only and against each row's marginal version;
- the prior errors, the three goals and their met/missed lines follow the stated thresholds;
- slow: the smoke runs the whole pipeline (two target surveys, 2 seeds a row), writes the
  JSON, the section of a BENCHMARKS.md copy and the plot, and a second run re-runs nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
CLASSES = ["elliptical", "irregular", "spiral"]
TRUTH = {"elliptical": 0.60, "irregular": 0.03, "spiral": 0.37}


def smoke(script: str, out: Path, cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    """``python bench/<script> --smoke --out <out>``, run from ``cwd``; asserts it exited 0, showing its output's end if not."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--smoke", "--out", str(out)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done


def result(method: str, seed: int, f1: float, score: float = 0.0, estimate: dict | None = None) -> dict:
    """A result row as jobs.run_job returns it, with the metrics the study's tables read."""
    metrics = {"eval/tgt_test/macro_f1": f1, "eval/tgt_test/acc": f1, "eval/src_val/acc": 0.9, "oracle/tgt_test_macro_f1_best_epoch": f1}
    metrics |= {f"eval/tgt_test/recall/{c}": 0.5 for c in CLASSES} | {f"eval/tgt_test/prior/{c}": q for c, q in TRUTH.items()}
    for estimator in ("bbse", "em"):
        metrics |= {f"eval/label_shift/{estimator}/prior/{c}": q for c, q in (estimate or TRUTH).items()}
    return {"method": method, "seed": seed, "selection_score": score, "metrics": metrics, "command": f"galaxy-da train {method} seed={seed}"}


def test_the_estimator_is_chosen_by_the_label_free_score_not_by_target_f1():
    from label_shift_tables import best_estimator

    results = [result("desi/laplacian+bbse", s, f1=0.9, score=0.70) for s in range(3)]  # best on target labels
    results += [result("desi/laplacian+em", s, f1=0.4, score=0.80) for s in range(3)]  # best by the label-free score
    results += [result("sdss/laplacian+bbse", 0, f1=0.4, score=0.99)]  # another target's rows do not count
    assert best_estimator(results, "desi", "laplacian", ("bbse", "em")) == "em"
    assert best_estimator(results, "sdss", "laplacian", ("bbse", "em")) == "bbse"
    with pytest.raises(LookupError, match=r"desi/dann\+bbse"):
        best_estimator(results, "desi", "dann", ("bbse", "em"))


def test_the_table_pairs_each_row_with_source_only_and_with_its_marginal_version():
    from label_shift_tables import table

    results = [result("desi/source_only", s, 0.5) for s in range(5)]
    results += [result("desi/laplacian", s, 0.6 + 0.01 * s) for s in range(5)]
    results += [result("desi/laplacian+bbse", s, 0.7 + 0.02 * s) for s in range(5)]
    results += [result("sdss/laplacian+bbse", s, 0.1) for s in range(5)]  # the other target never enters desi's table
    majority = {"class": "spiral", "acc": 0.37, "macro_f1": 0.18}
    text = table(results, "desi", ["source_only", "target_oracle", "laplacian", "laplacian+bbse"], {"laplacian+bbse": "laplacian"}, CLASSES, majority)
    lines = text.splitlines()
    widths = {line.count("|") for line in lines}
    assert len(widths) == 1  # every line, the majority row included, has the header's columns
    assert lines[2].startswith("| majority class (spiral) | – | 0.180 |")
    assert not any(line.startswith("| target_oracle") for line in lines)  # a row that did not run is left out
    bbse = next(line for line in lines if line.startswith("| laplacian+bbse |"))
    cells = [c.strip() for c in bbse.strip("|").split("|")]
    assert cells[1:4] == ["5", "0.740 (0.720–0.760)", "+0.240 (+0.220…+0.260)"]  # vs source-only
    assert cells[4:6] == ["5/5", "0.0625"]  # the smallest two-sided p of 5 seeds
    assert cells[6:9] == ["+0.120 (+0.110…+0.130)", "5/5", "0.0625"]  # vs laplacian, paired by seed
    laplacian = next(line for line in lines if line.startswith("| laplacian |"))
    assert [c.strip() for c in laplacian.strip("|").split("|")][6:9] == ["–", "–", "–"]  # a marginal row has no marginal version


def test_prior_errors_are_per_class_and_the_goal_is_within_five_points_of_every_class():
    from label_shift_tables import prior_errors, prior_goal, prior_table

    off = {"elliptical": 0.54, "irregular": 0.04, "spiral": 0.42}  # 6, 1, 5 points off
    close = {"elliptical": 0.57, "irregular": 0.03, "spiral": 0.40}  # 3, 0, 3 points off
    results = [result("desi/laplacian+em", 0, 0.7, estimate=off)] + [result("desi/laplacian+em", s, 0.7, estimate=close) for s in (1, 2)]
    errors = prior_errors(results, "desi/laplacian+em", "em", CLASSES)
    assert errors["seeds"] == [0, 1, 2] and errors["seeds_within"] == 2
    assert errors["median_abs_error"] == pytest.approx({"elliptical": 0.03, "irregular": 0.0, "spiral": 0.03})
    goal = prior_goal(errors)
    assert goal["met"] and goal["worst_points"] == pytest.approx(3.0)
    missed = prior_goal(prior_errors([result("desi/laplacian+em", s, 0.7, estimate=off) for s in range(3)], "desi/laplacian+em", "em", CLASSES))
    assert not missed["met"] and missed["worst_class"] == "elliptical" and missed["worst_points"] == pytest.approx(6.0)
    line = prior_table([errors], CLASSES).splitlines()[2]
    assert line == "| laplacian+em | em | 3 | 0.600 / 0.030 / 0.370 | 0.570 / 0.030 / 0.400 | 3.0 / 0.0 / 3.0 | 2/3 |"


def test_the_gain_and_no_worse_goals_follow_their_thresholds():
    from label_shift_tables import gain_goal, goal_lines, no_worse_goal, prior_errors, prior_goal

    base = [result("desi/laplacian", s, 0.6) for s in range(10)]
    paired = lambda method, diffs, baseline=0.6: [result(method, s, baseline + d) for s, d in enumerate(diffs)]
    up = [0.061, 0.062, 0.064, 0.0644, 0.066, 0.070, 0.072, 0.0724, 0.075, 0.080]  # median +6.8 points, 10/10, exact p = 2/2^10
    assert gain_goal(base + paired("desi/laplacian+em", up), "desi/laplacian+em", "desi/laplacian")["met"]
    small = [d - 0.035 for d in up]  # significant, but a median of +3.3 points
    assert not gain_goal(base + paired("desi/laplacian+em", small), "desi/laplacian+em", "desi/laplacian")["met"]
    spread = [0.2 if s % 2 else -0.1 for s in range(10)]  # a median of +5 points, but not significant
    assert not gain_goal(base + paired("desi/laplacian+em", spread), "desi/laplacian+em", "desi/laplacian")["met"]
    same = [result("sdss/laplacian", s, 0.7) for s in range(10)]
    slightly = [0.004] * 4 + [-0.006] * 6  # a median of -0.6 points, not significant
    assert no_worse_goal(same + paired("sdss/laplacian+em", slightly, 0.7), "sdss/laplacian+em", "sdss/laplacian")["met"]
    worse = same + paired("sdss/laplacian+em", [-d for d in up], 0.7)  # -6.8 points, every seed
    assert not no_worse_goal(worse, "sdss/laplacian+em", "sdss/laplacian")["met"]
    gained = base + paired("desi/laplacian+em", up)
    goals = {"priors": {"desi": prior_goal(prior_errors(gained, "desi/laplacian+em", "em", CLASSES))},
             "gain": gain_goal(gained, "desi/laplacian+em", "desi/laplacian"), "no_worse": no_worse_goal(worse, "sdss/laplacian+em", "sdss/laplacian")}
    text = goal_lines(goals)
    assert "(DESI-like, `laplacian+em` at its chosen checkpoint, median |error| over seeds: elliptical 0.0, irregular 0.0, spiral 0.0" in text
    assert "median paired difference +6.8 macro-F1 points (IQR +6.4…+7.2), 10/10 seeds better, two-sided Wilcoxon p = 0.00195 — **met**" in text
    assert "median paired difference -6.8 macro-F1 points (IQR -7.2…-6.4), 0/10 seeds better, two-sided Wilcoxon p = 0.00195 — **missed**" in text


def test_the_plot_shows_paired_differences_and_estimated_priors_per_target(tmp_path):
    from label_shift_tables import plot, prior_errors

    results = []
    for target in ("sdss", "desi"):
        results += [result(f"{target}/laplacian", s, 0.6) for s in range(4)]
        results += [result(f"{target}/laplacian+em", s, 0.62 + 0.01 * s, estimate={"elliptical": 0.55, "irregular": 0.05, "spiral": 0.40}) for s in range(4)]
    errors = {t: [prior_errors(results, f"{t}/laplacian+em", "em", CLASSES)] for t in ("sdss", "desi")}
    path = plot(results, ("sdss", "desi"), {"laplacian+em": "laplacian", "dann+em": "dann"}, errors, CLASSES, tmp_path / "label_shift.png")
    assert path.stat().st_size > 10_000


@pytest.mark.slow
def test_the_label_shift_study_smoke_runs_its_whole_pipeline_and_resumes(smoke_out, tmp_path):
    out = smoke_out("label_shift")
    smoke("label_shift_study.py", out, tmp_path, timeout=1800)
    from label_shift_study import PROTOCOL

    payload = json.loads((out / "label_shift.json").read_text())
    assert payload["protocol"] == PROTOCOL and payload["smoke"] is True and payload["targets"] == ["sdss", "desi"]
    assert len(payload["load_average"]) == 3 and payload["timings"][-1]["jobs_run"] == len(payload["results"])
    seeds = lambda method: sorted(r["seed"] for r in payload["results"] if r["method"] == method)
    key_seeds = sorted(payload["seeds"] + payload["more_seeds"])
    assert len(payload["seeds"]) == 1 and len(key_seeds) == 2 and len(payload["results"]) == 28
    for target, estimator in payload["best_estimator_by_label_free_score"].items():
        assert estimator in ("bbse", "em")
        key_rows = ("source_only", "laplacian", f"laplacian+{estimator}", "dann", f"dann+{estimator}")
        for row in ("source_only", "target_oracle", "laplacian", "laplacian+bbse", "laplacian+em", "sinkhorn", "sinkhorn+reach1", "dann", f"dann+{estimator}"):
            assert seeds(f"{target}/{row}") == (key_seeds if row in key_rows else payload["seeds"]), (target, row)  # key rows paired on 2 seeds
        assert payload["goals"]["priors"][target]["method"] == f"{target}/laplacian+{estimator}"
    for row in payload["results"]:
        assert row["epochs_trained"] == 3 and row["oracle_epochs"]
        assert 0.0 <= row["metrics"]["eval/tgt_test/macro_f1"] <= 1.0
        assert {f"eval/tgt_test/prior/{c}" for c in CLASSES} | {f"eval/label_shift/em/prior/{c}" for c in CLASSES} <= set(row["metrics"])
    truth = {t: payload["prior_errors"][t][0]["true"] for t in payload["targets"]}
    assert truth["desi"]["elliptical"] > truth["sdss"]["elliptical"] + 0.2  # the two targets really differ in their priors
    assert {type(payload["goals"][goal]["met"]) for goal in ("gain", "no_worse")} == {bool}
    assert (out / "label_shift.png").stat().st_size > 10_000
    section = (out / "BENCHMARKS.md").read_text().split("<!-- study:label_shift -->", 1)[1].split("<!-- /study:label_shift -->", 1)[0]
    for text in ("**SDSS-like target**", "**DESI-like target**", "| laplacian+em |", "Goal: on DESI-like", "median |error|",
                 "galaxy-da train --config configs/benchmark.yaml", "data.target=desi align.method=laplacian align.label_shift="):
        assert text in section, text
    assert re.search(r"— \*\*(met|missed)\*\*", section)
    assert (ROOT / "BENCHMARKS.md").read_text().count("<!-- study:label_shift -->") == 1  # the smoke wrote a copy, not the real file
    again = smoke("label_shift_study.py", out, tmp_path, timeout=900)
    assert "jobs already done" in again.stdout and not re.search(r"^\[\d+/\d+\] ", again.stdout, re.M)  # continued from the job log: nothing re-run


@pytest.mark.slow
def test_the_prior_estimator_comparison_smoke_scores_every_estimator_on_the_same_checkpoints_and_resumes(smoke_out, tmp_path):
    from galaxy_da.registries import PRIOR_ESTIMATORS

    out = smoke_out("prior_estimators")
    smoke("prior_estimators.py", out, tmp_path, timeout=900)
    payload = json.loads((out / "prior_estimators.json").read_text())
    assert payload["estimators"] == list(PRIOR_ESTIMATORS) and len(payload["results"]) == 2  # one seed on each target
    for target in ("sdss", "desi"):
        entries = payload["prior_errors"][target]
        assert [e["estimator"] for e in entries] == list(PRIOR_ESTIMATORS)
        assert all(e["method"] == f"{target}/laplacian" and e["seeds"] == [0] for e in entries)  # the same checkpoint for all
        assert len({tuple(e["truth"][0]) for e in entries}) == 1 and sum(entries[0]["truth"][0]) == pytest.approx(1.0)
    section = (out / "BENCHMARKS.md").read_text().split("<!-- study:prior_estimators -->", 1)[1].split("<!-- /study:prior_estimators -->", 1)[0]
    assert section.count("| laplacian | em_bcts | 1 |") == 2 and "against `bbse`" in section
    assert "2 of 2 jobs already done" in smoke("prior_estimators.py", out, tmp_path, timeout=600).stdout  # read back from the job log
