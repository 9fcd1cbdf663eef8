"""The quality benchmark: does alignment help on the synthetic sim-to-survey shift, and by how much?

Every method trains the same backbone for the same epoch budget
(``configs/benchmark.yaml``), on the same seeds, and its checkpoint is chosen by
the config's label-free rule. Each run is then evaluated on the labelled target
test split (``galaxy_da.eval``). Beside it, for analysis only, the ORACLE choice:
the best target-test macro-F1 among the epochs the label-free rule could pick.

Seeds are paired: every method runs ``--seeds``; source-only, DANN and the best
distance method (best by the label-free selection score, never by target labels)
also run ``--more-seeds``. The table gives medians and interquartile ranges, and
each method's per-seed difference to source-only with a Wilcoxon signed-rank
test (:mod:`paired`). Rows: majority class (no training), source-only,
target-oracle (trained on the target adapt labels of a target-as-source copy:
an upper bound, not a method), DANN, Sinkhorn, energy, Laplacian, top-k OT added
to the best distance, and the reference's best recipe. Every run is a child of
one MLflow parent run, and reproduces with the ``galaxy-da train`` command
printed beside its method.

Rows under ``shared`` input normalisation (one standardisation for both
domains) repeat source-only, DANN and the best distance on every seed.

Run: ``python bench/quality.py --data data/quality`` (renders the dataset, 3000
source + 2500 target, when it is missing; about an hour on 2 cores). Each finished
job is appended to ``<out>/quality.jobs.jsonl`` (``bench/results/``) as it
ends; running the same command again skips those jobs and continues (``--fresh``
starts over). The kept jobs are keyed by method and command, not by code version:
start over after any change that alters training. ``--smoke`` runs the whole
pipeline on a tiny dataset in a few minutes (``bench/study.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jobs import REPO, make_job, run_all  # noqa: E402
from oracle import write_target_as_source  # noqa: E402
from paired import cell, paired_difference, per_seed, plot_per_seed  # noqa: E402
from study import (Outputs, add_common_arguments, commands, finished_jobs_kept, invocation_timings, outputs, parent_run, smoke_dataset,  # noqa: E402
                   smoke_overrides, study_command, timing_text, write_section)

PROTOCOL = 3  # 2: 10 paired seeds for the key rows, shared-normalisation rows, oracle on scored epochs only; 3: shared statistics over every image (ChannelStats.of)
F1 = "eval/tgt_test/macro_f1"
TRANSFERS = 0.6  # a seed "transfers" when its target macro-F1 reaches this (source-only is bimodal: about 0.3 or 0.7)
KEY_METHODS = ("source_only", "dann")  # with the best distance: the rows that get --more-seeds and the shared rows
SHARED = " · shared norm"  # rows re-run with one input standardisation for both domains (see bench/source_only_modes.py)
COLUMNS = {  # column -> metric, all shown as median (IQR) over seeds
    "tgt acc": "eval/tgt_test/acc",
    "recall E": "eval/tgt_test/recall/elliptical",
    "recall I": "eval/tgt_test/recall/irregular",
    "recall S": "eval/tgt_test/recall/spiral",
    "src val acc": "eval/src_val/acc",
    "probe AUC": "eval/domain/probe_auc",
    "ORACLE-chosen tgt F1": "oracle/tgt_test_macro_f1_best_epoch",
}


def baseline_of(method: str) -> str:
    """Each row is compared with the source-only run of its own input normalisation."""
    return "source_only" + (SHARED if method.endswith(SHARED) else "")


def table(results: list[dict[str, Any]], majority: dict[str, float], order: list[str]) -> str:
    header = ["method", "n", "tgt macro-F1", "Δ vs its source-only (paired)", "wins", "Wilcoxon p", "mean ± std", *COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.append(f"| majority class (spiral) | – | {majority['macro_f1']:.3f} | – | – | – | – | {majority['acc']:.3f} |" + " – |" * (len(COLUMNS) - 1))
    for method in order:
        f1 = list(per_seed(results, method, F1).values())
        if method == baseline_of(method):
            diff_cells = ["–", "–", "–"]
        else:
            d = paired_difference(results, method, baseline_of(method), F1)
            diff_cells = [f"{d['median']:+.3f} ({d['q1']:+.3f}…{d['q3']:+.3f})", f"{d['wins']}/{d['n']}", f"{d['p']:.3g}"]
        label = method + (" (upper bound: target labels)" if method == "target_oracle" else "")
        spread = f"{np.mean(f1):.3f} ± {np.std(f1, ddof=1):.3f}" if len(f1) > 1 else f"{f1[0]:.3f}"  # one seed (a smoke): no spread
        cells = [label, str(len(f1)), cell(f1), *diff_cells, spread]
        cells += [cell(list(per_seed(results, method, metric).values())) for metric in COLUMNS.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def normalisation_table(results: list[dict[str, Any]], methods: tuple[str, ...]) -> str:
    """Per method: shared minus per-domain input normalisation, paired by seed (median, IQR, wins, Wilcoxon),
    and how many seeds transfer (target macro-F1 >= :data:`TRANSFERS`) under each."""
    header = ["method", "seeds", "per-domain tgt F1", "shared tgt F1", "Δ shared − per-domain (paired)", "wins", "Wilcoxon p",
              f"seeds ≥ {TRANSFERS} per-domain / shared", "recall E per-domain / shared", "recall S per-domain / shared"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        d = paired_difference(results, f"{method}{SHARED}", method, F1)
        if not d.get("n"):
            continue
        seeds = d["seeds"]
        values = {name: per_seed(results, name, F1) for name in (method, f"{method}{SHARED}")}
        transfers = [sum(values[name][s] >= TRANSFERS for s in seeds) for name in values]
        recall = lambda metric: " / ".join(cell([per_seed(results, name, metric)[s] for s in seeds]) for name in values)
        lines.append(f"| {method} | {d['n']} | {cell([values[method][s] for s in seeds])} | {cell([values[f'{method}{SHARED}'][s] for s in seeds])} "
                     f"| {d['median']:+.3f} ({d['q1']:+.3f}…{d['q3']:+.3f}) | {d['wins']}/{d['n']} | {d['p']:.3g} "
                     f"| {transfers[0]}/{d['n']} / {transfers[1]}/{d['n']} | {recall(COLUMNS['recall E'])} | {recall(COLUMNS['recall S'])} |")
    return "\n".join(lines)


def calibration(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The benchmark's targets: source-only >= 15 macro-F1 points below the target-oracle; in-domain accuracy 85-95 %."""
    median = lambda method, metric: float(np.median(list(per_seed(results, method, metric).values())))
    gap = median("target_oracle", F1) - median("source_only", F1)
    source_acc, oracle_acc = median("source_only", "eval/src_val/acc"), median("target_oracle", "eval/tgt_test/acc")
    return {
        "gap_macro_f1_points": 100 * gap, "gap_ok": gap >= 0.15,
        "source_only_src_val_acc": source_acc, "target_oracle_tgt_test_acc": oracle_acc,
        "in_domain_ok": 0.85 <= source_acc <= 0.95 and 0.85 <= oracle_acc <= 0.95,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/quality")
    parser.add_argument("--n-source", type=int, default=3000)
    parser.add_argument("--n-target", type=int, default=2500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="every method")
    parser.add_argument("--more-seeds", type=int, nargs="*", default=[5, 6, 7, 8, 9], help="source-only, DANN and the best distance too")
    parser.add_argument("--workers", type=int, default=2, help="trials at once (one torch thread each)")
    parser.add_argument("--no-shared-norm-rows", dest="shared_norm_rows", action="store_false",
                        help="skip source-only and the best distance re-run with shared input normalisation")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--fresh", action="store_true", help="ignore the finished jobs kept in <out>/quality.jobs.jsonl")
    add_common_arguments(parser, "quality")
    parser.add_argument("overrides", nargs="*", help="dotted overrides of configs/benchmark.yaml for every method")
    args = parser.parse_args()
    started = time.perf_counter()
    out = outputs(args, "quality")
    if args.smoke:  # one seed for every method, one more for the key rows: every phase runs, key rows paired on 2 seeds
        args.seeds, args.more_seeds = args.seeds[:1], args.more_seeds[:1]
        args.overrides = [f"{k}={v}" for k, v in smoke_overrides(args).items()] + args.overrides

    from galaxy_da.data import synth
    from galaxy_da.sweep.tracking_server import tracking_server
    from galaxy_da.tracking import default_tracking_uri

    data = smoke_dataset(out.folder) if args.smoke else Path(args.data)
    if not (data / "manifest.json").is_file():
        synth.generate(data, seed=0, n_source=args.n_source, n_target=args.n_target, workers=2, targets=["sdss"])
    oracle_data = data.with_name(data.name + "-target-as-source")
    if not (oracle_data / "manifest.json").is_file():
        write_target_as_source(str(data), oracle_data, seed=0)
    # concurrent trials log through one tracking server, never straight into the sqlite file
    with tracking_server(out.tracking_uri(args.tracking_uri or default_tracking_uri())) as tracking_uri:
        study(args, out, data, oracle_data, tracking_uri, started)


def study(args: argparse.Namespace, out: Outputs, data: Path, oracle_data: Path, tracking_uri: str, started: float) -> None:
    from galaxy_da.config import load_config, parse_override
    from galaxy_da.data.reader import ShardDataset
    from galaxy_da.metrics import majority_baseline
    from galaxy_da.recipes import DISTANCE_RECIPES, RECIPES, recipe_overrides, with_topk

    base = load_config(REPO / "configs" / "benchmark.yaml", [f"data.path={data}", *args.overrides])
    parent = parent_run(base, tracking_uri, "quality-benchmark", args.seeds + args.more_seeds)
    extra = dict(parse_override(text) for text in args.overrides)
    done, kept_before = out.jobs, finished_jobs_kept(out, args.fresh)

    def jobs(methods: dict[str, dict[str, Any]], seeds: list[int]) -> list[dict[str, Any]]:
        return [make_job(method, seed, {"data.path": str(data), **overrides, **extra}, parent_run_id=parent.run_id, tracking_uri=tracking_uri)
                for method, overrides in methods.items() for seed in seeds]

    methods = {name: recipe_overrides(RECIPES[name]) for name in ("source_only", "dann", *DISTANCE_RECIPES, "reference_recipe")}
    methods["target_oracle"] = {**recipe_overrides(RECIPES["source_only"]), "data.path": str(oracle_data)}
    results = run_all(jobs(methods, args.seeds), args.workers, done)
    # the best distance (for top-k OT and for more seeds) by its mean label-free selection score: no target labels involved
    best_distance = max(DISTANCE_RECIPES, key=lambda m: np.mean([r["selection_score"] for r in results if r["method"] == m]))
    topk_name = f"{best_distance}+topk_ot"
    results += run_all(jobs({topk_name: recipe_overrides(with_topk(best_distance))}, args.seeds), args.workers, done)
    key_methods = (*KEY_METHODS, best_distance)
    if args.more_seeds:
        results += run_all(jobs({m: methods[m] for m in key_methods}, args.more_seeds), args.workers, done)

    shared_rows = {}
    if args.shared_norm_rows:
        shared_rows = {f"{m}{SHARED}": {**methods[m], "data.normalization": "shared"} for m in key_methods}
        results += run_all(jobs(shared_rows, args.seeds + args.more_seeds), args.workers, done)

    dataset = ShardDataset(str(data))
    majority = majority_baseline(dataset.counts("source", "train"), dataset.evaluation_view().labelled("target", "test").labels, dataset.class_names)
    order = ["source_only", "target_oracle", "dann", *DISTANCE_RECIPES, topk_name, "reference_recipe", *shared_rows]
    wall = time.perf_counter() - started
    command = study_command(__file__, sys.argv[1:])
    markdown = table(results, majority, order)
    figure = plot_per_seed(results, order, F1, "target test macro-F1 per seed (label-free checkpoint choice)",
                           out.plot(), {"target_oracle": "target_oracle\n(upper bound)"})
    checks = calibration(results)
    parent.log_text(markdown + "\n\n" + commands(results, order), "leaderboard.md")
    parent.log_artifact(figure, "plots")
    parent.log_metrics({"wall_seconds": wall, "calibration/gap_macro_f1_points": checks["gap_macro_f1_points"]})
    parent.finish()
    job_seconds = sum(r["seconds"] for r in results)
    timings = invocation_timings(out.json, PROTOCOL, {"command": command, "wall_seconds": wall, "jobs_run": len(done.read_text().splitlines()) - kept_before,
                                                      "load_average": os.getloadavg(), "finished": time.strftime("%Y-%m-%d %H:%M"),
                                                      "parent_run_id": parent.run_id})
    payload = {"protocol": PROTOCOL, "smoke": args.smoke, "command": command, "wall_seconds": wall, "job_seconds": job_seconds,
               "timings": timings, "load_average": os.getloadavg(), "data": str(data), "manifest_sha256": dataset.manifest_hash,
               "seeds": args.seeds, "more_seeds": args.more_seeds, "best_distance_by_label_free_score": best_distance,
               "key_methods": list(key_methods), "parent_run_id": parent.run_id, "majority": majority, "calibration": checks,
               "results": results, "table_markdown": markdown, "commands": commands(results, order)}
    out.write_json(payload)
    section = (f"`{command}` ({'smoke, ' if args.smoke else ''}{len(results)} runs, {job_seconds / 60:.1f} job-minutes; "
               f"{timing_text(timings, command)}; JSON `{out.json.name}`, plot `{figure.name}`)\n\n"
               f"{markdown}\n\nInput normalisation, the same seeds under both:\n\n{normalisation_table(results, key_methods)}\n\n"
               f"Calibration: source-only {checks['gap_macro_f1_points']:.1f} macro-F1 points below the "
               f"target-oracle (goal ≥ 15: {'met' if checks['gap_ok'] else 'missed'}); in-domain accuracy source-only "
               f"{checks['source_only_src_val_acc']:.3f}, target-oracle {checks['target_oracle_tgt_test_acc']:.3f} "
               f"(goal 0.85–0.95: {'met' if checks['in_domain_ok'] else 'missed'}).\n\nReproduce a row:\n\n{commands(results, order)}")
    write_section(out.benchmarks, "quality", section)
    print(f"`{command}` — wall time {wall / 60:.1f} min, MLflow parent run {parent.run_id}; {out.json}, {figure}, section 'quality' of {out.benchmarks}\n")
    print(markdown + "\n\n" + commands(results, order) + f"\n\ncalibration: {checks}")


if __name__ == "__main__":
    main()
