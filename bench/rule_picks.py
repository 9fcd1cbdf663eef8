"""Every label-free rule scored by its own choice: per-rule picks, regret and Spearman over a sweep's checkpoints.

Input: one row per (trial ``t``, scored epoch ``e``) checkpoint ``c`` of a sweep
whose trials audited the rules (``selection.audit_rules``), as
:func:`scored_checkpoints.collect` builds them::

    {"run_id": str, "trial": str, "pruned": bool, "epoch": int,
     "scores": {rule: float}, "target_f1": float}

``scores[r]`` is rule ``r``'s label-free score ``s_r(c)`` logged by the trial
(higher is better; a non-finite score is never picked); ``target_f1`` is
``f(c)``, the macro-F1 of that checkpoint on the labelled target test split
(ORACLE: computed after the sweep, for this analysis only). For each rule ``r``:

- its own epoch in each trial: ``c_r(t) = argmax_e s_r(t, e)``;
- its own pick over the sweep: ``c_r = argmax_t s_r(c_r(t))`` (= argmax of ``s_r`` over every checkpoint);
- regret: ``max_c f(c) - f(c_r)`` over *all* checkpoints of all trials (>= 0;
  0 when the rule picks the checkpoint the target labels would);
- Spearman rho, across trials, between ``s_r(c_r(t))`` and ``f(c_r(t))``
  (NaN with fewer than 3 trials or a constant column).

ASHA-pruned trials (``pruned``: tagged ``stopped_by``) are included with the
scored epochs they trained, and marked in every output. Ties go to the first row.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

MIN_SPEARMAN_TRIALS = 3
PRUNED_MARK = "†"


def own_picks(checkpoints: Sequence[dict[str, Any]], rule: str) -> list[dict[str, Any]]:
    """Per trial, the checkpoint ``rule`` picks: the argmax of its finite score over the trial's scored epochs."""
    picks: dict[str, dict[str, Any]] = {}
    for row in checkpoints:
        value = row["scores"].get(rule, math.nan)
        if math.isfinite(value) and (row["run_id"] not in picks or value > picks[row["run_id"]]["scores"][rule]):
            picks[row["run_id"]] = row
    return list(picks.values())


def ranked_trials(checkpoints: Sequence[dict[str, Any]], rule: str) -> list[dict[str, Any]]:
    """Each trial's own pick by ``rule``, best first: the sweep's ranking when ``rule`` is its metric."""
    return sorted(own_picks(checkpoints, rule), key=lambda row: -row["scores"][rule])


def spearman(scores: Sequence[float], truth: Sequence[float]) -> float:
    """Spearman's rank correlation; NaN for fewer than :data:`MIN_SPEARMAN_TRIALS` points or a constant column."""
    from scipy.stats import spearmanr

    if len(scores) < MIN_SPEARMAN_TRIALS or np.ptp(scores) == 0 or np.ptp(truth) == 0:
        return math.nan
    return float(spearmanr(scores, truth).statistic)


def describe(row: dict[str, Any], rule: str | None = None) -> dict[str, Any]:
    """A checkpoint as the JSON shows it (with ``rule``'s score when given)."""
    shown = {key: row[key] for key in ("run_id", "trial", "epoch", "pruned", "target_f1")}
    return shown | ({"score": row["scores"][rule]} if rule else {})


def rule_quality(checkpoints: Sequence[dict[str, Any]], rules: Sequence[str]) -> dict[str, Any]:
    """The ORACLE's best checkpoint, and per rule its pick, regret, Spearman rho and own per-trial picks (see the module)."""
    if not checkpoints:
        raise ValueError("no scored checkpoints: did the trials run with selection.audit_rules?")
    oracle = max(checkpoints, key=lambda row: row["target_f1"])
    quality = {}
    for rule in rules:
        picks = own_picks(checkpoints, rule)
        if not picks:
            quality[rule] = {"trials": 0, "pruned_trials": 0, "regret": math.nan, "spearman": math.nan, "pick": None, "picks": []}
            continue
        pick = max(picks, key=lambda row: row["scores"][rule])
        quality[rule] = {
            "regret": oracle["target_f1"] - pick["target_f1"],
            "pick": describe(pick, rule),
            "spearman": spearman([row["scores"][rule] for row in picks], [row["target_f1"] for row in picks]),
            "trials": len(picks),
            "pruned_trials": sum(row["pruned"] for row in picks),
            "picks": [describe(row, rule) for row in picks],
        }
    trials = {row["run_id"]: row["pruned"] for row in checkpoints}
    return {"oracle_best": describe(oracle), "checkpoints": len(checkpoints), "trials": len(trials),
            "pruned_trials": sum(trials.values()), "rules": quality}


