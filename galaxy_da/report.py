"""A sweep's evaluation report: ``galaxy-da report --sweep PARENT_RUN_ID``.

Every child run of the parent is evaluated with :func:`galaxy_da.eval.evaluate_run`
(runs that already hold ``eval/`` metrics are read back, unless ``--force``), and
the parent run receives, under ``report/``:

- ``leaderboard.md`` / ``leaderboard.csv``: one row per child run (run, name,
  which pick it is: the sweep's own pick, its training-time best (parent tag
  ``best_run_id``), and the full-split pick, the first row; backbone, method,
  top-k, schedule, seed; the target survey when the sweep varied ``data.target``), its label-free selection scores per
  rule on the full splits (columns ``<rule> (full splits)``: the sweep's own
  leaderboard holds training-time scores, possibly on a subsample), the ORACLE target test macro-F1 and target acc / balanced acc, source val acc;
  rows sorted by the sweep's own label-free selection rule;
- ``groups.csv``: runs sharing ``config_hash_noseed`` (the same config, several
  seeds) with n, mean, standard deviation and the 95% t-interval of target
  macro-F1 and accuracy;
- ``score_vs_oracle.png``: each rule's score against the oracle macro-F1;
- metrics ``report/regret/<rule>``: ``max_r F1(r) - F1(argmax_r score_rule(r))``,
  the target macro-F1 lost by selecting with that rule instead of the oracle (>= 0).

A sweep that varied ``data.target`` is compared within each target survey (each has
its own test split, class priors and majority baseline): ``leaderboard.md`` adds a
table of each target's best runs (the label-free pick and the ORACLE's best), the
majority baseline and the regrets are per target (``report/regret/<target>/<rule>``).

The command prints one line per child run as it is evaluated (``--show-evaluations``:
each run's whole evaluation table instead), the report, where it was saved and
the next command.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from galaxy_da.data.schema import DEFAULT_TARGET
from galaxy_da.eval import EVAL_METRIC, evaluate_run
from galaxy_da.report_stats import CONFIDENCE, GROUP_TAG, ORACLE_COLUMN, mean_interval, seed_groups, selection_regret
from galaxy_da.selection import ORACLE, SELECTION_RULES
from galaxy_da.tracking import TRACKING_URI_HELP

__all__ = ["ORACLE_COLUMN", "SweepReport", "build_report", "mean_interval", "score_column", "selection_regret"]

TAG_COLUMNS = ("backbone", "method", "topk", "schedule", "seed")
TARGET_COLUMN, TARGET_PARAM = "target", "data.target"  # a run's target survey, from its config params
PICK_COLUMN = "pick"
SWEEP_PICK, FULL_SPLIT_PICK = "sweep's pick", "full-split pick"


def score_column(rule: str) -> str:
    """A label-free rule's column: eval scores the checkpoint on the full splits, while the sweep's own
    leaderboard shows the training-time score, on a subsample when ``data.max_source`` / ``max_target`` is set."""
    return f"{rule} (full splits)"


# Leaderboard column -> the eval metric it shows.
METRIC_COLUMNS = {
    **{score_column(rule): f"eval/select/{rule}" for rule in SELECTION_RULES},
    ORACLE_COLUMN: f"eval/select/{ORACLE}",
    "tgt_test acc": "eval/tgt_test/acc",
    "tgt_test balanced_acc": "eval/tgt_test/balanced_acc",
    "src_val acc": "eval/src_val/acc",
}
BASELINE_METRICS = ("eval/tgt_test/majority_acc", "eval/tgt_test/majority_macro_f1", "eval/tgt_test/majority_balanced_acc")


@dataclass
class SweepReport:
    parent_run_id: str
    rows: list[dict[str, Any]]  # leaderboard, sorted by ``sort_rule``
    groups: list[dict[str, Any]]
    regret: dict[str, dict[str, float]]  # target survey -> rule -> oracle macro-F1 regret among that target's runs
    sort_rule: str
    skipped: dict[str, str]  # child run id -> why it has no evaluation
    baselines: dict[str, dict[str, float]]  # target survey -> majority-class predictor on its test split
    sweep_picks: tuple[str, ...] = ()  # the sweep's own best run, one per target survey (parent tags best_run_id[/<target>])

    @property
    def targets(self) -> list[str]:
        return list(by_target(self.rows))


def by_target(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The rows of each target survey, targets in order of first appearance, rows in their order: several
    targets when the sweep varied ``data.target``. Scores, the ORACLE and the majority baseline are each
    target's own (its test split, its class priors), so runs are compared within a target."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row[TARGET_COLUMN], []).append(row)
    return groups


def shown_tags(rows: list[dict[str, Any]]) -> list[str]:
    """The run tags the tables show: :data:`TAG_COLUMNS`, and the target survey when the rows have several."""
    return [*TAG_COLUMNS, TARGET_COLUMN] if len(by_target(rows)) > 1 else list(TAG_COLUMNS)


# --------------------------------------------------------------------------- collecting


def evaluated_metrics(run, tracking_uri: str, force: bool, echo: bool = False) -> dict[str, float]:
    """The child run's ``eval/`` metrics: read back if present (and not ``force``), else computed and logged
    (``echo``: printing the run's evaluation table)."""
    if not force and EVAL_METRIC in run.data.metrics:
        return {k: v for k, v in run.data.metrics.items() if k.startswith("eval/")}
    return evaluate_run(run.info.run_id, tracking_uri=tracking_uri, log=True, echo=echo)


def evaluate_children(children: list, tracking_uri: str, force: bool, echo: bool, progress: Callable[[str], None]):
    """Each child run's evaluation (``metrics``), or why it has none (``skipped``); ``progress`` gets one line per run."""
    metrics, skipped = {}, {}
    for index, run in enumerate(children, 1):
        run_id, label = run.info.run_id, f"[{index}/{len(children)}] {run.info.run_name or run.info.run_id[:8]}"
        reused = not force and EVAL_METRIC in run.data.metrics
        try:
            metrics[run_id] = evaluated_metrics(run, tracking_uri, force, echo)
        except LookupError as exc:  # a failed or pruned trial without a checkpoint
            skipped[run_id] = str(exc)
            progress(f"{label}: no evaluation: {exc}")
            continue
        how = "evaluated before" if reused else "evaluated"
        progress(f"{label}: {how}; target test macro-F1 {metrics[run_id].get(EVAL_METRIC, math.nan):.4f} (ORACLE)")
    return metrics, skipped


def mark_picks(rows: list[dict[str, Any]], sweep_picks: tuple[str, ...], sort_column: str) -> None:
    """Fill each row's :data:`PICK_COLUMN`: the sweep's own picks, and each target survey's full-split pick (its first
    row, if scored)."""
    full_split_picks = {members[0]["run_id"] for members in by_target(rows).values() if math.isfinite(members[0][sort_column])}
    for row in rows:
        picks = [label for label, chosen in ((SWEEP_PICK, sweep_picks), (FULL_SPLIT_PICK, full_split_picks)) if row["run_id"] in chosen]
        row[PICK_COLUMN] = " + ".join(picks)


def leaderboard_row(run, metrics: dict[str, float]) -> dict[str, Any]:
    tags = run.data.tags
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name or "",
        **{tag: tags.get(tag, "") for tag in TAG_COLUMNS},
        TARGET_COLUMN: run.data.params.get(TARGET_PARAM, DEFAULT_TARGET),  # runs from before data.target read sdss
        GROUP_TAG: tags.get(GROUP_TAG, run.info.run_id),
        **{column: metrics.get(metric, math.nan) for column, metric in METRIC_COLUMNS.items()},
    }


