"""``galaxy-da report --sweep``: a fake sweep of 2 configs x 2 seeds as real tracked child runs."""

from __future__ import annotations

import csv
import io
import math

import pytest

from galaxy_da import cli
from galaxy_da.config import load_config
from galaxy_da.report import (
    FULL_SPLIT_PICK, ORACLE_COLUMN, PICK_COLUMN, SWEEP_PICK, TARGET_COLUMN, assemble_report, leaderboard_columns, leaderboard_row,
    mean_interval, regret_metrics, score_column, selection_regret, to_markdown,
)
from galaxy_da.selection import SELECTION_RULES
from galaxy_da.tracking import ensure_experiment
from galaxy_da.trial import run_trial
from tests.test_train import TINY

CONFIGS = (["align.topk=2"], ["align.topk=4"])
SEEDS = (0, 1)


def test_mean_interval_matches_hand_computed_t_interval():
    summary = mean_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t_{0.975, 2} * s / sqrt(n), s = 1
    assert summary["n"] == 3 and summary["mean"] == pytest.approx(2.0) and summary["std"] == pytest.approx(1.0)
    assert (summary["ci_low"], summary["ci_high"]) == pytest.approx((2.0 - half, 2.0 + half))
    single = mean_interval([0.7])
    assert single["n"] == 1 and single["mean"] == 0.7 and math.isnan(single["std"]) and math.isnan(single["ci_low"])


def test_selection_regret_is_the_oracle_gap_of_the_rule_pick():
    rows = [
        {"select/src_val": 0.9, ORACLE_COLUMN: 0.40},
        {"select/src_val": 0.5, ORACLE_COLUMN: 0.65},
        {"select/src_val": math.nan, ORACLE_COLUMN: 0.99},  # unscored rows cannot be picked nor count as best
    ]
    assert selection_regret(rows, "select/src_val") == pytest.approx(0.25)
    assert selection_regret(rows[1:2], "select/src_val") == 0.0


def logged_run(run_id: str, target: str, tags: dict[str, str]):
    """A child run as MLflow returns it: its name, its data.target param, its tags."""
    from mlflow.entities import Param, Run, RunData, RunInfo, RunTag

    info = RunInfo(run_id, "0", "user", "FINISHED", 0, 1, "active", run_name=f"run-{run_id}")
    return Run(info, RunData(params=[Param("data.target", target)], tags=[RunTag(k, v) for k, v in tags.items()]))


def target_sweep_report(targets: dict[str, str], sweep_picks: tuple[str, ...] = ("c",)):
    """The report of runs ``{run id: target}`` whose src_val score and ORACLE macro-F1 are set by hand below."""
    scores = {"a": (0.90, 0.60), "b": (0.80, 0.70), "c": (0.95, 0.30), "d": (0.70, 0.50)}
    majority = {"sdss": 0.29, "desi": 0.25}
    metrics = {
        run: {"eval/select/src_val": scores[run][0], "eval/select/oracle": scores[run][1], "eval/tgt_test/majority_macro_f1": majority[target]}
        for run, target in targets.items()
    }
    runs = [logged_run(run, target, {"method": "laplacian", "seed": "0", "config_hash_noseed": run}) for run, target in targets.items()]
    rows = [leaderboard_row(run, metrics[run.info.run_id]) for run in runs]
    return assemble_report("parent", rows, metrics, "src_val", {}, sweep_picks=sweep_picks)


def test_a_sweep_over_targets_is_compared_within_each_target():
    report = target_sweep_report({"a": "sdss", "b": "sdss", "c": "desi", "d": "desi"})
    assert [row["run_id"] for row in report.rows] == ["c", "a", "b", "d"] and report.targets == ["desi", "sdss"]
    assert report.regret["sdss"]["src_val"] == pytest.approx(0.10) and report.regret["desi"]["src_val"] == pytest.approx(0.20)
    assert regret_metrics(report) == pytest.approx({"report/regret/desi/src_val": 0.20, "report/regret/sdss/src_val": 0.10})
    assert {t: b["eval/tgt_test/majority_macro_f1"] for t, b in report.baselines.items()} == {"desi": 0.25, "sdss": 0.29}
    assert TARGET_COLUMN in leaderboard_columns(report) and all(TARGET_COLUMN in group for group in report.groups)
    markdown = to_markdown(report)
    best = markdown.split("## Best run of each target survey", 1)[1].split("##", 1)[0]
    lines = {line.split(" | ")[0].strip("| "): line for line in best.splitlines() if line.startswith("| desi") or line.startswith("| sdss")}
    assert "`run-c` (c)" in lines["desi"] and "`run-d` (d)" in lines["desi"] and "0.3000" in lines["desi"] and "0.5000" in lines["desi"]
    assert "`run-a` (a)" in lines["sdss"] and "`run-b` (b)" in lines["sdss"] and "0.2900" in lines["sdss"]
    assert "on each target survey's test split: desi: acc nan, macro_f1 0.2500" in markdown and "sdss: acc nan, macro_f1 0.2900" in markdown
    assert "regret on desi" in markdown and "regret on sdss" in markdown


