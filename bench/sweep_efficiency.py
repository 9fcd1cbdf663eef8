"""Sweep efficiency: Optuna + ASHA against random search without pruning, on one trial-epoch budget.

Both sweeps run in this process, one after the other, through the same
``galaxy_da.sweep.tuner.run_sweep`` as ``sweeps/*.py``, on a local Ray instance of
``--cpus`` CPUs, one CPU (one torch thread) per trial. The base trial is a small
CNN on the default synthetic dataset (data/synth) with Laplacian-MMD alignment
from the first epoch; the search varies the learning rate, the alignment weight
and the kernel width.

- Random search: ``--random-trials`` trials of ``--epochs`` epochs each (no
  pruning: ASHA's grace period is every epoch). Its trial-epochs are the budget.
- Optuna (TPE) + ASHA (grace 1, reduction factor 2): ``--asha-trials`` trials,
  chosen so that the trial-epochs it spends stay within the same budget (the
  epochs actually spent are reported).

What is measured, from Tune's per-trial ``result.json`` (one line per epoch):

- best label-free score so far (``select/<rule>``) against wall time since the
  sweep was started (Ray, the MLflow server and all start-up included); the
  time each sweep needs to reach the random search's final best;
- core-seconds in training steps: an epoch's step time is
  ``steps_per_epoch * rows_per_step / train/images_per_s`` (the training loop
  times exactly its step loop; a step holds a source and a target batch since
  alignment runs from epoch 0), times the trial's one thread. The rest of the
  time inside trials (evaluation, checkpoints, MLflow logging, model and data
  start-up) is ``time_this_iter_s`` summed minus the steps; everything else
  (Ray, Tune, MLflow server, idle CPUs) is the sweep's wall time times
  ``--cpus`` minus both.

    python bench/sweep_efficiency.py                  # about 15 min on 2 cores
    python bench/sweep_efficiency.py --smoke-test     # a minute, numbers meaningless
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPACE = {
    "optim.lr": {"loguniform": [1e-4, 3e-2]},
    "schedules.align_weight.start": {"loguniform": [0.03, 3.0]},
    "align.blur": {"choice": [0.1, 0.3, 1.0]},
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT / "data" / "synth"))
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--steps-per-epoch", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--random-trials", type=int, default=4)
    p.add_argument("--asha-trials", type=int, default=8)
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance = concurrent trials")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke-test", action="store_true")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "sweep_efficiency.json")
    args = p.parse_args(argv)
    if args.smoke_test:
        args.epochs, args.steps_per_epoch, args.batch_size, args.random_trials, args.asha_trials = 2, 2, 16, 2, 3
        args.json = Path(tempfile.gettempdir()) / "sweep_efficiency_smoke.json"
    return args


def base_config(args: argparse.Namespace):
    from galaxy_da.config import load_config

    overrides = {
        "data.path": args.data, "data.batch_size": args.batch_size, "optim.epochs": args.epochs, "optim.warmup_epochs": 0,
        "optim.steps_per_epoch": args.steps_per_epoch, "align.method": "laplacian",
        "schedules.align_weight": {"kind": "constant", "start": 0.3, "end": 0.3}, "tracking.experiment": "sweep-efficiency",
    }
    return load_config(ROOT / "configs" / "benchmark.yaml", [f"{k}={json.dumps(v)}" for k, v in overrides.items()])


def epoch_reports(experiment_path: str) -> list[dict[str, Any]]:
    """Every epoch report of every trial of a finished sweep (Tune's result.json lines)."""
    reports = []
    for result_file in sorted(Path(experiment_path).glob("trial_*/result.json")):
        reports += [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
    return reports


def step_seconds(report: dict[str, Any], steps: int, batch_size: int) -> float:
    """Seconds in the epoch's training steps: rows over throughput (source + target rows when aligning)."""
    rows_per_step = batch_size * (2 if report["schedule/aligning"] else 1)
    return steps * rows_per_step / report["train/images_per_s"]


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


def run(label: str, searcher: str, trials: int, grace: int, cfg, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from galaxy_da.sweep.settings import SweepSettings
    from galaxy_da.sweep.tuner import run_sweep

    settings = SweepSettings(
        name=label, space=SPACE, num_samples=trials, max_concurrent=args.cpus, searcher=searcher, seed=args.seed,
        grace_period=grace, cpus_per_trial=1, storage_path=str(work / "ray_results"),
        tracking_uri=f"sqlite:///{work / 'mlflow.db'}", address="local", num_cpus=args.cpus,
    )
    started = time.time()
    result = run_sweep(cfg, settings)
    wall = time.time() - started
    reports = epoch_reports(result.experiment_path)
    metric = f"select/{cfg.selection.rule}"
    in_steps = sum(step_seconds(r, args.steps_per_epoch, args.batch_size) for r in reports)
    in_trials = sum(r["time_this_iter_s"] for r in reports)
    trial_seconds = {}
    for r in reports:
        trial_seconds[r["trial_id"]] = max(trial_seconds.get(r["trial_id"], 0.0), r["time_total_s"])
    core_seconds = wall * args.cpus
    curve = best_so_far(reports, metric, started)
    return {
        "sweep": label, "searcher": searcher, "pruning": grace < args.epochs, "trials": len(trial_seconds),
        "trial_epochs": len(reports), "complete": result.complete, "wall_s": wall, "best_score": curve[-1][1],
        "best_curve": curve, "median_trial_s": statistics.median(trial_seconds.values()),
        "core_seconds": core_seconds, "step_core_s": in_steps, "other_trial_core_s": in_trials - in_steps,
        "step_share": in_steps / core_seconds, "in_trial_share": in_trials / core_seconds,
    }


def plot(sweeps: list[dict[str, Any]], path: Path) -> Path:
    from matplotlib.figure import Figure

    from galaxy_da.plots import save

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    for sweep in sweeps:
        times, scores = zip(*sweep["best_curve"])
        ax.step([0, *times, sweep["wall_s"]], [scores[0], *scores, scores[-1]], where="post", label=sweep["sweep"])
    ax.set(xlabel="wall time since the sweep started (s)", ylabel="best label-free score so far", title="sweep efficiency")
    ax.legend()
    return save(fig, path)


def markdown(sweeps: list[dict[str, Any]], target: float) -> str:
    lines = [
        "| sweep | trials | trial-epochs | wall (s) | best score | time to random's best (s) | median trial (s) | core-s in steps | in trials |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sweeps:
        reach = s["time_to_random_best_s"]
        lines.append(
            f"| {s['sweep']} | {s['trials']} | {s['trial_epochs']} | {s['wall_s']:.0f} | {s['best_score']:.4f} "
            f"| {'not reached' if reach is None else f'{reach:.0f}'} | {s['median_trial_s']:.0f} | {s['step_share']:.1%} | {s['in_trial_share']:.1%} |"
        )
    return "\n".join(lines) + f"\n\nrandom search's best: {target:.4f}"


def main(argv: list[str] | None = None) -> int:
    import torch

    torch.set_num_threads(1)
    args = parse(argv)
    cfg = base_config(args)
    with tempfile.TemporaryDirectory(prefix="sweep-efficiency-") as tmp:
        random_search = run("random", "random", args.random_trials, args.epochs, cfg, args, Path(tmp))
        asha = run("optuna+asha", "optuna", args.asha_trials, 1, cfg, args, Path(tmp))
    sweeps = [random_search, asha]
    target = random_search["best_score"]
    for sweep in sweeps:
        sweep["time_to_random_best_s"] = time_to_reach(sweep["best_curve"], target)
    reach = asha["time_to_random_best_s"]
    summary = {
        "command": " ".join([Path(sys.executable).name, "bench/sweep_efficiency.py", *(argv if argv is not None else sys.argv[1:])]),
        "settings": {k: v if not isinstance(v, Path) else str(v) for k, v in vars(args).items()}, "space": SPACE,
        "random_best": target,
        "asha_time_to_random_best_over_random_time_to_best": None if reach is None else reach / random_search["time_to_random_best_s"],
        "asha_time_to_random_best_over_random_wall": None if reach is None else reach / random_search["wall_s"],
        "sweeps": sweeps,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=1))
    plot(sweeps, args.json.with_suffix(".png"))
    print(f"\n$ {summary['command']}\n")
    print(markdown(sweeps, target))
    for key in ("asha_time_to_random_best_over_random_time_to_best", "asha_time_to_random_best_over_random_wall"):
        print(f"{key}: {summary[key]}")
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