def build_report(parent_run_id: str, tracking_uri: Optional[str] = None, force: bool = False, echo: bool = False,
                 progress: Callable[[str], None] = lambda line: None) -> SweepReport:
    """Evaluate every child run of ``parent_run_id`` and assemble leaderboard, groups and regrets.

    ``progress`` receives one line per child run; ``echo`` prints each new evaluation's whole table.
    """
    from mlflow.exceptions import MlflowException

    from galaxy_da.sweep.leaderboard import child_runs
    from galaxy_da.tracking import default_tracking_uri, mlflow_client

    tracking_uri = tracking_uri or default_tracking_uri()
    client = mlflow_client(tracking_uri)
    try:
        parent = client.get_run(parent_run_id)
    except MlflowException as exc:
        raise LookupError(f"sweep parent run {parent_run_id!r} not found in {tracking_uri}: {exc.message}") from None
    children = child_runs(client, parent.info.experiment_id, parent_run_id)
    if not children:
        raise LookupError(f"run {parent_run_id!r} has no child runs (tag mlflow.parentRunId); is it a sweep's parent run?")
    metrics, skipped = evaluate_children(children, tracking_uri, force, echo, progress)
    rows = [leaderboard_row(run, metrics[run.info.run_id]) for run in children if run.info.run_id in metrics]
    sort_rule = children[0].data.tags.get("selection_rule", "src_val")
    picks = tuple(value for key, value in sorted(parent.data.tags.items()) if key == "best_run_id" or key.startswith("best_run_id/"))
    return assemble_report(parent_run_id, rows, metrics, sort_rule, skipped, picks)