def test_each_target_survey_has_its_own_sweep_pick_and_full_split_pick():
    report = target_sweep_report({"a": "sdss", "b": "sdss", "c": "desi", "d": "desi"}, sweep_picks=("c", "a"))
    marks = {row["run_id"]: row[PICK_COLUMN] for row in report.rows}
    assert marks == {"c": f"{SWEEP_PICK} + {FULL_SPLIT_PICK}", "a": f"{SWEEP_PICK} + {FULL_SPLIT_PICK}", "b": "", "d": ""}
    assert "Picks are made within each target survey" in to_markdown(report)


def test_a_sweep_on_one_target_reports_as_before():
    report = target_sweep_report({"a": "sdss", "b": "sdss"})
    assert TARGET_COLUMN not in leaderboard_columns(report) and all(TARGET_COLUMN not in group for group in report.groups)
    assert regret_metrics(report) == pytest.approx({"report/regret/src_val": 0.10})
    markdown = to_markdown(report)
    assert "Best run of each target survey" not in markdown and "Majority-class predictor on target test: acc nan, macro_f1 0.2900" in markdown


@pytest.fixture(scope="module")
def sweep(toy_dataset, tmp_path_factory):
    """A parent run and 4 child runs (2 configs x 2 seeds), as a sweep would log them."""
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path_factory.mktemp('sweep')}/mlflow.db"
    client = MlflowClient(tracking_uri=store)
    parent = client.create_run(ensure_experiment(client, "galaxy-da", store), run_name="fake-sweep").info.run_id
    children = [
        run_trial(
            load_config(None, [f"data.path={toy_dataset}", *TINY, "device=cpu", f"tracking.tracking_uri={store}", f"seed={seed}", *config]),
            parent_run_id=parent,
        ).run_id
        for config in CONFIGS
        for seed in SEEDS
    ]
    return store, parent, children


def _artifact_text(client, run_id: str, path: str) -> str:
    import mlflow.artifacts

    return mlflow.artifacts.load_text(f"{client.get_run(run_id).info.artifact_uri}/{path}")


def test_report_writes_leaderboard_regrets_and_seed_groups(sweep, capsys):
    from mlflow.tracking import MlflowClient

    store, parent, children = sweep
    assert cli.main(["report", "--sweep", parent, "--tracking-uri", store]) == 0
    assert "ORACLE" in capsys.readouterr().out

    client = MlflowClient(tracking_uri=store)
    artifacts = {a.path for a in client.list_artifacts(parent, "report")}
    assert artifacts == {"report/leaderboard.md", "report/leaderboard.csv", "report/groups.csv", "report/score_vs_oracle.png"}

    board = list(csv.DictReader(io.StringIO(_artifact_text(client, parent, "report/leaderboard.csv"))))
    assert sorted(row["run_id"] for row in board) == sorted(children)
    assert {row["topk"] for row in board} == {"2", "4"} and {row["seed"] for row in board} == {"0", "1"}
    for row in board:
        assert 0.0 <= float(row[ORACLE_COLUMN]) <= 1.0
        assert all(row[score_column(rule)] for rule in SELECTION_RULES)
    src_val_scores = [float(row["src_val (full splits)"]) for row in board]
    assert src_val_scores == sorted(src_val_scores, reverse=True)  # sorted by the sweep's label-free rule

    metrics = client.get_run(parent).data.metrics
    best_oracle = max(float(row[ORACLE_COLUMN]) for row in board)
    for rule in SELECTION_RULES:
        regret = metrics[f"report/regret/{rule}"]
        picked = max(board, key=lambda row: float(row[score_column(rule)]))
        assert regret >= 0.0 and regret == pytest.approx(best_oracle - float(picked[ORACLE_COLUMN]), abs=1e-6)

    groups = list(csv.DictReader(io.StringIO(_artifact_text(client, parent, "report/groups.csv"))))
    assert len(groups) == 2 and all(int(g["n"]) == 2 and g["seeds"] == "0 1" for g in groups)
    for group in groups:
        members = [float(row[ORACLE_COLUMN]) for row in board if row["topk"] == group["topk"]]
        assert float(group["tgt_test macro_f1 mean"]) == pytest.approx(sum(members) / 2, abs=1e-6)
        assert float(group["tgt_test macro_f1 ci_low"]) <= float(group["tgt_test macro_f1 mean"]) <= float(group["tgt_test macro_f1 ci_high"])
    markdown = _artifact_text(client, parent, "report/leaderboard.md")
    assert "Regret" in markdown and "Majority-class predictor" in markdown and "95%" in markdown


def test_report_reuses_existing_evaluations_unless_forced(sweep):
    from mlflow.tracking import MlflowClient

    store, parent, children = sweep
    client = MlflowClient(tracking_uri=store)
    before = {run: len(client.get_metric_history(run, "eval/tgt_test/macro_f1")) for run in children}
    assert cli.main(["report", "--sweep", parent, "--tracking-uri", store]) == 0
    assert {run: len(client.get_metric_history(run, "eval/tgt_test/macro_f1")) for run in children} == before
    assert all(count >= 1 for count in before.values())


def test_report_on_a_run_without_children_is_a_clear_error(sweep, capsys):
    store, _, children = sweep
    assert cli.main(["report", "--sweep", children[0], "--tracking-uri", store]) != 0
    assert "has no child runs" in capsys.readouterr().err
