"""Seed-paired statistics for benchmark tables: medians, spreads, and differences to a baseline.

Methods are compared on the same seeds. For a method ``m`` and the baseline
``b``, the per-seed difference is ``d_s = metric(m, s) - metric(b, s)`` over the
seeds both ran; the table gives the median and interquartile range of the
metric, the median and IQR of ``d_s``, and a two-sided Wilcoxon signed-rank
test of ``d_s`` (exact for these sizes). With ``n`` seeds the smallest possible
p-value is ``2 / 2^n``: 0.0625 for 5 seeds, 0.002 for 10.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import stats


def per_seed(results: list[dict[str, Any]], method: str, metric: str) -> dict[int, float]:
    return {r["seed"]: r["metrics"][metric] for r in results if r["method"] == method and metric in r["metrics"]}


def median_iqr(values: Sequence[float]) -> tuple[float, float, float]:
    values = np.asarray(values, dtype=np.float64)
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return float(median), float(q1), float(q3)


def paired_difference(results: list[dict[str, Any]], method: str, baseline: str, metric: str) -> dict[str, Any]:
    """Median/IQR of per-seed differences to ``baseline`` and the Wilcoxon signed-rank p-value."""
    mine, base = per_seed(results, method, metric), per_seed(results, baseline, metric)
    seeds = sorted(set(mine) & set(base))
    diffs = np.array([mine[s] - base[s] for s in seeds])
    if len(seeds) == 0:
        return {"n": 0}
    median, q1, q3 = median_iqr(diffs)
    p = float(stats.wilcoxon(diffs).pvalue) if len(seeds) > 1 and np.any(diffs != 0) else float("nan")
    return {"n": len(seeds), "median": median, "q1": q1, "q3": q3, "wins": int((diffs > 0).sum()), "p": p, "seeds": seeds}


def cell(values: Sequence[float]) -> str:
    if len(values) == 0:
        return "–"
    median, q1, q3 = median_iqr(values)
    return f"{median:.3f} ({q1:.3f}–{q3:.3f})"


def plot_per_seed(results: list[dict[str, Any]], methods: list[str], metric: str, title: str, path, labels: dict[str, str] | None = None):
    """One column per method, one dot per seed, the same seed joined across methods; medians as bars."""
    from matplotlib.figure import Figure

    labels = labels or {}
    seeds = sorted({r["seed"] for r in results})
    colours = {seed: f"C{i % 10}" for i, seed in enumerate(seeds)}
    fig = Figure(figsize=(max(6.0, 1.25 * len(methods)), 4.4), constrained_layout=True)
    ax = fig.add_subplot()
    by_method = [per_seed(results, method, metric) for method in methods]
    for seed in seeds:
        points = [(i, values[seed]) for i, values in enumerate(by_method) if seed in values]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, color=colours[seed], alpha=0.35, linewidth=0.8)
            ax.scatter(xs, ys, color=colours[seed], s=18, zorder=3, label=f"seed {seed}")
    for i, values in enumerate(by_method):
        if values:
            ax.hlines(np.median(list(values.values())), i - 0.3, i + 0.3, color="black", linewidth=2, zorder=4)
    ax.set_xticks(range(len(methods)), [labels.get(m, m) for m in methods], rotation=25, ha="right")
    ax.set(ylabel=metric, title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.savefig(path, dpi=110)
    return path
