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

The two arms of a search seed run in alternating order (random search first on
even seeds), so neither always starts cold. Each finished sweep is appended to
``sweep_efficiency.jobs.jsonl`` with the load average before and after it; a
re-run reuses those and runs only what is missing. The table and the goals go to
the ``sweep_efficiency`` section of BENCHMARKS.md.

    python bench/sweep_efficiency.py             # about 30 min on 2 cores
    python bench/sweep_efficiency.py --smoke     # a few minutes on tiny data, numbers meaningless
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from study import SMOKE_OVERRIDES, Outputs, add_common_arguments, outputs, smoke_dataset, study_command, write_section  # noqa: E402

NAME = "sweep_efficiency"
ARMS = {"random": ("random", False), "optuna+asha": ("optuna", True)}  # label: (searcher, ASHA pruning)
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
    p.add_argument("--fresh", action="store_true", help="ignore the sweeps kept in <out>/sweep_efficiency.jobs.jsonl")
    add_common_arguments(p, NAME)
    p.add_argument("--smoke-test", dest="smoke", action="store_true", help="the same as --smoke")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the base config")
    args = p.parse_args(argv)
    if args.smoke:
        args.random_trials, args.asha_trials, args.seeds = 2, 3, [0]
        args.overrides = [f"{k}={v}" for k, v in SMOKE_OVERRIDES.items()] + args.overrides
    return args


def base_config(args: argparse.Namespace, data: Path):
    from galaxy_da.config import load_config

    return load_config(args.config, [f"data.path={data}", "align.method=laplacian", "align.ot.weight=0",
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
    load_before = os.getloadavg()
    started = time.time()
    result = run_sweep(cfg, settings)
    wall = time.time() - started
    if not result.complete:
        raise SystemExit(f"sweep {label}-s{seed} did not finish ({result.experiment_path}); run the benchmark again to redo it")
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
        "load_average_before": list(load_before), "load_average_after": list(os.getloadavg()),
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
        "| sweep | seed | ran | trials | trial-epochs | wall (s) | best score | time to random's best (s) | median trial (s) "
        "| core-s in steps | in trials | load (1 min) before → after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sweeps:
        reach = s["time_to_random_best_s"]
        lines.append(
            f"| {s['sweep']} | {s['seed']} | {s['order']} | {s['trials']} | {s['trial_epochs']} | {s['wall_s']:.0f} | {s['best_score']:.4f} "
            f"| {'not reached' if reach is None else f'{reach:.0f}'} | {s['median_trial_s']:.0f} | {s['step_share']:.1%} "
            f"| {s['in_trial_share']:.1%} | {s['load_average_before'][0]:.2f} → {s['load_average_after'][0]:.2f} |"
        )
    return "\n".join(lines)


def arm_order(seed: int) -> list[str]:
    """Random search first on even search seeds, Optuna + ASHA first on odd ones, so neither always runs on a cold start."""
    return list(ARMS) if seed % 2 == 0 else list(ARMS)[::-1]


def arm_trials(label: str, args: argparse.Namespace) -> int:
    return args.random_trials if label == "random" else args.asha_trials


def arm_key(label: str, seed: int, args: argparse.Namespace) -> str:
    """A finished sweep's key in the job log: its arm, search seed and number of trials."""
    return f"{label} seed={seed} trials={arm_trials(label, args)}"


def seed_pair(seed: int, cfg, args: argparse.Namespace, done: dict[str, dict[str, Any]], log: Path) -> list[dict[str, Any]]:
    """Both arms of one search seed, each appended to ``log`` once finished (a re-run reuses it)."""
    for position, label in enumerate(arm_order(seed), start=1):
        key = arm_key(label, seed, args)
        if key not in done:
            searcher, prune = ARMS[label]
            with tempfile.TemporaryDirectory(prefix=f"sweep-efficiency-{label}-") as tmp:
                done[key] = {**run(label, searcher, arm_trials(label, args), prune, seed, cfg, args, Path(tmp)), "order": position}
            with log.open("a") as stream:
                stream.write(json.dumps({"key": key, "row": done[key]}) + "\n")
    pair = [done[arm_key(label, seed, args)] for label in ARMS]
    for sweep in pair:
        sweep["time_to_random_best_s"] = time_to_reach(sweep["best_curve"], pair[0]["best_score"])
    return pair


def summarise(sweeps: list[dict[str, Any]], args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Medians over search seeds of the step share and of ASHA's time to random's best / random's wall time."""
    ratios = []
    for seed in args.seeds:
        random_search, asha = (next(s for s in sweeps if s["seed"] == seed and s["sweep"] == label) for label in ARMS)
        reach = asha["time_to_random_best_s"]
        ratios.append(math.inf if reach is None else reach / random_search["wall_s"])
    return {
        "command": command, "smoke": args.smoke,
        "settings": {k: v if not isinstance(v, Path) else str(v) for k, v in vars(args).items()}, "space": SPACE,
        "median_step_share": statistics.median(s["step_share"] for s in sweeps),
        "median_step_share_by_sweep": {label: statistics.median(s["step_share"] for s in sweeps if s["sweep"] == label) for label in ARMS},
        "asha_time_to_random_best_over_random_wall": ratios,
        "median_asha_time_to_random_best_over_random_wall": statistics.median(ratios),
        "sweeps": sweeps,
    }


def section(summary: dict[str, Any], out: Outputs) -> str:
    """The BENCHMARKS.md section: the command, the table, and each goal as met or missed with its exact figure."""
    share, ratio = summary["median_step_share"], summary["median_asha_time_to_random_best_over_random_wall"]
    loads = [s["load_average_after"][0] for s in summary["sweeps"]]
    return "\n".join([
        f"`{summary['command']}` ({len(summary['settings']['seeds'])} search seeds; load average (1 min) at the end of "
        f"each sweep {min(loads):.2f}–{max(loads):.2f}; JSON `{out.json.name}`, plot `{out.plot().name}`)",
        "",
        markdown(summary["sweeps"]),
        "",
        f"- Goal: ≥ 85 % of core-seconds in training steps (median over sweeps): {share:.1%} — {'met' if share >= 0.85 else 'missed'}.",
        f"- Goal: Optuna + ASHA reaches random search's best in ≤ 0.5× random search's wall time (median over seeds): "
        f"{ratio:.3f}× (per seed {', '.join(f'{r:.3f}' for r in summary['asha_time_to_random_best_over_random_wall'])}) — "
        f"{'met' if ratio <= 0.5 else 'missed'}.",
    ])


def main(argv: list[str] | None = None) -> int:
    import torch

    torch.set_num_threads(1)
    args = parse(argv)
    out = outputs(args, NAME)
    data = smoke_dataset(out.folder) if args.smoke else Path(args.data)
    cfg = base_config(args, data)
    done: dict[str, dict[str, Any]] = {}
    if out.jobs.is_file() and not args.fresh:
        done = {entry["key"]: entry["row"] for entry in map(json.loads, out.jobs.read_text().splitlines()) if entry}
    sweeps = [sweep for seed in args.seeds for sweep in seed_pair(seed, cfg, args, done, out.jobs)]
    command = study_command(__file__, argv if argv is not None else sys.argv[1:])
    summary = summarise(sweeps, args, command)
    out.write_json(summary)
    plot(sweeps, out.plot())
    write_section(out.benchmarks, NAME, section(summary, out))
    print(f"\n$ {command}\n\n{markdown(sweeps)}\n")
    print(f"results: {out.json}, section '{NAME}' of {out.benchmarks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
