"""Does a label-free sweep beat the untuned recipes? What a sweep buys, on the quality benchmark data.

1. **Sweep**: Optuna (TPE) + ASHA, ``--trials`` trials over alignment method
   (Sinkhorn, energy, Laplacian, DANN) x alignment weight x blur x top-k OT
   (off, 1, 5, 10, 20) x weight schedule, on ``configs/benchmark.yaml``'s budget
   (the quality table's). The sweep's objective is the label-free rule
   ``src_val``; ASHA's first rung comes after warm-up.
2. **Every trial evaluated** afterwards on the labelled target test split
   (``galaxy-da report``: analysis only, after the sweep has chosen). For each
   label-free rule (``src_val``, ``entropy``, ``dev``, ``snd``): its regret (target
   macro-F1 of the best trial minus that of the trial the rule picks) and its
   Spearman rank correlation with target macro-F1 across trials.
3. **Fresh seeds**: the top 3 configurations by the sweep's rule retrained on
   ``--fresh-seeds`` (never used by the sweep), beside, on the same seeds, the
   best untuned recipe of the quality table (best by its target macro-F1 median:
   the strongest baseline, so the comparison is conservative), source-only and
   the target-oracle. Target labels enter only this table, never the choice.

Writes ``bench/results/sweep_study.json`` and two plots (rule score vs target
macro-F1, one panel per rule; fresh-seed target macro-F1 per seed), and logs the
tables and plots to the sweep's MLflow parent run.

Run: ``python bench/sweep_study.py --data data/quality`` (about 1.5 hours on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jobs import BENCHMARK_CONFIG, REPO, make_job, run_all  # noqa: E402
from oracle import write_target_as_source  # noqa: E402
from paired import cell, paired_difference, per_seed, plot_per_seed  # noqa: E402

F1 = "eval/tgt_test/macro_f1"
RULES = ("src_val", "entropy", "dev", "snd")
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


def rule_quality(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per rule: regret (target macro-F1 points lost by its pick) and Spearman rho with target macro-F1."""
    from scipy.stats import spearmanr

    from galaxy_da.report import ORACLE_COLUMN

    truth = np.array([row[ORACLE_COLUMN] for row in rows])
    quality = {}
    for rule in RULES:
        scores = np.array([row[f"select/{rule}"] for row in rows])
        finite = np.isfinite(scores) & np.isfinite(truth)
        pick = int(np.nanargmax(np.where(finite, scores, -np.inf)))
        quality[rule] = {
            "regret": float(truth[finite].max() - truth[pick]), "picked_f1": float(truth[pick]),
            "spearman": float(spearmanr(scores[finite], truth[finite]).statistic), "trials": int(finite.sum()),
        }
    return quality


def top_configurations(rows: list[dict[str, Any]], client, base, count: int) -> list[dict[str, Any]]:
    """The ``count`` best trials by the sweep's own label-free score, as exact dotted overrides of ``base``.

    The overrides are the differences between the trial's logged ``config.yaml`` and
    the base config (seed, data path and tracking left out), so a retrained
    configuration is exactly the trial's.
    """
    from galaxy_da.config import load_config

    ranked = sorted((r for r in rows if math.isfinite(r["select/src_val"])), key=lambda r: -r["select/src_val"])[:count]
    base_flat = base.flat()
    chosen = []
    with tempfile.TemporaryDirectory() as tmp:
        for rank, row in enumerate(ranked, 1):
            trial = load_config(client.download_artifacts(row["run_id"], "config.yaml", tmp)).flat()
            overrides = {k: v for k, v in trial.items() if v != base_flat.get(k) and not k.startswith(("tracking.", "data.path", "seed"))}
            tags = client.get_run(row["run_id"]).data.tags
            label = "·".join(tags[f"sweep.{path}"] for path in SPACE if f"sweep.{path}" in tags)
            chosen.append({"rank": rank, "run_id": row["run_id"], "label": label, "overrides": overrides,
                           "sweep_score": row["select/src_val"], "sweep_tgt_f1": row[RULE_TRUTH]})
    return chosen


RULE_TRUTH = "oracle: tgt_test macro_f1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/quality")
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--search-seed", type=int, default=0)
    parser.add_argument("--fresh-seeds", type=int, nargs="+", default=[100, 101, 102])
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quality-json", type=Path, default=REPO / "bench" / "results" / "quality.json")
    parser.add_argument("--baseline", help="untuned recipe to beat (default: the quality table's best by target macro-F1)")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "sweep_study.json")
    args = parser.parse_args()
    started = time.perf_counter()

    from galaxy_da.sweep.tracking_server import tracking_server
    from galaxy_da.tracking import default_tracking_uri

    oracle_data = Path(args.data).with_name(Path(args.data).name + "-target-as-source")
    if not (oracle_data / "manifest.json").is_file():
        write_target_as_source(args.data, oracle_data, seed=0)
    with tracking_server(default_tracking_uri()) as tracking_uri:
        study(args, oracle_data, tracking_uri, started)


