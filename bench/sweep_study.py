"""Does a label-free sweep beat the untuned recipes? What a sweep buys, on the quality benchmark data.

1. **Sweep**: Optuna (TPE) + ASHA, ``--trials`` trials over alignment method
   (Sinkhorn, energy, Laplacian, DANN) x alignment weight x blur x top-k OT
   (off, 1, 5, 10, 20) x weight schedule, on ``configs/benchmark.yaml``'s budget
   (the quality table's). The sweep's objective is the label-free rule
   ``src_val``; ASHA's first rung comes after warm-up. Every trial audits the
   rules (``selection.audit_rules``): at each scored epoch it logs every
   label-free rule's score and keeps that epoch's model.
2. **Every label-free rule scored by its own choice** (:mod:`rule_picks`), after
   the sweep: each rule picks its own epoch in every trial and its own trial;
   the kept models are scored on the labelled target test split
   (:mod:`scored_checkpoints`, analysis only) for each rule's regret and
   Spearman rho, over all trials, ASHA-pruned ones included and marked.
3. **Fresh seeds**: the top ``--top`` trials by the sweep's rule, retrained from
   ``configs/benchmark.yaml`` plus their exact overrides (:func:`replay_overrides`)
   on ``--fresh-seeds`` (disjoint from every seed used to choose), beside, on the
   same seeds, the best untuned recipe of the quality table (protocol 2 on), source-only
   and the target-oracle. That baseline is the one choice made with target labels:
   the recipe with the best median target test macro-F1 in the quality table. It
   favours the baseline, so the sweep's measured gain is conservative, and it
   reuses the target test split that scores the fresh seeds. Every other choice
   is label-free; elsewhere target labels enter only the tables.

Writes ``sweep_study.json``, ``sweep_study_rules.png`` (rule score vs target
macro-F1, one panel per rule), ``sweep_study_fresh.png`` (per fresh seed) and the
job log ``sweep_study.jobs.jsonl`` into ``--out`` (default ``bench/results``), and the
``sweep_study`` section of BENCHMARKS.md. Running the same command again continues:
a finished sweep of the same ``--name`` is reused, an unfinished one resumed, and
finished fresh-seed jobs are read from the job log.

Run: ``python bench/sweep_study.py`` (data/quality; about 1.5 hours on 2 cores),
``python bench/sweep_study.py --smoke`` (the whole pipeline on tiny data, a few minutes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jobs import BENCHMARK_CONFIG, REPO, make_job, run_all  # noqa: E402
from paired import cell, paired_difference, per_seed, plot_per_seed  # noqa: E402
from rule_picks import PRUNED_MARK, plot_rule_picks, ranked_trials, rule_quality, rule_table, statement  # noqa: E402
from study import RESULTS, Outputs, add_common_arguments, outputs, smoke_dataset, shown, smoke_overrides, study_command, write_section  # noqa: E402

F1 = "eval/tgt_test/macro_f1"
SWEEP_RULE = "src_val"
MIN_QUALITY_PROTOCOL = 2  # bench/quality.py's tables from protocol 2 on hold >= 10 paired seeds for the key rows
MIN_QUALITY_SEEDS = 10  # source-only seeds a real study's baseline table must hold
QUALITY_SEEDS = set(range(10))  # the quality table's seeds chose the untuned baseline
NOT_REPLAYED = ("seed", "data.path", "tracking.")  # what a retrained configuration sets for itself
SMOKE_BASELINE = "laplacian"
DEFAULTS = {"trials": 32, "workers": 2, "fresh_seeds": [100, 101, 102], "top": 3}
SMOKE_DEFAULTS = {"trials": 4, "workers": 2, "fresh_seeds": [100], "top": 1}
SPACE = {
    "align.method": {"choice": ["sinkhorn", "energy", "laplacian", "dann"]},
    "align.weight": {"loguniform": [0.1, 3.0]},
    "align.blur": {"choice": [0.2, 0.5, 1.0, 2.0]},  # x the base blur schedule (constant 0.5)
    "align": {"choice": {
        "topk-off": {"ot": {"weight": 0.0}},
        **{f"topk-{k}": {"topk": k, "ot": {"weight": 0.5}} for k in (1, 5, 10, 20)},
    }},
    "schedules.align_weight": {"choice": {
        "constant": {"kind": "constant", "start": 1.0, "end": 1.0},
        "linear-ramp": {"kind": "linear", "start": 0.0, "end": 1.0},
        "sigmoid-ramp": {"kind": "sigmoid", "start": 0.0, "end": 1.0},
        "cosine-decay": {"kind": "cosine", "start": 1.0, "end": 0.1},
    }},
}


# --------------------------------------------------------------------------- configurations


def sweep_base(data: Path, smoke: dict[str, Any]):
    """The sweep's base trial: configs/benchmark.yaml, Laplacian (SPACE varies it), every rule audited."""
    from galaxy_da.config import load_config

    return load_config(BENCHMARK_CONFIG, {"data.path": str(data), "align.method": "laplacian", "selection.rule": SWEEP_RULE,
                                          "selection.audit_rules": True, "tracking.experiment": "sweep-study", **smoke})