def assemble_report(parent_run_id: str, rows: list[dict[str, Any]], metrics: dict[str, dict[str, float]], sort_rule: str,
                    skipped: dict[str, str], sweep_picks: tuple[str, ...]) -> SweepReport:
    """The report of evaluated leaderboard ``rows`` (``metrics``: each run's ``eval/`` metrics): rows sorted by
    ``sort_rule`` with the picks marked, seed groups, and each target survey's regrets and majority baseline."""
    sort_column = score_column(sort_rule)
    rows = sorted(rows, key=lambda r: -r[sort_column] if math.isfinite(r[sort_column]) else math.inf)
    mark_picks(rows, sweep_picks, sort_column)
    targets = by_target(rows)
    regret = {target: {rule: selection_regret(members, score_column(rule)) for rule in SELECTION_RULES} for target, members in targets.items()}
    baselines = {target: {key: metrics[members[0]["run_id"]].get(key, math.nan) for key in BASELINE_METRICS} for target, members in targets.items()}
    groups = seed_groups(rows, metrics, shown_tags(rows))
    return SweepReport(parent_run_id, rows, groups, regret, sort_rule, skipped, baselines, sweep_picks)


# --------------------------------------------------------------------------- writing


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["run_id"])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def leaderboard_columns(report: SweepReport) -> list[str]:
    return ["run_id", "run_name", PICK_COLUMN, *shown_tags(report.rows), *METRIC_COLUMNS]


def regret_column(report: SweepReport, target: str) -> str:
    return "regret (oracle macro-F1 lost)" if len(report.regret) == 1 else f"regret on {target}"


def regret_metrics(report: SweepReport) -> dict[str, float]:
    """The finite regrets as metrics: ``report/regret/<rule>``, or ``report/regret/<target>/<rule>`` for several targets."""
    several = len(report.regret) > 1
    return {
        f"report/regret/{f'{target}/' if several else ''}{rule}": value
        for target, regrets in report.regret.items() for rule, value in regrets.items() if math.isfinite(value)
    }


def target_bests(report: SweepReport) -> list[dict[str, Any]]:
    """Each target survey's best runs: the pick of the sweep's label-free rule on the full splits (its first
    row) and the ORACLE's best (analysis only), with their target test macro-F1 and the majority baseline's."""
    column, bests = score_column(report.sort_rule), []
    for target, rows in by_target(report.rows).items():
        pick = next((row for row in rows if math.isfinite(row[column])), None)
        best = max((row for row in rows if math.isfinite(row[ORACLE_COLUMN])), key=lambda row: row[ORACLE_COLUMN], default=None)
        bests.append({
            TARGET_COLUMN: target, "runs": len(rows),
            f"{report.sort_rule} pick": run_label(pick), "its tgt_test macro_f1 (ORACLE)": pick[ORACLE_COLUMN] if pick else math.nan,
            "ORACLE best": run_label(best), "its tgt_test macro_f1": best[ORACLE_COLUMN] if best else math.nan,
            "majority tgt_test macro_f1": report.baselines[target].get("eval/tgt_test/majority_macro_f1", math.nan),
        })
    return bests


