"""Sweep efficiency: where a sweep's core-seconds go, and Optuna + ASHA against random search.

For each search seed (``--seeds``), two sweeps run in this process, one after
the other, through the same ``galaxy_da.sweep.tuner.run_sweep`` as
``sweeps/*.py``, on a local Ray instance of ``--cpus`` CPUs, one CPU (one torch
thread) per trial. The base trial is ``configs/sweep_topk.yaml``'s budget on the
quality benchmark data (Laplacian MMD, 2 warm-up epochs, 8 epochs of 16 steps);
the search varies the learning rate, the alignment weight and the blur.

- Random search: ``--random-trials`` trials, no pruning. Its trial-epochs are the budget.
- Optuna (TPE) + ASHA (first rung after warm-up, reduction factor 2):
  ``--asha-trials`` trials, about the same trial-epoch budget at most.

Measured per sweep:

- core-seconds in training steps: every epoch's ``train/step_s`` (the trainer
  times exactly its step loop), read back from MLflow, times the trial's one
  thread, over the sweep's wall time x ``--cpus``. Everything else — evaluation,
  checkpoints, MLflow logging, trial start-up, Ray, the MLflow server, CPUs idle
  at the start and the tail — is the rest;
- core-seconds inside trials (Tune's ``time_total_s``: the trainable's steps);
- the best label-free score so far against wall time, and when each sweep
  reaches random search's final best.

The figures are the medians over the search seeds.

    python bench/sweep_efficiency.py                  # about 30 min on 2 cores
    python bench/sweep_efficiency.py --smoke-test     # a few minutes, numbers meaningless
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPACE = {
    "optim.lr": {"loguniform": [1e-4, 3e-2]},
    "align.weight": {"loguniform": [0.03, 3.0]},
    "align.blur": {"choice": [0.2, 0.5, 1.0, 2.0]},
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT / "data" / "quality"))
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "sweep_topk.yaml")
    p.add_argument("--random-trials", type=int, default=5)
    p.add_argument("--asha-trials", type=int, default=8)
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance = concurrent trials")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="search seeds; figures are medians over them")
    p.add_argument("--smoke-test", action="store_true")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "sweep_efficiency.json")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the base config")
    args = p.parse_args(argv)
    if args.smoke_test:
        args.random_trials, args.asha_trials, args.seeds = 2, 3, [0]
        args.overrides = ["optim.epochs=3", "optim.warmup_epochs=1", "optim.steps_per_epoch=2", "data.batch_size=16", *args.overrides]
        args.json = Path(tempfile.gettempdir()) / "sweep_efficiency_smoke.json"
    return args


def base_config(args: argparse.Namespace):
    from galaxy_da.config import load_config

    return load_config(args.config, [f"data.path={args.data}", "align.method=laplacian", "align.ot.weight=0",
                                     "tracking.experiment=sweep-efficiency", *args.overrides])


def tune_reports(experiment_path: str) -> list[dict[str, Any]]:
    """Every Tune result of every trial of a finished sweep (one per scored epoch)."""
    reports = []
    for result_file in sorted(Path(experiment_path).glob("trial_*/result.json")):
        reports += [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
    return reports


def step_seconds(db: Path, parent_run_id: str) -> float:
    """Sum of every child run's per-epoch ``train/step_s`` (from the sweep's sqlite store)."""
    query = ("SELECT SUM(m.value) FROM metrics m JOIN tags t ON t.run_uuid = m.run_uuid "
             "WHERE t.key = 'mlflow.parentRunId' AND t.value = ? AND m.key = 'train/step_s'")
    with sqlite3.connect(db) as connection:
        return float(connection.execute(query, (parent_run_id,)).fetchone()[0] or 0.0)


def best_so_far(reports: list[dict[str, Any]], metric: str, started: float) -> list[tuple[float, float]]:
    """(seconds since the sweep started, best score so far) at each improvement."""
    curve, best = [], -math.inf
    for report in sorted(reports, key=lambda r: r["timestamp"]):
        if report[metric] > best:
            best = report[metric]
            curve.append((report["timestamp"] - started, best))
    return curve


def time_to_reach(curve: list[tuple[float, float]], score: float) -> float | None:
    return next((t for t, best in curve if best >= score - 1e-12), None)


def run(label: str, searcher: str, trials: int, prune: bool, seed: int, cfg, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from galaxy_da.sweep.settings import SweepSettings
    from galaxy_da.sweep.tuner import run_sweep

    db = work / "mlflow.db"
    settings = SweepSettings(
        name=f"{label}-s{seed}", space=SPACE, num_samples=trials, max_concurrent=args.cpus, searcher=searcher, seed=seed,
        grace_period=None if prune else cfg.optim.epochs, cpus_per_trial=1, storage_path=str(work / "ray_results"),
        tracking_uri=f"sqlite:///{db}", address="local", num_cpus=args.cpus,
    )
    started = time.time()
    result = run_sweep(cfg, settings)
    wall = time.time() - started
    reports = tune_reports(result.experiment_path)
    metric = f"select/{cfg.selection.rule}"
    in_steps = step_seconds(db, result.parent_run_id)
    trial_seconds: dict[str, float] = {}
    for r in reports:
        trial_seconds[r["trial_id"]] = max(trial_seconds.get(r["trial_id"], 0.0), r["time_total_s"])
    core_seconds = wall * args.cpus
    curve = best_so_far(reports, metric, started)
    return {
        "sweep": label, "seed": seed, "searcher": searcher, "pruning": prune, "trials": len(trial_seconds),
        "trial_epochs": sum(int(max(r["epochs_done"] for r in reports if r["trial_id"] == t)) for t in trial_seconds),
        "complete": result.complete, "wall_s": wall, "best_score": curve[-1][1], "best_curve": curve,
        "median_trial_s": statistics.median(trial_seconds.values()), "core_seconds": core_seconds,
        "step_core_s": in_steps, "step_share": in_steps / core_seconds, "in_trial_share": sum(trial_seconds.values()) / core_seconds,
    }


def plot(sweeps: list[dict[str, Any]], path: Path) -> Path:
    from matplotlib.figure import Figure

    from galaxy_da.plots import save

    seeds = sorted({s["seed"] for s in sweeps})
    fig = Figure(figsize=(5 * len(seeds), 4), layout="constrained")
    axes = fig.subplots(1, len(seeds), squeeze=False)[0]
    for ax, seed in zip(axes, seeds):
        for sweep in (s for s in sweeps if s["seed"] == seed):
            times, scores = zip(*sweep["best_curve"])
            ax.step([0, *times, sweep["wall_s"]], [scores[0], *scores, scores[-1]], where="post", label=sweep["sweep"])
        ax.set(xlabel="wall time since the sweep started (s)", ylabel="best label-free score so far", title=f"search seed {seed}")
        ax.legend()
    return save(fig, path)


def markdown(sweeps: list[dict[str, Any]]) -> str:
    lines = [
        "| sweep | seed | trials | trial-epochs | wall (s) | best score | time to random's best (s) | median trial (s) | core-s in steps | in trials |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sweeps:
        reach = s["time_to_random_best_s"]
        lines.append(
            f"| {s['sweep']} | {s['seed']} | {s['trials']} | {s['trial_epochs']} | {s['wall_s']:.0f} | {s['best_score']:.4f} "
            f"| {'not reached' if reach is None else f'{reach:.0f}'} | {s['median_trial_s']:.0f} | {s['step_share']:.1%} | {s['in_trial_share']:.1%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    torch.set_num_threads(1)
    args = parse(argv)
    cfg = base_config(args)
    sweeps, ratios = [], []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="sweep-efficiency-") as tmp:
            random_search = run("random", "random", args.random_trials, False, seed, cfg, args, Path(tmp))
            asha = run("optuna+asha", "optuna", args.asha_trials, True, seed, cfg, args, Path(tmp))
        for sweep in (random_search, asha):
            sweep["time_to_random_best_s"] = time_to_reach(sweep["best_curve"], random_search["best_score"])
        reach = asha["time_to_random_best_s"]
        ratios.append(math.inf if reach is None else reach / random_search["wall_s"])
        sweeps += [random_search, asha]
    summary = {
        "command": " ".join(["python", "bench/sweep_efficiency.py", *(argv if argv is not None else sys.argv[1:])]),
        "settings": {k: v if not isinstance(v, Path) else str(v) for k, v in vars(args).items()}, "space": SPACE,
        "median_step_share": statistics.median(s["step_share"] for s in sweeps),
        "median_step_share_by_sweep": {label: statistics.median(s["step_share"] for s in sweeps if s["sweep"] == label) for label in ("random", "optuna+asha")},
        "asha_time_to_random_best_over_random_wall": ratios,
        "median_asha_time_to_random_best_over_random_wall": statistics.median(ratios),
        "sweeps": sweeps,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=1))
    plot(sweeps, args.json.with_suffix(".png"))
    print(f"\n$ {summary['command']}\n\n{markdown(sweeps)}\n")
    for key in ("median_step_share", "median_step_share_by_sweep", "asha_time_to_random_best_over_random_wall", "median_asha_time_to_random_best_over_random_wall"):
        print(f"{key}: {summary[key]}")
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
