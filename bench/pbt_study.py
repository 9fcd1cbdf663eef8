"""Learned against hand-set alignment schedules on paired fresh training seeds, with the epochs each arm actually trained.

Three arms per study seed ``s``, each of ``--members`` trials, each choosing its
model with the label-free rule ``src_val`` only:

- **PBT** (or PB2): a population (``sweeps/pbt_schedules.py``'s space and mutations:
  λ = ``align.weight``, ``align.blur``, ``align.topk``, ``optim.lr``) on
  ``configs/sweep_pbt_schedules.yaml``, perturbed every ``--interval`` epochs after
  warm-up; the member with the best label-free score on the full splits
  (``galaxy-da report``) is the arm's model;
- **reference σ-schedule**: the reference's hand-set recipe (Laplacian MMD,
  trainable Kendall weights, entropy, the top-k OT add-on, the exponential
  σ-schedule of ``configs/laplacian_trainable_blur.yaml``) on ``configs/benchmark.yaml``;
- **best fixed schedule**: ``top[0]["overrides"]`` of ``bench/results/sweep_study.json``
  (dotted overrides of ``configs/benchmark.yaml`` that replay the sweep study's best
  trial, method included); a smoke without that file uses a named recipe and says so.

Pairing: trial ``i`` of every arm of study seed ``s`` trains on seed
``t_i = --fresh-base + members * s + i``: PBT member ``i`` starts from ``t_i`` (the
population's ``seed`` grid; PBT never mutates the seed, a copy takes the copied
member's state), hand-set run ``i`` trains ``t_i``. These seeds are checked to be
disjoint from every seed used to choose a configuration (:func:`seeds_used_to_choose`).

Compute: each arm's trial-epochs are the epochs its trials actually trained: a PBT
member's ``compute/epochs_trained`` (epochs it re-trained after copying an older
checkpoint count again), a hand-set run's epochs. Target labels are read only for
the table. Writes ``pbt_study.json``, the learned-schedule plot ``pbt_study.png``,
and the ``pbt_study`` section of BENCHMARKS.md; hand-set jobs and finished
populations are logged (``pbt_study.jobs.jsonl``, ``pbt_study.populations.jsonl``),
so an interrupted study continues where it stopped.

Run: ``python bench/pbt_study.py --data data/quality --seeds 0 1 2`` (about 1 hour on 2 cores)
     ``python bench/pbt_study.py --smoke`` (a few minutes; 2 members, 1 study seed, tiny data)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jobs import REPO, make_job, run_all  # noqa: E402
from paired import cell, paired_difference  # noqa: E402
from study import RESULTS, Outputs, add_common_arguments, outputs, smoke_dataset, shown, smoke_overrides, study_command, write_section  # noqa: E402

NAME = "pbt_study"
F1 = "eval/tgt_test/macro_f1"
PBT_CONFIG = REPO / "configs" / "sweep_pbt_schedules.yaml"
GOAL_POINTS = 2.0
# Seeds that chose something the arms rely on (keep in step with those scripts' defaults):
QUALITY_SEEDS = range(10)  # bench/quality.py --seeds 0-4 --more-seeds 5-9: the best recipes, the untuned baseline
SWEEP_STUDY_SEEDS = (0, 100, 101, 102)  # bench/sweep_study.py: its trials train seed 0 (the pick), fresh retrains 100-102 (its JSON's fresh_seeds too)
# what the arms set for themselves: seed, data, tracking, and the sweep study's rule audit (it scores, never trains)
NOT_REPLAYED = ("seed", "data.path", "selection.audit_rules")
FALLBACK_RECIPE = "laplacian"  # a smoke without a sweep study: the Laplacian recipe with the top-k OT add-on, constant λ


def reference_schedule() -> dict[str, Any]:
    """The reference's hand-set schedule (``configs/laplacian_trainable_blur.yaml``) as overrides of the benchmark config."""
    from galaxy_da.config import flatten
    from galaxy_da.recipes import RECIPES, recipe_overrides

    blur = {"kind": "exponential", "start": 1.0, "end": 0.1, "rate": 0.9, "floor": 0.1}
    return {**recipe_overrides(RECIPES["reference_recipe"]), "align.blur_floor": 0.1, **flatten(blur, "schedules.blur.")}


