"""`sweeps/topk.py --smoke-test` as a newcomer runs it, from a fresh folder; then what they open and run next.

The module fixture runs the smoke sweep once (after a `--resume` with nothing to resume) from a fresh folder
with the default (relative) storage path, and evaluates its best trial as `galaxy-da eval` would. The tests
read it in this order: the console, `--resume` and the trial names; the MLflow UI in headless Chromium
(bench/ui_screenshots.py on the sweep's store: nothing run); last, a second smoke test that replaces the first
(it changes the store). Each test also passes alone: the fixture then runs for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from galaxy_da.sweep.naming import abbreviate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from ui_screenshots import CHROMIUMS, find_chromium  # noqa: E402

pytestmark = pytest.mark.slow
SHOTS = ("table.png", "run_page.png", "charts.png", "default.png", "compare.png", "landing.png", "plain_link.png", "after_toggle.png")


@pytest.fixture(scope="module")
def topk_smoke(tmp_path_factory) -> SimpleNamespace:
    """The smoke sweep in a fresh folder ``tmp``: ``nothing`` (its `--resume` before it ran), ``first`` (its run),
    ``summary`` (its JSON line), ``store``; its best trial evaluated and logged."""
    tmp = tmp_path_factory.mktemp("topk-smoke")
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    smoke = [sys.executable, str(ROOT / "sweeps" / "topk.py"), "--smoke-test", "--tracking-uri", store, "--num-cpus", "2"]
    run = lambda command, timeout: subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=tmp, env=env)
    nothing = run(smoke + ["--resume"], 300)
    first = run(smoke, 900)
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    evaluated = run([sys.executable, "-m", "galaxy_da.eval", "--run-id", summary["best"]["run_id"], "--tracking-uri", store], 600)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    return SimpleNamespace(tmp=tmp, store=store, smoke=smoke, run=run, nothing=nothing, first=first, summary=summary)


def test_the_smoke_test_refuses_an_empty_resume_runs_says_it_is_complete_and_names_its_trials(topk_smoke):
    """`--smoke-test --resume` with nothing to resume is refused in one line; the sweep's `--resume` says it is
    complete; trials are named after what they varied and are not majority-class predictors; the console holds
    no Ray tables, dead links or progress bars."""
    from mlflow.tracking import MlflowClient

    from galaxy_da.eval import evaluate_run

    nothing, first, summary, tmp = topk_smoke.nothing, topk_smoke.first, topk_smoke.summary, topk_smoke.tmp
    assert nothing.returncode == 2 and nothing.stderr.count("\n") == 1, nothing.stdout + nothing.stderr
    assert "--resume: no sweep named 'topk-smoke' in" in nothing.stderr and "(sweeps there: none)" in nothing.stderr
    assert summary["complete"] and summary["experiment_path"] == str(tmp / "ray_results" / "topk-smoke")
    console = first.stdout + first.stderr
    for noise in ("Trial status", "tensorboard", "View run", "Downloading artifacts", "Configuration for experiment", "pid="):
        assert noise not in console, noise
    assert console.count("started") == 3 and "[1/3]" in console and "leaderboard of sweep topk-smoke" in console
    again = topk_smoke.run(topk_smoke.smoke + ["--resume"], 300)
    assert again.returncode == 0 and "sweep 'topk-smoke' is complete: every one of its 3 trials ended, nothing to resume" in again.stdout
    assert json.loads(again.stdout.strip().splitlines()[-1]) | {"best": None} == summary | {"best": None}

    client = MlflowClient(topk_smoke.store)
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.run_name == "sweep-topk-smoke"
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    for run in children:  # the name is the varied values, abbreviated, e.g. sink+topk·k5·lin-0-0.5
        varied = [abbreviate(value) for key, value in run.data.tags.items() if key.startswith("sweep.")]
        assert run.info.run_name != "smoke" and all(value in run.info.run_name for value in varied), run.info.run_name
        assert run.data.tags["scored_on"].startswith("source val ")

    # What `galaxy-da report` compares (it was a three-way tie of majority-class predictors); no figures, for speed.
    evaluations = [evaluate_run(run.info.run_id, topk_smoke.store, log=False) for run in children]
    assert len({metrics["eval/select/oracle"] for metrics in evaluations}) == len({m["eval/select/src_val"] for m in evaluations}) == 3
    assert any(abs(metrics["eval/tgt_test/balanced_acc"] - 1 / 3) > 1e-6 for metrics in evaluations)  # not one class for all


def test_the_sweep_view_opens_on_the_comparison_in_model_training_mode(topk_smoke, tmp_path):
    """bench/ui_screenshots.py on the smoke sweep's store: a real MLflow server, Debian's Chromium driven by
    Playwright. CI installs Chromium (`make ui-deps` in .ci/run); elsewhere the test is skipped, saying so."""
    pytest.importorskip("playwright", reason="Playwright is in the test extra: pip install -e '.[test]'")
    if find_chromium() is None:
        pytest.skip(f"no Chromium on PATH (looked for {', '.join(CHROMIUMS)}): `make ui-deps` installs Debian's (CI does)")
    out = tmp_path / "ui"
    command = [sys.executable, str(ROOT / "bench" / "ui_screenshots.py"), "--store", topk_smoke.store, "--sweep", "topk-smoke", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    checks = json.loads((out / "ui_checks.json").read_text())["checks"]
    assert checks["view_table"]["mode"] == "model training"
    table = checks["view_table"]
    assert "metrics.`best/score`" in table["columns"] and "tags.`selection_rule`" in table["columns"]
    assert "metrics.`eval/tgt_test/macro_f1`" in table["columns"]  # the best trial was evaluated
    assert len(table["rows"]) == 3 and all(row["needed_px"] <= row["shown_px"] for row in table["rows"])
    assert all((out / shot).stat().st_size > 10_000 for shot in SHOTS)


def test_a_second_smoke_test_replaces_the_first_and_leaves_one_parent_run_of_its_name(topk_smoke):
    from mlflow.tracking import MlflowClient

    tmp, summary = topk_smoke.tmp, topk_smoke.summary
    second = topk_smoke.run([*topk_smoke.smoke, "--num-samples", "1"], 900)
    assert second.returncode == 0 and "Traceback" not in second.stderr, (second.stdout + second.stderr)[-4000:]
    assert f"replacing the previous smoke sweep in {tmp / 'ray_results' / 'topk-smoke'}" in second.stdout
    replacement = json.loads(second.stdout.strip().splitlines()[-1])["parent_run_id"]
    assert replacement != summary["parent_run_id"]
    client = MlflowClient(topk_smoke.store)
    replaced = client.get_run(summary["parent_run_id"])  # renamed, so "parent run 'sweep-topk-smoke'" names one run
    assert replaced.info.run_name.startswith("sweep-topk-smoke (replaced ") and replaced.data.tags["replaced"] == "true"
    named = client.search_runs([replaced.info.experiment_id], "attributes.run_name = 'sweep-topk-smoke'")
    assert [run.info.run_id for run in named] == [replacement]
    assert len(list((tmp / "ray_results" / "topk-smoke").glob("trial_*"))) == 1