def run_label(row: Optional[dict[str, Any]]) -> str:
    return f"`{row['run_name']}` ({row['run_id'][:8]})" if row else "none"


def picks_sentence(report: SweepReport) -> str:
    """How the sweep's own pick and the full-split pick compare, in a sentence."""
    rule = f"`{report.sort_rule}`"
    marked = {pick: row for row in report.rows for pick in row[PICK_COLUMN].split(" + ") if pick}
    sweep, full = marked.get(SWEEP_PICK), marked.get(FULL_SPLIT_PICK)
    if not report.sweep_picks:
        return "The parent run has no `best_run_id` tag (a sweep sets it when every trial has ended): only the full-split pick is marked."
    if len(report.targets) > 1:
        return f"Picks are made within each target survey (tags `best_run_id/<target>`): {SWEEP_PICK} and {FULL_SPLIT_PICK} are marked per survey."
    if sweep is None:
        return f"The sweep's pick, run {report.sweep_picks[0]}, has no evaluation (see the end of this report): only the full-split pick is marked."
    if full is None:
        return f"No run has a finite {rule} score on the full splits: only the sweep's pick, {run_label(sweep)}, is marked."
    if sweep is full:
        return f"The sweep's pick (its best {rule} at training time) is also the full-split pick: {run_label(sweep)}."
    return (f"The sweep's pick and the full-split pick differ: the sweep chose {run_label(sweep)} by its training-time {rule} "
            f"(on what its `scored_on` tag names, possibly a subsample); on the full splits {rule} ranks {run_label(full)} first. "
            f"ORACLE target test macro-F1: {sweep[ORACLE_COLUMN]:.4f} for the sweep's pick, {full[ORACLE_COLUMN]:.4f} for the full-split pick.")


def baseline_sentence(report: SweepReport) -> str:
    """The majority-class predictor on target test: one survey's figures, or each target survey's."""
    def figures(baseline: dict[str, float]) -> str:
        return ", ".join(f"{k.removeprefix('eval/tgt_test/majority_')} {v:.4f}" for k, v in baseline.items())

    if len(report.baselines) <= 1:
        only = next(iter(report.baselines.values()), dict.fromkeys(BASELINE_METRICS, math.nan))
        return f"Majority-class predictor on target test: {figures(only)}."
    return "Majority-class predictor on each target survey's test split: " + "; ".join(f"{t}: {figures(b)}" for t, b in report.baselines.items()) + "."


def by_target_sections(report: SweepReport) -> list[str]:
    """For a sweep that varied ``data.target``: each target's best runs (none otherwise)."""
    if len(report.targets) < 2:
        return []
    bests = target_bests(report)
    return [
        "## Best run of each target survey",
        "Runs are compared within a target survey only: each has its own test split, class priors and majority baseline.",
        markdown_table(bests, list(bests[0])),
    ]