def replayable(flat: dict[str, Any]) -> dict[str, Any]:
    """A flat config without what a retrained configuration sets for itself (:data:`NOT_REPLAYED`)."""
    return {key: value for key, value in flat.items() if not key.startswith(NOT_REPLAYED)}


def replay_overrides(trial) -> dict[str, Any]:
    """The dotted overrides that turn configs/benchmark.yaml into ``trial`` (a TrialConfig), but for seed, data path and tracking.

    They are the difference from the config the jobs are replayed on (not from the
    sweep's base), so ``load_config(benchmark.yaml, overrides | {seed, data.path})``
    equals the trial's config in everything but those: the trial's full method.
    """
    from galaxy_da.config import load_config

    benchmark = load_config(BENCHMARK_CONFIG).flat()
    overrides = {key: value for key, value in replayable(trial.flat()).items() if value != benchmark.get(key)}
    replayed = load_config(BENCHMARK_CONFIG, overrides).flat()
    if replayable(replayed) != replayable(trial.flat()):  # the contract pbt_study.py and the fresh seeds rely on
        raise AssertionError(f"overrides {overrides} do not replay trial config {trial.hash()}")
    return overrides


def top_configurations(ranked: list[dict[str, Any]], client, count: int) -> list[dict[str, Any]]:
    """The ``count`` best trials by the sweep's rule (each at its own best epoch) with their exact :func:`replay_overrides`."""
    from galaxy_da.config import load_config
    from galaxy_da.sweep.leaderboard import VARIED_TAG_PREFIX

    chosen = []
    with tempfile.TemporaryDirectory() as tmp:
        for rank, pick in enumerate(ranked[:count], 1):
            trial = load_config(client.download_artifacts(pick["run_id"], "config.yaml", tmp))
            tags = client.get_run(pick["run_id"]).data.tags
            chosen.append({
                "rank": rank, "run_id": pick["run_id"], "trial": pick["trial"], "pruned": pick["pruned"], "epoch": pick["epoch"],
                "sweep_score": pick["scores"][SWEEP_RULE], "sweep_tgt_f1": pick["target_f1"],
                "varied": {path: tags[VARIED_TAG_PREFIX + path] for path in SPACE if VARIED_TAG_PREFIX + path in tags},
                "overrides": replay_overrides(trial),
            })
    return chosen


# --------------------------------------------------------------------------- baseline and seeds


def current_quality_table(payload: dict[str, Any]) -> bool:
    """Whether a quality JSON has the layout the baseline needs (protocol 2 on; older tables had 3 seeds)."""
    return isinstance(payload.get("protocol"), int) and payload["protocol"] >= MIN_QUALITY_PROTOCOL


def best_untuned_recipe(quality_json: Path, min_seeds: int = MIN_QUALITY_SEEDS) -> tuple[str, set[int]]:
    """The quality table's best recipe by median target macro-F1, and the seeds that table trained.

    Refuses (``SystemExit``, one line) a missing table, another protocol, or fewer than ``min_seeds`` source-only seeds.
    """
    from galaxy_da.recipes import untuned_recipes

    payload = json.loads(quality_json.read_text()) if quality_json.is_file() else {}
    results = payload.get("results", [])
    source_only = len(per_seed(results, "source_only", F1))
    if not current_quality_table(payload) or source_only < min_seeds:
        found = "no such file" if not payload else f"protocol {payload.get('protocol')}, {source_only} source_only seeds"
        raise SystemExit(f"{quality_json}: not a protocol-{MIN_QUALITY_PROTOCOL}-or-later quality table with >= {min_seeds} source_only seeds "
                         f"({found}); run bench/quality.py first, or pass --baseline RECIPE")
    candidates = [m for m in untuned_recipes() if per_seed(results, m, F1)]  # the +topk_ot row too: the strongest untuned baseline
    best = max(candidates, key=lambda m: np.median(list(per_seed(results, m, F1).values())))
    return best, {r["seed"] for r in results}