def best_fixed_schedule(path: Path, smoke: bool) -> tuple[str, dict[str, Any]]:
    """(where it comes from, overrides): the sweep study's best configuration, or for a smoke without one a named recipe."""
    from galaxy_da.recipes import recipe_overrides, with_topk

    if path.is_file():
        top = json.loads(path.read_text())["top"][0]
        replay = {k: v for k, v in top["overrides"].items() if k not in NOT_REPLAYED and not k.startswith("tracking.")}
        return f"sweep study #1 ({' · '.join(map(str, top.get('varied', {}).values())) or top.get('run_id')}; {shown(path)})", replay
    if not smoke:
        raise SystemExit(f"{path}: no sweep study results; run bench/sweep_study.py first (or pass --best-fixed-json)")
    return f"recipe {FALLBACK_RECIPE}+topk_ot (smoke: no sweep study at {path})", recipe_overrides(with_topk(FALLBACK_RECIPE))


def seeds_used_to_choose(sweep_study: Path) -> set[int]:
    """Every training seed a configuration was chosen on: the quality table's, the sweep study's (and those its JSON records)."""
    used = set(QUALITY_SEEDS) | set(SWEEP_STUDY_SEEDS)
    if sweep_study.is_file():
        payload = json.loads(sweep_study.read_text())
        used |= set(payload.get("fresh_seeds", [])) | {int(r["seed"]) for r in payload.get("fresh", [])}
    return used


def training_seeds(args: argparse.Namespace, study_seed: int, used: set[int]) -> list[int]:
    """``t_i = fresh_base + members * s + i``: the same seeds for every arm of study seed ``s``, none used to choose."""
    seeds = [args.fresh_base + args.members * study_seed + i for i in range(args.members)]
    reused = sorted(set(seeds) & used)
    if reused:
        raise SystemExit(f"training seeds {reused} of study seed {study_seed} were used to choose a configuration "
                         f"(seeds used: {sorted(used)}); pick a --fresh-base whose block avoids them")
    return seeds


def load_sweep_script(name: str) -> dict[str, Any]:
    path = REPO / "sweeps" / f"{name}.py"
    namespace: dict[str, Any] = {"__name__": "study", "__file__": str(path)}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace


# --------------------------------------------------------------------------- the arms


# A smoke's population needs perturbations before its last epoch (Tune's final result never reaches PBT):
# 6 epochs, one warm-up, interval 1 put them at epochs_done 2..5, so a member can copy from the second.
PBT_SMOKE_EPOCHS = 6


def budget(args: argparse.Namespace) -> dict[str, Any]:
    """The trial budget overrides of every arm: the smoke's (with :data:`PBT_SMOKE_EPOCHS`), or none."""
    return {**smoke_overrides(args), "optim.epochs": PBT_SMOKE_EPOCHS} if args.smoke else {}


def population(args: argparse.Namespace, study_seed: int, seeds: list[int], tracking_uri: str, out: Outputs) -> dict[str, Any]:
    """One population, member ``i`` starting from seed ``t_i``; its label-free pick, evaluated on target test.

    Run, resumed when unfinished, or reused when its parent run finished (the study stopped after its sweep).
    """
    from mlflow.tracking import MlflowClient

    from galaxy_da.config import load_config
    from galaxy_da.sweep.settings import SweepSettings
    from galaxy_da.sweep.state import read_sweep_state
    from galaxy_da.sweep.tuner import run_sweep

    script = load_sweep_script("pbt_schedules")
    cfg = load_config(PBT_CONFIG, {"data.path": str(args.data), "tracking.experiment": "pbt-study", **budget(args)})
    settings = SweepSettings(
        name=f"pbt-study-{args.scheduler}-m{args.members}-i{args.interval}-t{seeds[0]}", space={**script["SPACE"], "seed": {"grid": seeds}},
        mutations=script["MUTATIONS"], scheduler=args.scheduler, searcher="random", seed=study_seed, num_samples=1,
        max_concurrent=args.workers, num_cpus=args.workers, perturbation_interval=args.interval, quantile_fraction=0.25, synchronous=args.synchronous,
        tracking_uri=tracking_uri, address="local", storage_path=str(out.folder / "ray" if args.smoke else REPO / "ray_results"),
    )
    state = read_sweep_state(settings)
    if state is not None and MlflowClient(tracking_uri).get_run(state["parent_run_id"]).info.status == "FINISHED":
        return population_row(state["parent_run_id"], tracking_uri, study_seed, seeds, script["MUTATIONS"])
    sweep = run_sweep(cfg, settings, resume=state is not None)
    if not sweep.complete:
        raise SystemExit(f"population of study seed {study_seed} did not finish ({sweep.experiment_path}); run the study again to resume it")
    return population_row(sweep.parent_run_id, tracking_uri, study_seed, seeds, script["MUTATIONS"])


