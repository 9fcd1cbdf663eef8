"""The label-shift study (issue 18 item 4): does label-shift-aware alignment survive a change of class priors?

Two target surveys of one rendered dataset (``data.target``): SDSS-like (priors
close to the source's) and DESI-like (ellipticals from a fifth to three fifths).
On each, with the quality protocol (``configs/benchmark.yaml``, the label-free
``src_val`` checkpoint choice, seed-paired statistics of :mod:`paired`), the rows:

- ``source_only``; ``target_oracle`` (trained on the target adapt labels of a
  target-as-source copy, :func:`oracle.write_target_as_source`: an upper bound);
- ``laplacian``, the best marginal alignment of the protocol-2 quality table (by
  the label-free score; BENCHMARKS.md, quality), and its label-shift-aware
  versions ``laplacian+bbse`` and ``laplacian+em`` (``align.label_shift``: the
  source side weighted by ``w_y = q̂(y)/p(y)``, q̂ re-estimated every aligning epoch);
- ``sinkhorn`` and unbalanced Sinkhorn ``sinkhorn+reach1`` (``align.reach``, the
  third answer to label shift, compared with its balanced version);
- ``dann`` and its weighted version ``dann+<best estimator>`` (IWDAN).

Seeds: every row runs ``--seeds`` (0–4); the key rows (source-only, laplacian,
laplacian + the best estimator, dann, dann + the best estimator) also run
``--more-seeds`` (5–9). The best estimator is chosen per target by the mean
label-free selection score of its laplacian row on ``--seeds``, never by target
labels. Every run is evaluated on the target test split with the ``priors`` group
too: the true target-test priors beside each estimator's estimate at the chosen
checkpoint. Goals (written met or missed with their figures; :mod:`label_shift_tables`):
the prior estimate within 5 points per class; on DESI-like, the label-shift-aware
laplacian beats the marginal one by ≥ 5 macro-F1 points (median, paired, Wilcoxon);
on SDSS-like it is no worse.

Run: ``python bench/label_shift_study.py --data data/label_shift`` (renders the
dataset when missing: 3000 source + 2500 per target survey, both surveys in one
dataset, and one target-as-source copy per survey). 140 runs: 2 targets × (8 rows
× 5 seeds + 4 key rows × 5 more seeds + the weighted DANN × 10 seeds). Estimated
wall time on 2 cores, not measured: about 1 h 45 min. The quality study ran 85
runs in 53 min (37 s of wall time a run at 2 workers), so 140 such runs take
87 min; the 50 label-shift-aware runs predict source val and target adapt (600 +
2000 galaxies) before each of their 6 aligning epochs, about +30 % each (+10 min),
every evaluation adds a target adapt pass (a few minutes), and rendering 8000
galaxies adds some minutes more. Each finished job is appended to
``<out>/label_shift.jobs.jsonl`` (``bench/results/``); the same command again
skips those jobs and continues (``--fresh`` starts over; jobs are keyed by method
and command, not by code version). ``--smoke``: the whole pipeline on a tiny
two-target dataset, the first of ``--seeds`` for every row and the first of
``--more-seeds`` for the key rows (28 runs), in a few minutes (``bench/study.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from jobs import EVAL_GROUPS, REPO, make_job, run_all  # noqa: E402
from label_shift_tables import (SURVEY_TITLES, aware, best_estimator, calibration_line, gain_goal, goal_lines, method_name,  # noqa: E402
                                no_worse_goal, plot, prior_errors, prior_goal, prior_table, table)
from oracle import write_target_as_source  # noqa: E402
from study import (Outputs, add_common_arguments, commands, finished_jobs_kept, invocation_timings, outputs, parent_run, smoke_dataset,  # noqa: E402
                   smoke_overrides, study_command, timing_text, write_section)

PROTOCOL = 1
NAME = "label_shift"
TARGETS = ("sdss", "desi")
MARGINAL = "laplacian"  # the best marginal alignment of the protocol-2 quality table by the label-free score (protocol 3 prefers sinkhorn, within the spread)
REACH = 1.0  # GeomLoss reach (rho = reach^2) on L2-normalised features (distances <= 2; the benchmark's blur is 0.5)
GROUPS = (*EVAL_GROUPS, "priors")
EXPERIMENT = "label-shift-study"
ESTIMATORS = ("bbse", "em")  # protocol 1's rows; em_bcts came later (bench/prior_estimators.py compares them all on one model)


def phase_one_rows(estimators: tuple[str, ...], reach: float) -> dict[str, dict[str, Any]]:
    """Every row that does not wait for the estimator choice -> its ``align.*`` overrides (``target_oracle`` apart)."""
    from galaxy_da.recipes import RECIPES, recipe_overrides

    recipe = lambda name: recipe_overrides(RECIPES[name])
    rows = {"source_only": recipe("source_only"), MARGINAL: recipe(MARGINAL)}
    rows |= {aware(MARGINAL, e): {**recipe(MARGINAL), "align.label_shift": e} for e in estimators}
    rows |= {"sinkhorn": recipe("sinkhorn"), unbalanced(reach): {**recipe("sinkhorn"), "align.reach": reach}, "dann": recipe("dann")}
    return rows


def unbalanced(reach: float) -> str:
    return f"sinkhorn+reach{reach:g}"


def marginal_counterparts(estimators: tuple[str, ...], reach: float) -> dict[str, str]:
    """Each label-shift-aware or unbalanced row -> the marginal row it is paired against."""
    return {**{aware(m, e): m for m in (MARGINAL, "dann") for e in estimators}, unbalanced(reach): "sinkhorn"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/label_shift")
    parser.add_argument("--n-source", type=int, default=3000)
    parser.add_argument("--n-target", type=int, default=2500, help="galaxies per target survey")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="every row")
    parser.add_argument("--more-seeds", type=int, nargs="*", default=[5, 6, 7, 8, 9], help="the key rows too")
    parser.add_argument("--reach", type=float, default=REACH, help="align.reach of the unbalanced Sinkhorn row (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="trials at once (one torch thread each)")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--fresh", action="store_true", help=f"ignore the finished jobs kept in <out>/{NAME}.jobs.jsonl")
    add_common_arguments(parser, NAME)
    parser.add_argument("overrides", nargs="*", help="dotted overrides of configs/benchmark.yaml for every row")
    args = parser.parse_args()
    started = time.perf_counter()
    out = outputs(args, NAME)
    if args.smoke:  # one seed for every row, one more for the key rows: both phases run, key rows paired on 2 seeds
        args.seeds, args.more_seeds = args.seeds[:1], args.more_seeds[:1]
        args.overrides = [f"{k}={v}" for k, v in smoke_overrides(args).items()] + args.overrides

    from galaxy_da.data import synth
    from galaxy_da.sweep.tracking_server import tracking_server
    from galaxy_da.tracking import default_tracking_uri

    data = smoke_dataset(out.folder, TARGETS) if args.smoke else Path(args.data)
    if not (data / "manifest.json").is_file():
        synth.generate(data, seed=0, n_source=args.n_source, n_target=args.n_target, workers=2, targets=list(TARGETS))
    oracle_data = {target: data.with_name(f"{data.name}-{target}-as-source") for target in TARGETS}
    for target, path in oracle_data.items():
        if not (path / "manifest.json").is_file():
            write_target_as_source(str(data), path, seed=0, target=target)
    # concurrent trials log through one tracking server, never straight into the sqlite file
    with tracking_server(out.tracking_uri(args.tracking_uri or default_tracking_uri())) as tracking_uri:
        study(args, out, data, oracle_data, tracking_uri, started)


def study(args: argparse.Namespace, out: Outputs, data: Path, oracle_data: dict[str, Path], tracking_uri: str, started: float) -> None:
    from galaxy_da.config import load_config, parse_override
    from galaxy_da.data.reader import ShardDataset
    from galaxy_da.metrics import majority_baseline
    estimators = ESTIMATORS
    base = load_config(REPO / "configs" / "benchmark.yaml", [f"data.path={data}", f"tracking.experiment={EXPERIMENT}", *args.overrides])
    parent = parent_run(base, tracking_uri, "label-shift-study", args.seeds + args.more_seeds)
    extra = dict(parse_override(text) for text in args.overrides)
    done, kept_before = out.jobs, finished_jobs_kept(out, args.fresh)

    def jobs(target: str, rows: dict[str, dict[str, Any]], seeds: list[int]) -> list[dict[str, Any]]:
        common = {"data.path": str(data), "data.target": target, "tracking.experiment": EXPERIMENT}
        return [make_job(method_name(target, row), seed, {**common, **overrides, **extra}, parent_run_id=parent.run_id,
                         tracking_uri=tracking_uri, groups=GROUPS) for row, overrides in rows.items() for seed in seeds]

    rows = phase_one_rows(estimators, args.reach)
    first = [job for target in TARGETS for job in jobs(target, rows, args.seeds)]
    first += [job for target in TARGETS for job in jobs(target, {"target_oracle": {**rows["source_only"], "data.path": str(oracle_data[target])}}, args.seeds)]
    results = run_all(first, args.workers, done)
    best = {target: best_estimator(results, target, MARGINAL, estimators) for target in TARGETS}  # label-free: no target label
    key_rows = {target: ("source_only", MARGINAL, aware(MARGINAL, best[target]), "dann") for target in TARGETS}
    weighted_dann = {target: aware("dann", best[target]) for target in TARGETS}
    second = [job for target in TARGETS for job in jobs(target, {weighted_dann[target]: {**rows["dann"], "align.label_shift": best[target]}},
                                                          args.seeds + args.more_seeds)]
    if args.more_seeds:
        second += [job for target in TARGETS for job in jobs(target, {row: rows[row] for row in key_rows[target]}, args.more_seeds)]
    results += run_all(second, args.workers, done)

    marginal_of = marginal_counterparts(estimators, args.reach)
    datasets = {target: ShardDataset(str(data), target=target) for target in TARGETS}
    class_names = list(datasets[TARGETS[0]].class_names)
    majority = {t: majority_baseline(d.counts("source", "train"), d.evaluation_view().labelled("target", "test").labels, class_names)
                for t, d in datasets.items()}
    order = {t: ["source_only", "target_oracle", MARGINAL, *(aware(MARGINAL, e) for e in estimators), "sinkhorn", unbalanced(args.reach),
                 "dann", weighted_dann[t]] for t in TARGETS}
    # each estimator on the marginal model (what the weighting starts from), then each label-shift-aware row's own estimator
    estimated = {t: [(MARGINAL, e) for e in estimators] + [(aware(MARGINAL, e), e) for e in estimators] + [(weighted_dann[t], best[t])] for t in TARGETS}
    errors = {t: [prior_errors(results, method_name(t, row), estimator, class_names) for row, estimator in estimated[t]] for t in TARGETS}
    goals = {
        "priors": {t: prior_goal(next(e for e in errors[t] if e["method"] == method_name(t, aware(MARGINAL, best[t])))) for t in TARGETS},
        "gain": gain_goal(results, method_name("desi", aware(MARGINAL, best["desi"])), method_name("desi", MARGINAL)),
        "no_worse": no_worse_goal(results, method_name("sdss", aware(MARGINAL, best["sdss"])), method_name("sdss", MARGINAL)),
    }
    tables = {t: table(results, t, order[t], marginal_of, class_names, majority[t]) for t in TARGETS}
    weighted_errors = {t: [e for e in errors[t] if e["method"] != method_name(t, MARGINAL)] for t in TARGETS}
    figure = plot(results, TARGETS, marginal_of, weighted_errors, class_names, out.plot())
    all_methods = [method_name(t, row) for t in TARGETS for row in order[t]]
    wall = time.perf_counter() - started
    command = study_command(__file__, sys.argv[1:])
    parent.log_text("\n\n".join(tables.values()) + "\n\n" + commands(results, all_methods), "leaderboard.md")
    parent.log_artifact(figure, "plots")
    parent.log_metrics({"wall_seconds": wall})
    parent.finish()
    timings = invocation_timings(out.json, PROTOCOL, {"command": command, "wall_seconds": wall, "jobs_run": len(done.read_text().splitlines()) - kept_before,
                                                      "load_average": os.getloadavg(), "finished": time.strftime("%Y-%m-%d %H:%M"),
                                                      "parent_run_id": parent.run_id})
    payload = {"protocol": PROTOCOL, "smoke": args.smoke, "command": command, "wall_seconds": wall, "job_seconds": sum(r["seconds"] for r in results),
               "timings": timings, "load_average": os.getloadavg(), "data": str(data), "manifest_sha256": datasets[TARGETS[0]].manifest_hash,
               "targets": list(TARGETS), "class_names": class_names, "seeds": args.seeds, "more_seeds": args.more_seeds, "marginal": MARGINAL,
               "reach": args.reach, "best_estimator_by_label_free_score": best, "key_rows": {t: [*key_rows[t], weighted_dann[t]] for t in TARGETS}, "weighted_dann": weighted_dann,
               "parent_run_id": parent.run_id, "majority": majority, "prior_errors": errors, "goals": goals, "results": results,
               "tables_markdown": tables, "commands": commands(results, all_methods)}
    out.write_json(payload)
    write_section(out.benchmarks, NAME, section(payload, out.json.name, figure.name))
    print(f"`{command}` — wall time {wall / 60:.1f} min, MLflow parent run {parent.run_id}; {out.json}, {figure}, section '{NAME}' of {out.benchmarks}\n")
    print("\n\n".join(tables.values()) + "\n\n" + goal_lines(goals))


def section(payload: dict[str, Any], json_name: str, plot_name: str) -> str:
    """The study's BENCHMARKS.md section from its JSON payload: provenance, goals, then per target its table, priors and calibration."""
    results, class_names = payload["results"], payload["class_names"]
    parts = [f"`{payload['command']}` ({'smoke, ' if payload['smoke'] else ''}{len(results)} runs, {payload['job_seconds'] / 60:.1f} job-minutes; "
             f"{timing_text(payload['timings'], payload['command'])}; JSON `{json_name}`, plot `{plot_name}`)",
             f"Best estimator by the mean label-free selection score of the {payload['marginal']} rows on seeds "
             + " ".join(map(str, payload["seeds"])) + ": "
             + ", ".join(f"{SURVEY_TITLES[t]} {e}" for t, e in payload["best_estimator_by_label_free_score"].items()) + ".",
             goal_lines(payload["goals"])]
    for target in payload["targets"]:
        parts += [f"**{SURVEY_TITLES[target]} target** (`data.target={target}`): target test macro-F1, median (IQR) over seeds; "
                  "differences paired by seed, two-sided Wilcoxon p.", payload["tables_markdown"][target],
                  f"Estimated against true target-test priors ({' / '.join(class_names)}) at each run's chosen checkpoint "
                  f"(the {payload['marginal']} rows: each estimator applied to the unweighted model):",
                  prior_table(payload["prior_errors"][target], class_names), calibration_line(results, target)]
    parts.append("Reproduce a row:\n\n" + payload["commands"])
    return "\n\n".join(parts)


if __name__ == "__main__":
    main()