def study(args: argparse.Namespace, oracle_data: Path, tracking_uri: str, started: float) -> None:
    from mlflow.tracking import MlflowClient

    from galaxy_da.config import load_config
    from galaxy_da.plots import plot_score_vs_oracle, save
    from galaxy_da.recipes import RECIPES, recipe_overrides
    from galaxy_da.report import build_report, log_report
    from galaxy_da.sweep.settings import SweepSettings
    from galaxy_da.sweep.tuner import run_sweep

    name = f"sweep-study-s{args.search_seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = load_config(BENCHMARK_CONFIG, {"data.path": args.data, "align.method": "laplacian", "tracking.experiment": "sweep-study"})
    settings = SweepSettings(name=name, space=SPACE, num_samples=args.trials, max_concurrent=args.workers, seed=args.search_seed,
                             num_cpus=args.workers, tracking_uri=tracking_uri, address="local")
    sweep = run_sweep(cfg, settings)
    sweep_wall = time.perf_counter() - started
    report = build_report(sweep.parent_run_id, tracking_uri)
    log_report(report, tracking_uri)
    quality = rule_quality(report.rows)
    client = MlflowClient(tracking_uri)
    top = top_configurations(report.rows, client, cfg, args.top)

    baseline = args.baseline or best_untuned_recipe(args.quality_json)
    methods = {f"sweep #{c['rank']}": c["overrides"] for c in top}
    methods |= {f"untuned {baseline}": recipe_overrides(RECIPES[baseline]), "source_only": recipe_overrides(RECIPES["source_only"]),
                "target_oracle": {**recipe_overrides(RECIPES["source_only"]), "data.path": str(oracle_data)}}
    jobs = [make_job(method, seed, {"data.path": args.data, **overrides}, parent_run_id=sweep.parent_run_id, tracking_uri=tracking_uri)
            for method, overrides in methods.items() for seed in args.fresh_seeds]
    fresh = run_all(jobs, args.workers)

    order = list(methods)
    markdown = fresh_table(fresh, order, f"untuned {baseline}") + "\n\n" + rule_table(quality)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    scores = {rule: [row[f"select/{rule}"] for row in report.rows] for rule in RULES}
    title = f"{len(report.rows)} sweep trials: label-free score vs target macro-F1"
    rules_png = save(plot_score_vs_oracle(scores, [row[RULE_TRUTH] for row in report.rows], title), args.json.with_name("sweep_study_rules.png"))
    seeds_png = plot_per_seed(fresh, order, F1, "fresh seeds: target test macro-F1", args.json.with_name("sweep_study_fresh.png"))
    client.log_text(sweep.parent_run_id, markdown, "study/sweep_study.md")
    for path in (rules_png, seeds_png):
        client.log_artifact(sweep.parent_run_id, str(path), "study")
    payload = {
        "command": "python bench/sweep_study.py " + " ".join(sys.argv[1:]), "wall_seconds": time.perf_counter() - started,
        "sweep_wall_seconds": sweep_wall, "sweep": name, "parent_run_id": sweep.parent_run_id, "space": SPACE,
        "trials": len(report.rows), "skipped": report.skipped, "rules": quality, "top": top, "baseline": baseline,
        "fresh": fresh, "table_markdown": markdown, "leaderboard": report.rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=1, default=str))
    print(f"`{payload['command']}` — {payload['wall_seconds'] / 60:.1f} min; sweep parent run {sweep.parent_run_id}\n\n{markdown}")


def best_untuned_recipe(quality_json: Path) -> str:
    """The quality table's best method by median target macro-F1 (recipes only: no oracle, no add-on rows)."""
    from galaxy_da.recipes import RECIPES

    results = json.loads(quality_json.read_text())["results"]
    candidates = [m for m in RECIPES if m != "source_only" and per_seed(results, m, F1)]
    return max(candidates, key=lambda m: np.median(list(per_seed(results, m, F1).values())))


def fresh_table(results: list[dict[str, Any]], order: list[str], baseline: str) -> str:
    lines = [f"| configuration | seeds | tgt macro-F1 | mean ± std | Δ vs {baseline} (paired) | wins |", "|---|---|---|---|---|---|"]
    for method in order:
        f1 = list(per_seed(results, method, F1).values())
        d = paired_difference(results, method, baseline, F1) if method != baseline else None
        delta = "–" if d is None else f"{d['median']:+.3f} ({d['q1']:+.3f}…{d['q3']:+.3f})"
        wins = "–" if d is None else f"{d['wins']}/{d['n']}"
        lines.append(f"| {method} | {len(f1)} | {cell(f1)} | {np.mean(f1):.3f} ± {np.std(f1, ddof=1):.3f} | {delta} | {wins} |")
    return "\n".join(lines)


def rule_table(quality: dict[str, dict[str, float]]) -> str:
    lines = ["| rule | regret (macro-F1 points) | target macro-F1 of its pick | Spearman ρ with target macro-F1 | trials |", "|---|---|---|---|---|"]
    for rule, q in quality.items():
        lines.append(f"| {rule} | {100 * q['regret']:.1f} | {q['picked_f1']:.3f} | {q['spearman']:+.2f} | {q['trials']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
