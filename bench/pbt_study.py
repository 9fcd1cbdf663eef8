"""Learned against hand-set alignment schedules, at equal compute, on the quality benchmark data.

Three arms, each spending ``--members`` x the base budget's epochs (the same
trial-epochs) per study seed, each choosing its model with the label-free rule
``src_val`` only:

- **PBT**: a population of ``--members`` (``sweeps/pbt_schedules.py``'s space and
  mutations: λ = ``align.weight``, ``align.blur``, ``align.topk``, ``optim.lr``),
  perturbed every ``--interval`` epochs after warm-up; the member with the best
  label-free score is the arm's model;
- **reference σ-schedule**: the reference's hand-set recipe (Laplacian MMD,
  trainable Kendall weights, entropy, the top-k OT add-on, the exponential
  σ-schedule of ``configs/laplacian_trainable_blur.yaml``) on ``--members`` seeds;
  best by the label-free score;
- **best fixed schedule of the sweep study**: the top configuration of
  ``bench/sweep_study.py`` on ``--members`` seeds; best by the label-free score.

Target labels are read only for the final table (``galaxy_da.eval``). Writes
``bench/results/pbt_study.json``, the table, and a plot of the learned schedules.

Run: ``python bench/pbt_study.py --data data/quality --seeds 0 1 2`` (about 1 hour on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jobs import REPO, make_job, run_all  # noqa: E402

F1 = "eval/tgt_test/macro_f1"
PBT_CONFIG = REPO / "configs" / "sweep_pbt_schedules.yaml"
# the reference's hand-set schedule (configs/laplacian_trainable_blur.yaml) on the benchmark budget
REFERENCE_SCHEDULE = {
    "align.method": "laplacian", "align.weighting": "trainable", "align.entropy_weight": 0.02, "align.ot.weight": 0.5,
    "align.blur_floor": 0.1, "schedules.blur": {"kind": "exponential", "start": 1.0, "end": 0.1, "rate": 0.9, "floor": 0.1},
}


def load_sweep_script(name: str) -> dict[str, Any]:
    path = REPO / "sweeps" / f"{name}.py"
    namespace: dict[str, Any] = {"__name__": "study", "__file__": str(path)}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace


def pbt_arm(args: argparse.Namespace, seed: int, tracking_uri: str) -> dict[str, Any]:
    """One population; the member with the best label-free score, evaluated on target test."""
    from mlflow.tracking import MlflowClient

    from galaxy_da.config import load_config
    from galaxy_da.report import ORACLE_COLUMN, build_report
    from galaxy_da.sweep.lineage import member_schedules
    from galaxy_da.sweep.leaderboard import child_runs
    from galaxy_da.sweep.settings import SweepSettings
    from galaxy_da.sweep.tuner import run_sweep

    script = load_sweep_script("pbt_schedules")
    cfg = load_config(PBT_CONFIG, {"data.path": args.data, "seed": seed, "tracking.experiment": "pbt-study"})
    settings = SweepSettings(
        name=f"pbt-study-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}", space=script["SPACE"], mutations=script["MUTATIONS"],
        scheduler=args.scheduler, searcher="random", seed=seed, num_samples=args.members, max_concurrent=args.workers,
        num_cpus=args.workers, perturbation_interval=args.interval, quantile_fraction=0.25, tracking_uri=tracking_uri, address="local",
    )
    sweep = run_sweep(cfg, settings)
    report = build_report(sweep.parent_run_id, tracking_uri)
    best = max(report.rows, key=lambda row: row["select/src_val"])
    client = MlflowClient(tracking_uri)
    runs = child_runs(client, client.get_run(sweep.parent_run_id).info.experiment_id, sweep.parent_run_id)
    return {
        "seed": seed, "parent_run_id": sweep.parent_run_id, "chosen_run": best["run_id"], "label_free": best["select/src_val"],
        "f1": best[ORACLE_COLUMN], "members": [{"run_id": r["run_id"], "label_free": r["select/src_val"], "f1": r[ORACLE_COLUMN]} for r in report.rows],
        "schedules": member_schedules(client, runs), "chosen_member": client.get_run(best["run_id"]).data.tags.get("ray_trial_id"),
        "trial_epochs": sum(len(client.get_metric_history(r["run_id"], "train/loss")) for r in report.rows),  # epochs actually trained
    }


def hand_set_arm(name: str, overrides: dict[str, Any], args: argparse.Namespace, seed: int, tracking_uri: str) -> dict[str, Any]:
    """``--members`` runs (seeds ``members*seed + i``) of one schedule; the best by the label-free score."""
    seeds = [args.members * seed + i for i in range(args.members)]
    jobs = [make_job(name, s, {"data.path": args.data, **overrides}, parent_run_id=None, tracking_uri=tracking_uri) for s in seeds]
    results = run_all(jobs, args.workers)
    best = max(results, key=lambda r: r["selection_score"])
    return {"seed": seed, "chosen_run": best["run_id"], "label_free": best["selection_score"], "f1": best["metrics"][F1],
            "members": [{"run_id": r["run_id"], "label_free": r["selection_score"], "f1": r["metrics"][F1], "command": r["command"]} for r in results],
            "trial_epochs": sum(len(r["oracle_epochs"]) for r in results)}


def summary_table(arms: dict[str, list[dict[str, Any]]], baseline: str) -> str:
    lines = [f"| arm | study seeds | trial-epochs per seed | target macro-F1 per seed | median | mean ± std | Δ vs {baseline} (mean of paired differences) |",
             "|---|---|---|---|---|---|---|"]
    base = {row["seed"]: row["f1"] for row in arms[baseline]}
    for name, rows in arms.items():
        f1 = [row["f1"] for row in rows]
        diffs = [row["f1"] - base[row["seed"]] for row in rows if row["seed"] in base]
        delta = "–" if name == baseline else f"{100 * np.mean(diffs):+.1f} points ({', '.join(f'{100 * d:+.1f}' for d in diffs)})"
        epochs = ", ".join(str(row["trial_epochs"]) for row in rows)
        lines.append(f"| {name} | {len(rows)} | {epochs} | {', '.join(f'{v:.3f}' for v in f1)} | {statistics.median(f1):.3f} "
                     f"| {np.mean(f1):.3f} ± {np.std(f1, ddof=1) if len(f1) > 1 else 0:.3f} | {delta} |")
    return "\n".join(lines)


def common_traits(pbt_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """For each knob: its value at the first post-warm-up epoch and at the end, for each chosen member."""
    traits: dict[str, Any] = {}
    for row in pbt_rows:
        schedule = row["schedules"].get(row["chosen_member"], {})
        for knob, points in schedule.items():
            if points:
                traits.setdefault(knob, []).append({"seed": row["seed"], "start": points[0][1], "end": points[-1][1]})
    return traits


def plot(pbt_rows: list[dict[str, Any]], path: Path) -> Path:
    from galaxy_da.plots import save
    from galaxy_da.sweep.lineage import plot_schedules

    schedules = {f"seed {row['seed']}: {member}{' (chosen)' if member == row['chosen_member'] else ''}": knobs
                 for row in pbt_rows for member, knobs in row["schedules"].items()}
    return save(plot_schedules(schedules, "schedules learned by PBT (every member of every study seed)"), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/quality")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="study seeds")
    parser.add_argument("--members", type=int, default=4, help="population size = runs per hand-set arm")
    parser.add_argument("--interval", type=int, default=2, help="PBT perturbation interval (epochs)")
    parser.add_argument("--scheduler", default="pbt", help="pbt | pb2")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sweep-study-json", type=Path, default=REPO / "bench" / "results" / "sweep_study.json")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "pbt_study.json")
    args = parser.parse_args()
    started = time.perf_counter()

    from galaxy_da.sweep.tracking_server import tracking_server
    from galaxy_da.tracking import default_tracking_uri

    best_fixed = json.loads(args.sweep_study_json.read_text())["top"][0]["overrides"]
    arms: dict[str, list[dict[str, Any]]] = {f"PBT ({args.scheduler})": [], "reference σ-schedule + trainable weights": [], "best fixed schedule (sweep study #1)": []}
    with tracking_server(default_tracking_uri()) as tracking_uri:
        for seed in args.seeds:
            arms[f"PBT ({args.scheduler})"].append(pbt_arm(args, seed, tracking_uri))
            arms["reference σ-schedule + trainable weights"].append(hand_set_arm("reference_schedule", REFERENCE_SCHEDULE, args, seed, tracking_uri))
            arms["best fixed schedule (sweep study #1)"].append(hand_set_arm("best_fixed_schedule", best_fixed, args, seed, tracking_uri))
    hand_set = [name for name in arms if not name.startswith("PBT")]
    baseline = max(hand_set, key=lambda name: np.mean([row["f1"] for row in arms[name]]))  # the stronger hand-set arm
    table = summary_table(arms, baseline)
    pbt_rows = arms[f"PBT ({args.scheduler})"]
    payload = {"command": "python bench/pbt_study.py " + " ".join(sys.argv[1:]), "wall_seconds": time.perf_counter() - started,
               "baseline": baseline, "best_fixed_overrides": best_fixed, "arms": arms, "traits": common_traits(pbt_rows), "table": table}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=1, default=str))
    plot(pbt_rows, args.json.with_suffix(".png"))
    print(f"`{payload['command']}` — {payload['wall_seconds'] / 60:.1f} min\n\n{table}\n\ntraits of the chosen members: {json.dumps(payload['traits'])}")


if __name__ == "__main__":
    main()