def population_row(parent_run_id: str, tracking_uri: str, study_seed: int, seeds: list[int], mutations: dict[str, Any]) -> dict[str, Any]:
    """Members (start seed, knobs in force, label-free score, target F1, epochs trained), the pick, lineage and schedules."""
    from mlflow.tracking import MlflowClient

    from galaxy_da.report import ORACLE_COLUMN, build_report, score_column
    from galaxy_da.sweep.explore import outside
    from galaxy_da.sweep.leaderboard import TRIAL_TAG, child_runs
    from galaxy_da.sweep.lineage import config_in_force, copy_events, member_schedules
    from galaxy_da.sweep.trainable import epochs_trained

    client = MlflowClient(tracking_uri)
    runs = child_runs(client, client.get_run(parent_run_id).info.experiment_id, parent_run_id)
    report = build_report(parent_run_id, tracking_uri)
    column = score_column(report.sort_rule)
    rows = {row["run_id"]: row for row in report.rows}
    schedules = member_schedules(client, runs)
    members = []
    for run in runs:
        row, params = rows.get(run.info.run_id, {}), run.data.params
        best_epoch = int(run.data.metrics.get("best/epoch", -1))
        members.append({
            "run_id": run.info.run_id, "member": run.data.tags.get(TRIAL_TAG), "seed": int(params["seed"]),  # params: the member at its start
            "knobs_in_force": {path: config_in_force(params).get(path) for path in mutations},
            # the knobs of the epoch its chosen checkpoint (best.pt) was trained in: may predate its last copy
            "best_epoch": best_epoch, "knobs_at_best": {knob: dict(points).get(best_epoch)
                                                        for knob, points in schedules.get(run.data.tags.get(TRIAL_TAG, run.info.run_id[:8]), {}).items()},
            "label_free": row.get(column, math.nan), "f1": row.get(ORACLE_COLUMN, math.nan), "epochs_trained": epochs_trained(client, run.info.run_id),
        })
    if sorted(m["seed"] for m in members) != sorted(seeds):
        raise SystemExit(f"population {parent_run_id}: members start from seeds {sorted(m['seed'] for m in members)}, expected {seeds}")
    scored = [m for m in members if math.isfinite(m["label_free"])]
    if not scored:
        raise SystemExit(f"population {parent_run_id}: no member has a label-free score ({report.skipped})")
    chosen = max(scored, key=lambda m: m["label_free"])
    events, strays = copy_events(client, runs), []
    for event in events:  # each copy is one explore step: its knobs after must lie in the declared space
        bad = outside(mutations, {path: knob["after"] for path, knob in event["knobs"].items()})
        if bad:
            strays.append({"member": event["member"], "epoch": event["epoch"], "outside": bad})
    return {
        "seed": study_seed, "training_seeds": seeds, "parent_run_id": parent_run_id, "rule": column, "chosen_run": chosen["run_id"],
        "chosen_member": chosen["member"], "label_free": chosen["label_free"], "f1": chosen["f1"], "members": members,
        "trial_epochs": sum(m["epochs_trained"] for m in members), "copies": events, "explored_outside_space": strays,
        "schedules": schedules,
    }


def hand_set_arm(method: str, overrides: dict[str, Any], args: argparse.Namespace, study_seed: int, seeds: list[int],
                 tracking_uri: str, out: Outputs) -> dict[str, Any]:
    """Run ``i`` trains seed ``t_i``; the arm's model is the run with the best label-free score."""
    settings = {"data.path": str(args.data), **overrides, **budget(args), "tracking.experiment": "pbt-study"}
    results = run_all([make_job(method, t, settings, parent_run_id=None, tracking_uri=tracking_uri) for t in seeds], args.workers, out.jobs)
    best = max(results, key=lambda r: r["selection_score"])
    return {"seed": study_seed, "training_seeds": seeds, "chosen_run": best["run_id"], "label_free": best["selection_score"],
            "f1": best["metrics"][F1], "trial_epochs": sum(r["epochs_trained"] for r in results),
            "members": [{"run_id": r["run_id"], "seed": r["seed"], "label_free": r["selection_score"], "f1": r["metrics"][F1],
                         "epochs_trained": r["epochs_trained"], "command": r["command"]} for r in results]}


