"""The label-shift study's analysis (``bench/label_shift_study.py``): tables, goals and the plot, from result rows.

A result row is what :func:`jobs.run_job` returns: ``method`` (here
``"<target>/<row>"``, e.g. ``"desi/laplacian+bbse"``), ``seed``, ``selection_score``
and ``metrics``. Statistics are seed-paired (:mod:`paired`): for a row ``m`` and a
row ``b`` of the same target, ``d_s = F1(m, s) - F1(b, s)`` over the seeds both ran,
with its median, IQR and a two-sided Wilcoxon signed-rank p-value.

Priors: for class ``y``, ``q_y`` is the target test split's label frequency
(``eval/tgt_test/prior/y``) and ``q̂_y`` an estimator's label-free estimate at the
chosen checkpoint (``eval/label_shift/<estimator>/prior/y``, from source val and
the unlabelled target adapt split); the error is ``|q̂_y - q_y|`` in points (× 100).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from paired import cell, median_iqr, paired_difference, per_seed

F1 = "eval/tgt_test/macro_f1"
PRIOR_TOLERANCE = 0.05  # goal: every class's prior estimated within 5 points
GAIN = 0.05  # goal on the DESI-like target: label-shift-aware beats marginal alignment by >= 5 macro-F1 points (median, paired)
NO_WORSE = -0.01  # goal on the SDSS-like target: the median paired difference is not below -1 point ...
ALPHA = 0.05  # ... nor significantly negative; and the DESI gain is significant (two-sided Wilcoxon p < ALPHA)
SURVEY_TITLES = {"sdss": "SDSS-like", "desi": "DESI-like"}


def method_name(target: str, row: str) -> str:
    """``("desi", "laplacian+bbse")`` -> ``"desi/laplacian+bbse"``: one study row on one target survey."""
    return f"{target}/{row}"


def aware(row: str, estimator: str) -> str:
    """The label-shift-aware version of a marginal row: ``("laplacian", "em")`` -> ``"laplacian+em"``."""
    return f"{row}+{estimator}"


def best_estimator(results: list[dict[str, Any]], target: str, marginal: str, estimators: Sequence[str]) -> str:
    """The estimator whose ``marginal+estimator`` row has the highest mean label-free selection score on ``target``.

    The selection score is the config's label-free rule at the chosen epoch (``selection_score``); no target
    label is read. Raises ``LookupError`` naming the rows when none of them has run.
    """
    scores = {e: [r["selection_score"] for r in results if r["method"] == method_name(target, aware(marginal, e))] for e in estimators}
    ran = {e: float(np.mean(s)) for e, s in scores.items() if s}
    if not ran:
        raise LookupError(f"no results for {[method_name(target, aware(marginal, e)) for e in estimators]}: cannot choose an estimator")
    return max(ran, key=ran.get)


def _difference_cells(results: list[dict[str, Any]], method: str, baseline: str | None) -> list[str]:
    d = paired_difference(results, method, baseline, F1) if baseline else {"n": 0}
    if not d["n"]:
        return ["–", "–", "–"]
    return [f"{d['median']:+.3f} ({d['q1']:+.3f}…{d['q3']:+.3f})", f"{d['wins']}/{d['n']}", f"{d['p']:.3g}"]


def table(results: list[dict[str, Any]], target: str, rows: Sequence[str], marginal_of: dict[str, str],
          class_names: Sequence[str], majority: dict[str, Any]) -> str:
    """One target's table: median (IQR) target macro-F1, the paired differences to source-only and to each
    row's marginal counterpart (``marginal_of``), per-class recall, accuracy and the ORACLE-chosen F1."""
    recalls = {f"recall {name}": f"eval/tgt_test/recall/{name}" for name in class_names}
    columns = {**recalls, "tgt acc": "eval/tgt_test/acc", "src val acc": "eval/src_val/acc",
               "ORACLE-chosen tgt F1": "oracle/tgt_test_macro_f1_best_epoch"}
    header = ["method", "n", "tgt macro-F1", "Δ vs source-only (paired)", "wins", "p", "Δ vs its marginal version (paired)", "wins", "p", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.append(f"| majority class ({majority['class']}) | – | {majority['macro_f1']:.3f} |" + " – |" * 6
                 + " – |" * len(recalls) + f" {majority['acc']:.3f} |" + " – |" * 2)
    source_only = method_name(target, "source_only")
    for row in rows:
        method = method_name(target, row)
        f1 = list(per_seed(results, method, F1).values())
        if not f1:
            continue
        versus_marginal = method_name(target, marginal_of[row]) if row in marginal_of else None
        label = row + (" (upper bound: target labels)" if row == "target_oracle" else "")
        cells = [label, str(len(f1)), cell(f1), *_difference_cells(results, method, None if method == source_only else source_only),
                 *_difference_cells(results, method, versus_marginal)]
        cells += [cell(list(per_seed(results, method, metric).values())) for metric in columns.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def prior_errors(results: list[dict[str, Any]], method: str, estimator: str, class_names: Sequence[str]) -> dict[str, Any]:
    """Per seed and class: the estimate ``q̂``, the truth ``q`` and ``|q̂ - q|``; their medians over seeds; the seeds
    whose every class is within :data:`PRIOR_TOLERANCE`."""
    rows = sorted((r for r in results if r["method"] == method), key=lambda r: r["seed"])
    estimate = np.array([[r["metrics"][f"eval/label_shift/{estimator}/prior/{c}"] for c in class_names] for r in rows]).reshape(len(rows), len(class_names))
    truth = np.array([[r["metrics"][f"eval/tgt_test/prior/{c}"] for c in class_names] for r in rows]).reshape(len(rows), len(class_names))
    error = np.abs(estimate - truth)
    median = lambda values: {c: float(np.median(values[:, i])) if len(rows) else float("nan") for i, c in enumerate(class_names)}
    return {"method": method, "estimator": estimator, "seeds": [r["seed"] for r in rows], "estimate": estimate.tolist(), "truth": truth.tolist(),
            "median_estimate": median(estimate), "true": median(truth), "median_abs_error": median(error),
            "seeds_within": int((error.max(axis=1) <= PRIOR_TOLERANCE).sum()) if len(rows) else 0}


def prior_table(errors: list[dict[str, Any]], class_names: Sequence[str]) -> str:
    """One line per (row, estimator): true and estimated priors (median over seeds), median |error| per class in points."""
    header = ["method", "estimator", "n", "true " + " / ".join(class_names), "estimated (median)", "median |error| (points)",
              f"seeds with every class within {100 * PRIOR_TOLERANCE:.0f} points"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in errors:
        n = len(e["seeds"])
        values = lambda key, scale=1.0, fmt=".3f": " / ".join(f"{scale * e[key][c]:{fmt}}" for c in class_names)
        lines.append(f"| {e['method'].split('/', 1)[1]} | {e['estimator']} | {n} | {values('true')} | {values('median_estimate')} "
                     f"| {values('median_abs_error', 100.0, '.1f')} | {e['seeds_within']}/{n} |")
    return "\n".join(lines)


def prior_goal(errors: dict[str, Any]) -> dict[str, Any]:
    """Met when the median (over seeds) |q̂_y - q_y| is within :data:`PRIOR_TOLERANCE` for every class y."""
    worst = max(errors["median_abs_error"], key=errors["median_abs_error"].get)
    points = 100.0 * errors["median_abs_error"][worst]
    return {"method": errors["method"], "estimator": errors["estimator"], "worst_class": worst, "worst_points": points,
            "per_class_points": {c: 100.0 * v for c, v in errors["median_abs_error"].items()},
            "met": bool(errors["median_abs_error"][worst] <= PRIOR_TOLERANCE)}


def gain_goal(results: list[dict[str, Any]], method: str, marginal: str) -> dict[str, Any]:
    """Met when the median paired gain over ``marginal`` is >= :data:`GAIN` and two-sided Wilcoxon p < :data:`ALPHA`."""
    d = paired_difference(results, method, marginal, F1)
    met = bool(d["n"] and d["median"] >= GAIN and d["p"] < ALPHA)
    return {"method": method, "versus": marginal, **d, "met": met}


def no_worse_goal(results: list[dict[str, Any]], method: str, marginal: str) -> dict[str, Any]:
    """Met when the median paired difference to ``marginal`` is >= :data:`NO_WORSE` and not significantly
    negative (not both median < 0 and two-sided Wilcoxon p < :data:`ALPHA`)."""
    d = paired_difference(results, method, marginal, F1)
    met = bool(d["n"] and d["median"] >= NO_WORSE and not (d["median"] < 0 and d["p"] < ALPHA))
    return {"method": method, "versus": marginal, **d, "met": met}


def _verdict(met: bool) -> str:
    return "**met**" if met else "**missed**"


def _paired_text(goal: dict[str, Any]) -> str:
    if not goal["n"]:
        return "no paired seeds"
    return (f"median paired difference {100 * goal['median']:+.1f} macro-F1 points (IQR {100 * goal['q1']:+.1f}…{100 * goal['q3']:+.1f}), "
            f"{goal['wins']}/{goal['n']} seeds better, two-sided Wilcoxon p = {goal['p']:.3g}")


def goal_lines(goals: dict[str, Any]) -> str:
    """The three goals, each written met or missed with its exact figures."""
    lines = []
    for target, goal in goals["priors"].items():
        per_class = ", ".join(f"{c} {v:.1f}" for c, v in goal["per_class_points"].items())
        lines.append(f"- Goal: the prior estimate within {100 * PRIOR_TOLERANCE:.0f} points per class ({SURVEY_TITLES.get(target, target)}, "
                     f"`{goal['method'].split('/', 1)[1]}` at its chosen checkpoint, median |error| over seeds: {per_class}; "
                     f"worst {goal['worst_class']} {goal['worst_points']:.1f}) — {_verdict(goal['met'])}.")
    gain, same = goals["gain"], goals["no_worse"]
    lines.append(f"- Goal: on DESI-like, `{gain['method'].split('/', 1)[1]}` beats `{gain['versus'].split('/', 1)[1]}` by ≥ {100 * GAIN:.0f} "
                 f"macro-F1 points (median, paired, Wilcoxon p < {ALPHA}): {_paired_text(gain)} — {_verdict(gain['met'])}.")
    lines.append(f"- Goal: on SDSS-like, `{same['method'].split('/', 1)[1]}` is no worse than `{same['versus'].split('/', 1)[1]}` "
                 f"(median ≥ {100 * NO_WORSE:+.0f} point, not significantly negative): {_paired_text(same)} — {_verdict(same['met'])}.")
    return "\n".join(lines)


def calibration_line(results: list[dict[str, Any]], target: str) -> str:
    """Target-oracle minus source-only (median macro-F1) and the two in-domain accuracies, for one target survey."""
    median = lambda row, metric: median_iqr(list(per_seed(results, method_name(target, row), metric).values()))[0]
    gap = 100.0 * (median("target_oracle", F1) - median("source_only", F1))
    return (f"Calibration ({SURVEY_TITLES.get(target, target)}): source-only {gap:.1f} macro-F1 points below the target-oracle "
            f"(goal ≥ 15: {'met' if gap >= 15 else 'missed'}); in-domain accuracy source-only "
            f"{median('source_only', 'eval/src_val/acc'):.3f}, target-oracle {median('target_oracle', 'eval/tgt_test/acc'):.3f} (goal 0.85–0.95).")


def plot(results: list[dict[str, Any]], targets: Sequence[str], marginal_of: dict[str, str], errors: dict[str, list[dict[str, Any]]],
         class_names: Sequence[str], path):
    """Top: per target, each seed's paired difference (label-shift-aware minus its marginal row; the 5-point goal
    dashed). Bottom: per target, the estimated against the true prior of each class, one dot per seed and row."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5 * len(targets), 8.8), constrained_layout=True)
    axes = fig.subplots(2, len(targets), squeeze=False)
    for column, target in enumerate(targets):
        ax = axes[0, column]
        pairs = [(row, base) for row, base in marginal_of.items() if paired_difference(results, method_name(target, row), method_name(target, base), F1)["n"]]
        for i, (row, base) in enumerate(pairs):
            mine, theirs = per_seed(results, method_name(target, row), F1), per_seed(results, method_name(target, base), F1)
            diffs = [mine[s] - theirs[s] for s in sorted(set(mine) & set(theirs))]
            ax.scatter(i + np.linspace(-0.12, 0.12, len(diffs)), diffs, s=18, zorder=3, color=f"C{i}")
            ax.hlines(np.median(diffs), i - 0.3, i + 0.3, color="black", linewidth=2, zorder=4)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.axhline(GAIN, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xticks(range(len(pairs)), [f"{row}\n− {base}" for row, base in pairs], fontsize=8)
        ax.set(ylabel="paired Δ target macro-F1", title=f"{SURVEY_TITLES.get(target, target)}: label-shift-aware − marginal, per seed")
        ax.grid(axis="y", alpha=0.3)
        ax = axes[1, column]
        for marker, e in zip("oxs^", errors.get(target, [])):
            estimate, truth = np.asarray(e["estimate"]), np.asarray(e["truth"])
            for k, name in enumerate(class_names):
                ax.scatter(truth[:, k], estimate[:, k], marker=marker, color=f"C{k}", s=22, alpha=0.7,
                           label=f"{name}, {e['method'].split('/', 1)[1]}")
        ax.plot([0, 1], [0, 1], color="black", linewidth=0.8)
        ax.fill_between([0, 1], [-PRIOR_TOLERANCE, 1 - PRIOR_TOLERANCE], [PRIOR_TOLERANCE, 1 + PRIOR_TOLERANCE], color="grey", alpha=0.15)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="true target-test prior", ylabel="estimated prior (chosen checkpoint)",
               title=f"{SURVEY_TITLES.get(target, target)}: estimated vs true priors (±{100 * PRIOR_TOLERANCE:.0f} points shaded)")
        ax.legend(fontsize=6, ncol=2, loc="upper left")
    fig.savefig(path, dpi=110)
    return path