def choose_baseline(args: argparse.Namespace, out: Outputs) -> tuple[str, str, set[int]]:
    """(recipe, where it came from, the quality seeds that chose it); a smoke without a current quality table in --out uses laplacian."""
    if args.baseline:
        return args.baseline, "--baseline", set()
    path = args.quality_json or (out.folder / "quality.json" if args.smoke else RESULTS / "quality.json")
    if args.smoke and not (path.is_file() and current_quality_table(json.loads(path.read_text()))):
        return SMOKE_BASELINE, f"smoke default (no protocol-{MIN_QUALITY_PROTOCOL}-or-later {path.name} in --out)", set()
    recipe, seeds = best_untuned_recipe(path, 1 if args.smoke else MIN_QUALITY_SEEDS)
    return recipe, f"best median target macro-F1 of {shown(path)}", seeds


def check_fresh_seeds(fresh: list[int], choosing: dict[str, set[int]]) -> None:
    """Fresh seeds must be distinct and disjoint from every seed used to choose (``{what chose: its seeds}``); else ``SystemExit``, one line."""
    clashes = {what: sorted(set(fresh) & seeds) for what, seeds in choosing.items() if set(fresh) & seeds}
    if clashes or len(set(fresh)) != len(fresh):
        why = "; ".join(f"the {what} used {seeds}" for what, seeds in clashes.items()) or "a seed is repeated"
        raise SystemExit(f"--fresh-seeds {fresh}: not fresh ({why}); pick seeds disjoint from {sorted(set().union(*choosing.values()))}")


# --------------------------------------------------------------------------- tables


def fresh_table(results: list[dict[str, Any]], order: list[str], baseline: str) -> str:
    lines = [f"| configuration | seeds | tgt macro-F1 | mean ± std | Δ vs {baseline} (paired) | wins |", "|---|---|---|---|---|---|"]
    for method in order:
        f1 = list(per_seed(results, method, F1).values())
        d = paired_difference(results, method, baseline, F1) if method != baseline else None
        delta = "–" if d is None else f"{d['median']:+.3f} ({d['q1']:+.3f}…{d['q3']:+.3f})"
        wins = "–" if d is None else f"{d['wins']}/{d['n']}"
        spread = f"{np.std(f1, ddof=1):.3f}" if len(f1) > 1 else "–"
        lines.append(f"| {method} | {len(f1)} | {cell(f1)} | {np.mean(f1):.3f} ± {spread} | {delta} | {wins} |")
    return "\n".join(lines)