def finished_populations(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    return {entry["key"]: entry["row"] for entry in map(json.loads, path.read_text().splitlines()) if entry}


# --------------------------------------------------------------------------- analysis


def summary_table(arms: dict[str, list[dict[str, Any]]], baseline: str) -> str:
    """Per arm: each study seed's training seeds, trial-epochs and chosen model's F1; median (IQR); paired Δ to ``baseline``."""
    picks = [{"method": name, "seed": row["seed"], "metrics": {F1: row["f1"]}} for name, rows in arms.items() for row in rows]
    lines = [f"| arm | training seeds (study seed) | trial-epochs actually trained | chosen model's target macro-F1 | median (IQR) "
             f"| Δ vs {baseline}: paired differences, mean | wins |", "|---|---|---|---|---|---|---|"]
    for name, rows in arms.items():
        seeds = "; ".join(f"{' '.join(map(str, row['training_seeds']))} ({row['seed']})" for row in rows)
        epochs = ", ".join(str(row["trial_epochs"]) for row in rows)
        f1 = [row["f1"] for row in rows]
        delta, wins = "–", "–"
        if name != baseline:
            paired = paired_difference(picks, name, baseline, F1)
            diffs = [row["f1"] - base["f1"] for row in rows for base in arms[baseline] if base["seed"] == row["seed"]]
            delta = f"{', '.join(f'{100 * d:+.1f}' for d in diffs)}; {100 * np.mean(diffs):+.2f} points"
            wins = f"{paired['wins']}/{paired['n']}"
        lines.append(f"| {name} | {seeds} | {epochs} | {', '.join(f'{v:.3f}' for v in f1)} | {cell(f1)} | {delta} | {wins} |")
    return "\n".join(lines)


def common_traits(pbt_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """For each knob: its value at the first recorded epoch and at the end, for each chosen member."""
    traits: dict[str, Any] = {}
    for row in pbt_rows:
        for knob, points in row["schedules"].get(row["chosen_member"], {}).items():
            if points:
                traits.setdefault(knob, []).append({"seed": row["seed"], "start": points[0][1], "end": points[-1][1]})
    return traits


def plot(pbt_rows: list[dict[str, Any]], path: Path) -> Path:
    from galaxy_da.plots import save
    from galaxy_da.sweep.lineage import plot_schedules

    schedules = {f"seed {row['seed']}: {member}{' (chosen)' if member == row['chosen_member'] else ''}": knobs
                 for row in pbt_rows for member, knobs in row["schedules"].items()}
    return save(plot_schedules(schedules, "schedules learned by the population (every member of every study seed)"), path)


def markdown(payload: dict[str, Any]) -> str:
    pbt, baseline, load = payload["pbt_arm"], payload["baseline"], payload["load_average"]
    goal = "met" if payload["pbt_minus_baseline_points"] >= GOAL_POINTS else "missed"
    compute = ", ".join(f"{name} {epochs}" for name, epochs in payload["trial_epochs"].items())
    equal = "equal" if len(set(payload["trial_epochs"].values())) == 1 else "not equal"
    strays = sum(len(row["explored_outside_space"]) for row in payload["arms"][pbt])
    return "\n\n".join([
        f"### PBT study: learned against hand-set alignment schedules{' (SMOKE: tiny data, 3 epochs; not a result)' if payload['smoke'] else ''}",
        f"`{payload['command']}`: {payload['wall_seconds'] / 60:.1f} min wall, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min) at the end.",
        f"Each arm trains the same fresh seeds per study seed (trial i on seed t_i; disjoint from the {len(payload['seeds_used_to_choose'])} "
        f"seeds used to choose a configuration) and picks its model by the label-free rule only. Best fixed schedule: {payload['best_fixed_from']}.",
        payload["table"],
        f"{pbt} minus {baseline} (the stronger hand-set arm): {payload['pbt_minus_baseline_points']:+.2f} macro-F1 points, mean of paired "
        f"differences over {len(payload['arms'][pbt])} study seed(s); goal ≥ {GOAL_POINTS:.0f} points: **{goal}**.",
        f"Trial-epochs actually trained, all study seeds: {compute} ({equal}: a PBT member re-trains epochs after copying an older "
        f"checkpoint and skips some after copying a newer one; both are counted as trained). Explored values outside the declared space: {strays}. Learned schedules: `{payload['plot']}`.",
    ])


def analyse(arms: dict[str, list[dict[str, Any]]], pbt: str, args: argparse.Namespace, out: Outputs, started: float, extra: dict[str, Any]) -> dict[str, Any]:
    hand_set = [name for name in arms if name != pbt]
    baseline = max(hand_set, key=lambda name: np.mean([row["f1"] for row in arms[name]]))  # the stronger hand-set arm
    diffs = [row["f1"] - base["f1"] for row in arms[pbt] for base in arms[baseline] if base["seed"] == row["seed"]]
    payload = {
        "command": study_command(__file__, sys.argv[1:]), "smoke": args.smoke, "wall_seconds": time.perf_counter() - started,
        "load_average": os.getloadavg(), "pbt_arm": pbt, "baseline": baseline, "pbt_minus_baseline_points": 100 * float(np.mean(diffs)),
        "trial_epochs": {name: sum(row["trial_epochs"] for row in rows) for name, rows in arms.items()},
        "arms": arms, "traits": common_traits(arms[pbt]), "table": summary_table(arms, baseline), "plot": shown(out.plot()), **extra,
    }
    plot(arms[pbt], out.plot())
    out.write_json(payload)
    write_section(out.benchmarks, NAME, markdown(payload))
    return payload


# --------------------------------------------------------------------------- command line


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser, NAME)
    parser.add_argument("--data", type=Path, default=Path("data/quality"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="study seeds (each a paired replicate of all arms)")
    parser.add_argument("--members", type=int, default=4, help="population size = runs per hand-set arm")
    parser.add_argument("--interval", type=int, default=2, help="PBT perturbation interval (epochs)")
    parser.add_argument("--scheduler", default="pbt", choices=["pbt", "pb2"])
    parser.add_argument("--synchronous", action="store_true",
                        help="members wait for each other at every perturbation point (default: asynchronous, as measured)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fresh-base", type=int, default=200, help="first training seed of the fresh block (t_i = base + members * s + i)")
    parser.add_argument("--best-fixed-json", type=Path, default=None,
                        help="the sweep study whose top[0] is the best fixed schedule (default: bench/results/sweep_study.json; "
                             "with --smoke: sweep_study.json in --out, else a named recipe)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds, args.members, args.interval = args.seeds[:1], min(args.members, 2), 1
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    started = time.perf_counter()
    out = outputs(args, NAME)
    if args.smoke:
        args.data = smoke_dataset(out.folder)
    sweep_json = args.best_fixed_json or (out.folder if args.smoke else RESULTS) / "sweep_study.json"
    best_from, best_fixed = best_fixed_schedule(sweep_json, args.smoke)
    used = seeds_used_to_choose(sweep_json)
    seeds = {s: training_seeds(args, s, used) for s in args.seeds}

    from galaxy_da.sweep.tracking_server import tracking_server
    from galaxy_da.tracking import default_tracking_uri

    pbt = f"PBT ({args.scheduler})"
    arms: dict[str, list[dict[str, Any]]] = {pbt: [], "reference σ-schedule + trainable weights": [], "best fixed schedule": []}
    log, done = out.folder / f"{NAME}.populations.jsonl", finished_populations(out.folder / f"{NAME}.populations.jsonl")
    with tracking_server(out.tracking_uri(default_tracking_uri())) as tracking_uri:
        for s in args.seeds:
            key = f"{args.scheduler} members={args.members} interval={args.interval} seeds={seeds[s]}"
            if key not in done:
                done[key] = population(args, s, seeds[s], tracking_uri, out)
                with log.open("a") as stream:
                    stream.write(json.dumps({"key": key, "row": done[key]}, default=str) + "\n")
            arms[pbt].append(done[key])
            arms["reference σ-schedule + trainable weights"].append(hand_set_arm("reference_schedule", reference_schedule(), args, s, seeds[s], tracking_uri, out))
            arms["best fixed schedule"].append(hand_set_arm("best_fixed_schedule", best_fixed, args, s, seeds[s], tracking_uri, out))
    extra = {"best_fixed_from": best_from, "best_fixed_overrides": best_fixed, "reference_overrides": reference_schedule(),
             "seeds_used_to_choose": sorted(used), "training_seeds": seeds}
    payload = analyse(arms, pbt, args, out, started, extra)
    print(f"{markdown(payload)}\n\n{out.json}")


if __name__ == "__main__":
    main()