def statement(study: dict[str, Any]) -> str:
    """What :func:`rule_quality` computed, in words, with the counts of this study."""
    best = study["oracle_best"]
    return (
        f"Each label-free rule picks its own epoch in every trial (the argmax of its score over the trial's scored epochs) "
        f"and its own trial (the argmax over trials of those scores). Regret = the best target-test macro-F1 of any of the "
        f"{study['checkpoints']} (trial, scored epoch) checkpoints ({best['target_f1']:.3f}: {best['trial']}, epoch {best['epoch']}) "
        f"minus the target-test macro-F1 of the rule's pick, in macro-F1 points. Spearman ρ: across trials, the rule's score "
        f"at its own pick against that checkpoint's target-test macro-F1. All {study['trials']} trials are included, "
        f"{study['pruned_trials']} of them pruned by ASHA (tag `stopped_by`; their scored epochs up to the stop count; "
        f"marked {PRUNED_MARK}). Target labels are read only here, after the sweep; they never chose, stopped or pruned anything."
    )


def rule_table(study: dict[str, Any]) -> str:
    """Markdown: one row per rule (regret in macro-F1 points)."""
    lines = ["| rule | regret (macro-F1 points) | its pick: trial, epoch | target macro-F1 of its pick | Spearman ρ (own picks) | trials (pruned) |",
             "|---|---|---|---|---|---|"]
    for rule, q in study["rules"].items():
        pick = q["pick"]
        where = "–" if pick is None else f"{pick['trial']}{PRUNED_MARK if pick['pruned'] else ''}, epoch {pick['epoch']}"
        f1 = "–" if pick is None else f"{pick['target_f1']:.3f}"
        rho = f"{q['spearman']:+.2f}" if math.isfinite(q["spearman"]) else f"– (< {MIN_SPEARMAN_TRIALS} trials or constant)"
        lines.append(f"| {rule} | {100 * q['regret']:.1f} | {where} | {f1} | {rho} | {q['trials']} ({q['pruned_trials']}) |")
    return "\n".join(lines)


def plot_rule_picks(checkpoints: Sequence[dict[str, Any]], study: dict[str, Any], title: str, path: Path) -> Path:
    """One panel per rule: every checkpoint (grey), each trial's own pick (x if pruned), the rule's pick (star), the ORACLE's best (ring)."""
    from matplotlib.figure import Figure

    rules = list(study["rules"])
    fig = Figure(figsize=(3.9 * len(rules), 3.8), constrained_layout=True)
    fig.suptitle(title)
    best = study["oracle_best"]
    for ax, rule in zip(fig.subplots(1, len(rules), squeeze=False)[0], rules):
        q = study["rules"][rule]
        ax.scatter([c["scores"].get(rule, math.nan) for c in checkpoints], [c["target_f1"] for c in checkpoints],
                   s=10, c="lightgrey", label="every scored epoch")
        for pruned, marker, label in ((False, "o", "trial's own pick"), (True, "x", f"trial's own pick, pruned {PRUNED_MARK}")):
            picks = [p for p in q["picks"] if p["pruned"] == pruned]
            if picks:
                ax.scatter([p["score"] for p in picks], [p["target_f1"] for p in picks], s=24, marker=marker, c="tab:blue", label=label)
        if q["pick"] is not None:
            ax.scatter(q["pick"]["score"], q["pick"]["target_f1"], marker="*", s=180, c="tab:red", zorder=4,
                       label=f"{rule}'s pick: regret {100 * q['regret']:.1f} pts")
            best_score = next((c["scores"].get(rule, math.nan) for c in checkpoints
                               if c["run_id"] == best["run_id"] and c["epoch"] == best["epoch"]), math.nan)
            ax.scatter(best_score, best["target_f1"], s=130, facecolors="none", edgecolors="black", zorder=4,
                       label=f"ORACLE best: {best['target_f1']:.3f}")
        ax.set(xlabel=f"{rule} score (higher = better)", ylabel="ORACLE: target test macro-F1",
               title=f"{rule}: Spearman ρ {q['spearman']:+.2f} ({q['trials']} trials)" if math.isfinite(q["spearman"]) else rule)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    fig.savefig(path, dpi=110)
    return path