def goals(fresh: list[dict[str, Any]], baseline: str, study: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals: sweep #1 beats the baseline by >= 2 points (mean over fresh seeds); the best rule's regret <= 2 points."""
    pick, base = per_seed(fresh, "sweep #1", F1), per_seed(fresh, baseline, F1)
    diffs = [100 * (pick[s] - base[s]) for s in sorted(set(pick) & set(base))]
    regrets = {rule: 100 * q["regret"] for rule, q in study["rules"].items() if math.isfinite(q["regret"])}
    best_rule = min(regrets, key=regrets.get) if regrets else None
    return {
        "gain_points": float(np.mean(diffs)) if diffs else math.nan,
        "gain_std_points": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else math.nan, "gain_seeds": len(diffs),
        "gain_met": bool(diffs) and float(np.mean(diffs)) >= 2.0,
        "best_rule": best_rule, "best_rule_regret_points": regrets.get(best_rule, math.nan),
        "regret_met": best_rule is not None and regrets[best_rule] <= 2.0,
    }


def goal_lines(g: dict[str, Any], baseline: str) -> str:
    verdict = lambda met: "met" if met else "missed"
    return (f"- Goal: sweep #1 beats {baseline} by ≥ 2 macro-F1 points (mean of {g['gain_seeds']} fresh seeds): "
            f"{g['gain_points']:+.1f} (std of per-seed differences {g['gain_std_points']:.1f}) — {verdict(g['gain_met'])}.\n"
            f"- Goal: the best rule's regret ≤ 2 points: {g['best_rule']}, {g['best_rule_regret_points']:.1f} — {verdict(g['regret_met'])}.")


# --------------------------------------------------------------------------- the study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, "sweep_study")
    parser.add_argument("--data", default="data/quality")
    parser.add_argument("--name", help="the sweep's name (default sweep-study[-smoke]-s<search seed>-n<trials>); "
                                       "a finished sweep of that name is reused, an unfinished one resumed")
    parser.add_argument("--trials", type=int, help=f"sweep trials (default {DEFAULTS['trials']}; smoke {SMOKE_DEFAULTS['trials']})")
    parser.add_argument("--search-seed", type=int, default=0)
    parser.add_argument("--fresh-seeds", type=int, nargs="+", help=f"default {DEFAULTS['fresh_seeds']}; smoke {SMOKE_DEFAULTS['fresh_seeds']}")
    parser.add_argument("--top", type=int, help=f"configurations retrained (default {DEFAULTS['top']}; smoke {SMOKE_DEFAULTS['top']})")
    parser.add_argument("--workers", type=int, help="concurrent trials and jobs (default 2)")
    parser.add_argument("--quality-json", type=Path, help="the quality table, protocol 2 or later (default bench/results/quality.json; smoke: in --out)")
    parser.add_argument("--baseline", help="untuned recipe to beat (default: the quality table's best by median target macro-F1)")
    parser.add_argument("--storage-path", help="Ray's results folder (default ray_results; smoke: in --out)")
    parser.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or mlflow/mlflow.db; smoke: in --out)")
    args = parser.parse_args()
    for key, value in (SMOKE_DEFAULTS if args.smoke else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    started = time.perf_counter()
    out = outputs(args, "sweep_study")

    from galaxy_da.recipes import untuned_recipes
    from galaxy_da.sweep.tracking_server import tracking_server
    from galaxy_da.tracking import default_tracking_uri
    from oracle import write_target_as_source

    if args.baseline and args.baseline not in untuned_recipes():
        raise SystemExit(f"--baseline {args.baseline}: not a recipe; choose from {sorted(untuned_recipes())}")
    data = smoke_dataset(out.folder) if args.smoke else Path(args.data)
    base = sweep_base(data, smoke_overrides(args))
    baseline = choose_baseline(args, out)
    # SPACE never varies the seed: every trial trains base.seed
    check_fresh_seeds(args.fresh_seeds, {"sweep trials": {base.seed}, "quality table": QUALITY_SEEDS | baseline[2]})
    oracle_data = data.with_name(data.name + "-target-as-source")
    if not (oracle_data / "manifest.json").is_file():
        write_target_as_source(str(data), oracle_data, seed=0)
    with tracking_server(out.tracking_uri(args.tracking_uri or default_tracking_uri())) as tracking_uri:
        study(args, out, base, data, oracle_data, baseline, tracking_uri, started)


def swept(args: argparse.Namespace, out: Outputs, base, tracking_uri: str) -> tuple[str, str, float]:
    """Run the sweep, resume it, or reuse it when it already finished: (name, parent run id, seconds spent)."""
    from mlflow.tracking import MlflowClient

    from galaxy_da.sweep.settings import SweepSettings
    from galaxy_da.sweep.state import read_sweep_state
    from galaxy_da.sweep.tuner import run_sweep

    started = time.perf_counter()
    name = args.name or f"sweep-study{'-smoke' if args.smoke else ''}-s{args.search_seed}-n{args.trials}"
    storage = args.storage_path or str(out.folder / "ray_results" if args.smoke else REPO / "ray_results")
    settings = SweepSettings(name=name, space=SPACE, num_samples=args.trials, max_concurrent=args.workers, seed=args.search_seed,
                             num_cpus=args.workers, tracking_uri=tracking_uri, address="local", storage_path=storage)
    state = read_sweep_state(settings)
    if state is not None and MlflowClient(tracking_uri).get_run(state["parent_run_id"]).info.status == "FINISHED":
        print(f"sweep {name} already finished (parent run {state['parent_run_id']}): reusing its trials", flush=True)
        return name, state["parent_run_id"], 0.0
    result = run_sweep(base, settings, resume=state is not None)
    if not result.complete:
        raise SystemExit(f"sweep {name} did not finish; run the same command again to resume it")
    return name, result.parent_run_id, time.perf_counter() - started


def study(args: argparse.Namespace, out: Outputs, base, data: Path, oracle_data: Path, baseline: tuple[str, str, set[int]],
          tracking_uri: str, started: float) -> None:
    from mlflow.tracking import MlflowClient

    from galaxy_da.data.reader import ShardDataset
    from galaxy_da.recipes import RECIPES, recipe_overrides, untuned_recipes
    from galaxy_da.selection import SELECTION_RULES
    from galaxy_da.tracking import RunTracker
    from scored_checkpoints import collect

    name, parent_run_id, sweep_seconds = swept(args, out, base, tracking_uri)
    client = MlflowClient(tracking_uri)
    test = ShardDataset(str(data)).evaluation_view().labelled("target", "test")  # ORACLE: analysis only, after the sweep
    checkpoints, skipped = collect(client, parent_run_id, list(SELECTION_RULES), test)
    audit = rule_quality(checkpoints, list(SELECTION_RULES))
    top = top_configurations(ranked_trials(checkpoints, SWEEP_RULE), client, args.top)

    recipe, recipe_source, _ = baseline
    smoke = smoke_overrides(args)
    untuned = "source_only" if recipe == "source_only" else f"untuned {recipe}"
    # retrained exactly, except that the retrains do not audit the rules (scoring only: it changes no weight)
    methods = {f"sweep #{c['rank']}": {**c["overrides"], "selection.audit_rules": False} for c in top}
    methods |= {untuned: {**smoke, **recipe_overrides(untuned_recipes()[recipe])}, "source_only": {**smoke, **recipe_overrides(RECIPES["source_only"])}}
    methods["target_oracle"] = {**smoke, **recipe_overrides(RECIPES["source_only"]), "data.path": str(oracle_data)}
    parent_cfg = base.model_copy(deep=True)
    parent_cfg.tracking.tracking_uri, parent_cfg.tracking.run_name = tracking_uri, f"{name}-fresh-seeds"
    parent = RunTracker(parent_cfg, extra_tags={"sweep_study": name, "sweep_parent_run_id": parent_run_id,
                                                "seeds": " ".join(map(str, args.fresh_seeds))})
    jobs = [make_job(method, seed, {"data.path": str(data), **overrides}, parent_run_id=parent.run_id, tracking_uri=tracking_uri)
            for method, overrides in methods.items() for seed in args.fresh_seeds]
    fresh = run_all(jobs, args.workers, out.jobs)

    order = list(methods)
    achieved = goals(fresh, untuned, audit)
    rules_png = plot_rule_picks(checkpoints, audit, f"{name}: {audit['trials']} trials ({audit['pruned_trials']} pruned {PRUNED_MARK}), "
                                "label-free score vs target macro-F1", out.plot("_rules"))
    fresh_png = plot_per_seed(fresh, order, F1, "fresh seeds: target test macro-F1", out.plot("_fresh"))
    wall = time.perf_counter() - started
    command = study_command(__file__, sys.argv[1:])
    markdown = (
        f"`{command}` ({'smoke: tiny data, not a result; ' if args.smoke else ''}wall time {wall / 60:.1f} min for what this "
        f"invocation ran, the sweep {sweep_seconds / 60:.1f} min of it; load average at the end {os.getloadavg()[0]:.2f}; "
        f"sweep `{name}`, MLflow parent run `{parent_run_id}`; JSON `{out.json.name}`, plots `{rules_png.name}`, `{fresh_png.name}`)\n\n"
        f"**Fresh seeds** {args.fresh_seeds} (disjoint from the sweep's seed {base.seed} and the quality seeds): the top {args.top} "
        f"trials by `{SWEEP_RULE}`, retrained from configs/benchmark.yaml plus their exact overrides, against {untuned} "
        f"({recipe_source}), source-only and the target-oracle (upper bound: target labels).\n\n"
        f"{fresh_table(fresh, order, untuned)}\n\n{goal_lines(achieved, untuned)}\n\n"
        f"**Every label-free rule by its own choice.** {statement(audit)}\n\n{rule_table(audit)}"
        + "".join(f"\n\nLeft out, no scored checkpoints: run `{run_id}` ({why})." for run_id, why in skipped.items())
    )
    client.log_text(parent_run_id, markdown, "study/sweep_study.md")
    for path in (rules_png, fresh_png):
        client.log_artifact(parent_run_id, str(path), "study")
    parent.log_text(markdown, "sweep_study.md")
    parent.finish()
    out.write_json({
        "command": command, "smoke": args.smoke, "wall_seconds": wall, "sweep_seconds": sweep_seconds, "load_average": os.getloadavg(),
        "sweep": name, "parent_run_id": parent_run_id, "space": SPACE,
        "search_seed": args.search_seed, "sweep_rule": SWEEP_RULE, "analysis": statement(audit), "rules": audit["rules"],
        "oracle_best": audit["oracle_best"], "trials": audit["trials"], "pruned_trials": audit["pruned_trials"],
        "checkpoints": checkpoints, "skipped": skipped, "top": top, "baseline": recipe, "baseline_source": recipe_source,
        "baseline_method": untuned, "fresh_seeds": args.fresh_seeds, "fresh": fresh, "goals": achieved, "table_markdown": markdown,
    })
    write_section(out.benchmarks, "sweep_study", markdown)
    print(f"{markdown}\n\n{out.json}, section 'sweep_study' of {out.benchmarks}")


if __name__ == "__main__":
    main()
