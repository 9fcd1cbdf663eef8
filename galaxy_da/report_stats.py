"""The statistics of a sweep report: seed groups with t-intervals, and what a selection rule costs.

- :func:`mean_interval`: n, mean, sample standard deviation and the 95% t-interval
  ``mean +- t_{(1+c)/2, n-1} s / sqrt(n)`` of one group's values;
- :func:`seed_groups`: the runs that share ``config_hash_noseed`` (one config,
  several seeds), each with :func:`mean_interval` of target macro-F1 and accuracy;
- :func:`selection_regret`: ``max_r F1(r) - F1(argmax_r score_rule(r))``, the ORACLE
  target macro-F1 lost by picking a run with a label-free rule (>= 0).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Sequence

import numpy as np
from scipy import stats

from galaxy_da.selection import ORACLE

ORACLE_COLUMN = f"{ORACLE}: tgt_test macro_f1"
GROUP_TAG = "config_hash_noseed"
GROUP_METRICS = {"tgt_test macro_f1": "eval/tgt_test/macro_f1", "tgt_test acc": "eval/tgt_test/acc"}
CONFIDENCE = 0.95


def mean_interval(values: list[float], confidence: float = CONFIDENCE) -> dict[str, float]:
    """n, mean, sample std (ddof 1) and the t-interval ``mean +- t_{(1+c)/2, n-1} std / sqrt(n)``.

    ``std`` and the interval are NaN for n < 2 (one seed says nothing about spread).
    """
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    if n < 2:
        return {"n": n, "mean": mean, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    std = float(values.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * std / math.sqrt(n))
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def selection_regret(rows: list[dict[str, Any]], rule_column: str) -> float:
    """``max_r oracle(r) - oracle(argmax_r rule(r))`` over rows where both are finite; NaN if none."""
    scored = [r for r in rows if math.isfinite(r[rule_column]) and math.isfinite(r[ORACLE_COLUMN])]
    if not scored:
        return math.nan
    picked = max(scored, key=lambda r: r[rule_column])
    return max(r[ORACLE_COLUMN] for r in scored) - picked[ORACLE_COLUMN]


def seed_groups(rows: list[dict[str, Any]], metrics: dict[str, dict[str, float]], tags: Sequence[str]) -> list[dict[str, Any]]:
    """One entry per ``config_hash_noseed``: the ``tags`` its rows share (``seed`` left out), its seeds and
    :func:`mean_interval` of each group metric; best mean target macro-F1 first."""
    members: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        members[row[GROUP_TAG]].append(row)
    groups = []
    for key, group_rows in members.items():
        entry = {GROUP_TAG: key, **{tag: group_rows[0][tag] for tag in tags if tag != "seed"}}
        entry["seeds"] = " ".join(sorted(r["seed"] for r in group_rows))
        for name, metric in GROUP_METRICS.items():
            summary = mean_interval([metrics[r["run_id"]].get(metric, math.nan) for r in group_rows])
            entry["n"] = summary.pop("n")
            entry |= {f"{name} {stat}": value for stat, value in summary.items()}
        groups.append(entry)
    return sorted(groups, key=lambda g: -g["tgt_test macro_f1 mean"] if math.isfinite(g["tgt_test macro_f1 mean"]) else math.inf)