def to_markdown(report: SweepReport) -> str:
    regret_rows = [{"rule": rule, **{regret_column(report, t): report.regret[t][rule] for t in report.regret}} for rule in SELECTION_RULES]
    group_columns = list(report.groups[0]) if report.groups else [GROUP_TAG]
    sections = [
        f"# Sweep report: parent run {report.parent_run_id}",
        f"{len(report.rows)} evaluated child runs, sorted by the sweep's label-free rule `{report.sort_rule}`, "
        "each rule scoring the run's checkpoint on the full source val and target adapt splits (the sweep's own "
        "leaderboard shows training-time scores, on the subsample its `scored_on` tag names). "
        f"The `{ORACLE_COLUMN}` column is the ORACLE: it reads target test labels and is for analysis only; "
        "it never selects a run.",
        baseline_sentence(report),
        "## Leaderboard",
        markdown_table(report.rows, leaderboard_columns(report)),
        picks_sentence(report),
        *by_target_sections(report),
        "## Regret of each label-free rule",
        "regret = oracle macro-F1 of the best run - oracle macro-F1 of the run the rule picks (0 = the rule picks the best run)"
        + (", among the runs of one target survey." if len(report.regret) > 1 else "."),
        markdown_table(regret_rows, ["rule", *(regret_column(report, t) for t in report.regret)]),
        f"## Seed groups (same `{GROUP_TAG}`): mean, std and {CONFIDENCE:.0%} t-interval",
        markdown_table(report.groups, group_columns),
    ]
    if report.skipped:
        sections += ["## Child runs without an evaluation", *(f"- {run}: {why}" for run, why in report.skipped.items())]
    return "\n\n".join(sections) + "\n"


def score_vs_oracle_figure(report: SweepReport):
    from galaxy_da.plots import plot_score_vs_oracle

    scores = {rule: [row[score_column(rule)] for row in report.rows] for rule in SELECTION_RULES}
    oracle = [row[ORACLE_COLUMN] for row in report.rows]
    return plot_score_vs_oracle(scores, oracle, f"sweep {report.parent_run_id[:8]}: label-free score vs ORACLE")


def log_report(report: SweepReport, tracking_uri: Optional[str] = None) -> None:
    """Leaderboard, groups, figure and regret metrics into the parent run, under ``report/``."""
    from mlflow.entities import Metric

    from galaxy_da.plots import save
    from galaxy_da.tracking import default_tracking_uri, mlflow_client

    client = mlflow_client(tracking_uri or default_tracking_uri())
    run_id = report.parent_run_id
    client.log_text(run_id, to_markdown(report), "report/leaderboard.md")
    client.log_text(run_id, csv_text([{c: row[c] for c in leaderboard_columns(report)} for row in report.rows]), "report/leaderboard.csv")
    client.log_text(run_id, csv_text(report.groups), "report/groups.csv")
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(key, float(value), now, 0) for key, value in regret_metrics(report).items()])
    if report.rows:
        with tempfile.TemporaryDirectory() as tmp:
            client.log_artifact(run_id, str(save(score_vs_oracle_figure(report), Path(tmp) / "score_vs_oracle.png")), "report")


# --------------------------------------------------------------------------- command line


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sweep", required=True, metavar="PARENT_RUN_ID", help="the sweep's parent MLflow run")
    parser.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    parser.add_argument("--force", action="store_true", help="re-evaluate child runs that already hold eval/ metrics")
    parser.add_argument("--show-evaluations", action="store_true",
                        help="print each newly evaluated run's whole evaluation table (default: one line per run)")


def closing_lines(report: SweepReport, tracking_uri: str) -> list[str]:
    """Where the report was saved (the parent run's ``report/`` artifacts), then the next command."""
    from galaxy_da.tracking import ui_command

    return [
        f"saved to the sweep's parent run {report.parent_run_id} under report/ (leaderboard.md, leaderboard.csv, groups.csv, "
        "score_vs_oracle.png) with metrics report/regret/<rule>",
        f"next: {ui_command(tracking_uri)}   (parent run {report.parent_run_id}, Artifacts: report/)",
    ]


def run(args: argparse.Namespace) -> int:
    """``galaxy-da report`` / ``python -m galaxy_da.report``."""
    from galaxy_da.tracking import default_tracking_uri

    tracking_uri = args.tracking_uri or default_tracking_uri()
    report = build_report(args.sweep, tracking_uri, force=args.force, echo=args.show_evaluations, progress=lambda line: print(line, flush=True))
    log_report(report, tracking_uri)
    print("\n" + to_markdown(report))
    print("\n".join(closing_lines(report, tracking_uri)))
    return 0


if __name__ == "__main__":
    from galaxy_da.commands import standalone

    sys.exit(standalone("python -m galaxy_da.report", sys.modules[__name__], "evaluate a sweep's child runs"))
