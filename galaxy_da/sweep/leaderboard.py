"""A sweep's leaderboard, read back from its MLflow child runs, and the score-per-trial plot.

Reading MLflow (not Ray's result objects) makes the leaderboard identical after a
resume, and for trials ASHA stopped early. One row per child run: its Ray trial
id, the MLflow run id and name (what the trial varied), status, the varied values
(tags ``sweep.<path>``), the epochs trained, the best epoch (0-based in the rows and
the CSV, numbered from 1 in the markdown: :mod:`galaxy_da.epoch_numbers`) and its label-free
score (``best/epoch``, ``best/score``: the selection rule's running best over
post-warm-up epochs), and what that score was computed on (tag ``scored_on``: the
training-time source-val and target-adapt samples, which ``data.max_source`` /
``data.max_target`` may subsample; ``galaxy-da report`` re-scores on the full splits).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from galaxy_da.epoch_numbers import shown
from galaxy_da.tracking import EPOCH_METRIC, SCORED_ON_TAG

TRIAL_TAG = "ray_trial_id"
RETIRED_TAG = "retired"  # "true": a run left by a trial that restarted without a checkpoint (galaxy_da.sweep.trainable)
VARIED_TAG_PREFIX = "sweep."
TARGET_PATH = "data.target"  # a row's column when the space varies it
MARKDOWN_COLUMNS = ("run", "status", "epochs", "best_epoch", "score", "run_id")


def child_runs(client, experiment_id: str, parent_run_id: str) -> list:
    """Live (not deleted, not retired) child runs of ``parent_run_id``, oldest first."""
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'", max_results=10000,
    )
    return sorted((run for run in runs if run.data.tags.get(RETIRED_TAG) != "true"), key=lambda run: run.info.start_time)


def leaderboard(client, experiment_id: str, parent_run_id: str, varied: Sequence[str]) -> list[dict[str, Any]]:
    """Rows sorted by score, best first (trials without a score last)."""
    rows = []
    for order, run in enumerate(child_runs(client, experiment_id, parent_run_id)):
        metrics = run.data.metrics
        best_epoch = metrics.get("best/epoch", math.nan)
        rows.append({
            "order": order,
            "trial": run.data.tags.get(TRIAL_TAG, ""),
            "run_id": run.info.run_id,
            "run": run.info.run_name or "",
            "status": run.info.status,
            **{path: run.data.tags.get(VARIED_TAG_PREFIX + path, "") for path in varied},
            "epochs": len({point.step for point in client.get_metric_history(run.info.run_id, EPOCH_METRIC)}),  # a PBT member re-logs re-trained epochs
            "best_epoch": int(best_epoch) if math.isfinite(best_epoch) else None,
            "score": metrics.get("best/score", math.nan),
            SCORED_ON_TAG: run.data.tags.get(SCORED_ON_TAG, ""),
        })
    return sorted(rows, key=lambda row: (not math.isfinite(row["score"]), -row["score"] if math.isfinite(row["score"]) else 0))


def sweep_picks(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The sweep's pick among ``rows`` (best first): its best-scored row, keyed by ``""``; or, when the space varied
    ``data.target`` (the rows have that column), each target survey's best, keyed by survey. A label-free score
    reads the target's unlabelled images, so scores on two surveys do not compare."""
    scored = [row for row in rows if math.isfinite(row["score"])]
    if not any(TARGET_PATH in row for row in rows):
        return {"": scored[0]} if scored else {}
    picks: dict[str, dict[str, Any]] = {}
    for row in scored:
        picks.setdefault(row[TARGET_PATH], row)
    return picks


def pick_key(name: str, target: str) -> str:
    """A parent run's tag or metric for the pick of ``target``: ``best_run_id``, or ``best_run_id/desi`` per survey."""
    return f"{name}/{target}" if target else name


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def to_markdown(rows: list[dict[str, Any]], rule: str) -> str:
    """A GitHub-flavoured table (the run's name says what it varied) and what the scores were computed on."""
    if not rows:
        return "_no trials_\n"
    header = [f"best {rule} (training)" if c == "score" else c.replace("_", " ") for c in MARKDOWN_COLUMNS]

    def cell(column: str, value: Any) -> str:
        if column == "best_epoch":  # the 0-based best/epoch (-1: none scored), numbered from 1 like every epoch on screen
            return "" if value is None or value < 0 else str(shown(value))
        return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))

    lines = ["| rank | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    lines += [f"| {rank} | " + " | ".join(cell(c, row[c]) for c in MARKDOWN_COLUMNS) + " |" for rank, row in enumerate(rows, 1)]
    lines += ["", "best epoch: numbered from 1 (best epoch 3 is the third epoch trained, MLflow step 2)."]
    samples = sorted({row[SCORED_ON_TAG] for row in rows if row[SCORED_ON_TAG]})
    if samples:
        lines += [f"best {rule} (training): the rule on what each trial scored its epochs on, {'; '.join(samples)}."]
    return "\n".join(lines) + "\n"


def plot_sweep_scores(rows: list[dict[str, Any]], rule: str, title: str) -> Figure:
    """The label-free score of each trial in start order, with the running best (higher = better)."""
    ordered = sorted(rows, key=lambda row: row["order"])
    scores = np.array([row["score"] for row in ordered], dtype=np.float64)
    trials = np.arange(1, len(scores) + 1)
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    fig.suptitle(title, fontsize=12, fontweight="bold")
    stopped = np.array([row["status"] != "FINISHED" or row["epochs"] < max(r["epochs"] for r in ordered) for row in ordered]) if ordered else np.array([], bool)
    ax.scatter(trials[~stopped], scores[~stopped], s=28, label="trial (all epochs)")
    ax.scatter(trials[stopped], scores[stopped], s=28, marker="x", c="tab:grey", label="trial (stopped early or failed)")
    if np.isfinite(scores).any():
        running = np.fmax.accumulate(np.where(np.isfinite(scores), scores, -np.inf))
        ax.step(trials, np.where(np.isfinite(running), running, np.nan), where="post", c="tab:red", label="best so far")
    ax.set(xlabel="trial (start order)", ylabel=f"best {rule} score (label-free)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials are whole numbers
    ax.legend(fontsize=8, loc="best")
    return fig
