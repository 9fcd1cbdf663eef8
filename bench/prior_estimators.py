"""Which target-prior estimator? Every registered one, on the same checkpoints, on both target surveys.

The label-shift study (``bench/label_shift_study.py``) trains a row per estimator,
so its estimators are each read on their own model. Here every estimator of
``PRIOR_ESTIMATORS`` (``bbse``, ``em``, ``em_bcts``, ...) reads the *same*
checkpoint: the study's marginal row (``laplacian`` on ``configs/benchmark.yaml``,
``data.target`` sdss and desi), trained on ``--seeds``, evaluated with the
``priors`` group. An estimate uses source val (labelled) and target adapt
(unlabelled) predictions, as in training; the true target-test priors it is
scored against are read in evaluation only. Per target and estimator: the median
estimate and median |error| per class over seeds, the seeds with every class within
5 points, and each estimator's worst-class error against ``bbse``'s, paired by seed.

Writes ``prior_estimators.json`` and the job log ``prior_estimators.jobs.jsonl``
into ``--out`` (default ``bench/results``), and the ``prior_estimators`` section of
BENCHMARKS.md. The same command again continues from the job log.

Run: ``python bench/prior_estimators.py --data data/label_shift`` (the label-shift
study's dataset; 20 runs at the default 10 seeds, about 12 min on 2 cores);
``--smoke``: the whole pipeline on the tiny two-target dataset, one seed.
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
from jobs import BENCHMARK_CONFIG, make_job, run_all  # noqa: E402
from label_shift_study import EXPERIMENT, GROUPS, MARGINAL, TARGETS  # noqa: E402
from label_shift_tables import SURVEY_TITLES, method_name, prior_errors, prior_table  # noqa: E402
from paired import median_iqr  # noqa: E402
from study import add_common_arguments, outputs, parent_run, shown, smoke_dataset, smoke_overrides, study_command, write_section  # noqa: E402

NAME = "prior_estimators"
REFERENCE = "bbse"  # the estimator every other one is paired against


def worst_class_errors(errors: dict[str, Any]) -> dict[int, float]:
    """Seed -> the largest per-class |q̂ - q| of one (method, estimator) entry of :func:`label_shift_tables.prior_errors`."""
    return {seed: float(np.max(np.abs(np.subtract(estimate, truth))))
            for seed, estimate, truth in zip(errors["seeds"], errors["estimate"], errors["truth"])}


def against_reference(errors: list[dict[str, Any]]) -> str:
    """One line per estimator: its worst-class error against :data:`REFERENCE`'s on the same seeds, in points."""
    reference = worst_class_errors(next(e for e in errors if e["estimator"] == REFERENCE))
    lines = []
    for entry in errors:
        mine = worst_class_errors(entry)
        seeds = sorted(set(mine) & set(reference))
        median, q1, q3 = median_iqr([100 * mine[s] for s in seeds])
        if entry["estimator"] == REFERENCE:
            lines.append(f"- `{REFERENCE}`: worst-class error {median:.1f} points (IQR {q1:.1f}…{q3:.1f}) over {len(seeds)} seeds")
            continue
        differences = [100 * (mine[s] - reference[s]) for s in seeds]
        better = sum(d < 0 for d in differences)
        lines.append(f"- `{entry['estimator']}`: worst-class error {median:.1f} points (IQR {q1:.1f}…{q3:.1f}); against `{REFERENCE}` "
                     f"{np.median(differences):+.1f} points (median of per-seed differences), smaller in {better}/{len(seeds)} seeds")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/label_shift", help="a dataset holding both target surveys (default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--workers", type=int, default=2, help="trials at once (one torch thread each)")
    parser.add_argument("--tracking-uri", default=None)
    add_common_arguments(parser, NAME)
    args = parser.parse_args()
    started = time.perf_counter()
    out = outputs(args, NAME)
    if args.smoke:
        args.seeds = args.seeds[:1]

    from galaxy_da.config import load_config
    from galaxy_da.data.reader import ShardDataset
    from galaxy_da.recipes import RECIPES, recipe_overrides
    from galaxy_da.registries import PRIOR_ESTIMATORS
    from galaxy_da.sweep.tracking_server import tracking_server
    from galaxy_da.tracking import default_tracking_uri

    data = smoke_dataset(out.folder, TARGETS) if args.smoke else Path(args.data)
    if not (data / "manifest.json").is_file():
        raise SystemExit(f"--data {data}: no manifest.json; render it with python bench/label_shift_study.py --data {data}")
    dataset = ShardDataset(str(data))
    missing = [t for t in TARGETS if t not in dataset.targets]
    if missing:
        raise SystemExit(f"--data {data}: holds no target survey {', '.join(missing)} (it has {', '.join(dataset.targets)})")
    overrides = {**smoke_overrides(args), **recipe_overrides(RECIPES[MARGINAL]), "data.path": str(data), "tracking.experiment": EXPERIMENT}
    with tracking_server(out.tracking_uri(args.tracking_uri or default_tracking_uri())) as tracking_uri:
        base = load_config(BENCHMARK_CONFIG, overrides)
        parent = parent_run(base, tracking_uri, NAME, args.seeds)
        jobs = [make_job(method_name(t, MARGINAL), seed, {**overrides, "data.target": t}, parent_run_id=parent.run_id, tracking_uri=tracking_uri,
                         groups=GROUPS) for t in TARGETS for seed in args.seeds]
        results = run_all(jobs, args.workers, out.jobs)
        parent.finish()
    class_names = list(dataset.class_names)
    estimators = list(PRIOR_ESTIMATORS)
    errors = {t: [prior_errors(results, method_name(t, MARGINAL), e, class_names) for e in estimators] for t in TARGETS}
    wall = time.perf_counter() - started
    command = study_command(__file__, sys.argv[1:])
    markdown = "\n\n".join(
        [f"`{command}` ({'smoke: tiny data, not a result; ' if args.smoke else ''}{len(results)} runs of `{MARGINAL}`, seeds "
         f"{' '.join(map(str, args.seeds))}; wall time {wall / 60:.1f} min for what this invocation ran, load average at the end "
         f"{os.getloadavg()[0]:.2f}; MLflow parent run `{parent.run_id}`; JSON `{out.json.name}`)"]
        + [f"**{SURVEY_TITLES[t]} target** (`data.target={t}`), every estimator on the same `{MARGINAL}` checkpoints:\n\n"
           f"{prior_table(errors[t], class_names)}\n\n{against_reference(errors[t])}" for t in TARGETS])
    out.write_json({"command": command, "smoke": args.smoke, "wall_seconds": wall, "load_average": os.getloadavg(), "data": shown(data),
                    "manifest_sha256": dataset.manifest_hash, "model": MARGINAL, "seeds": args.seeds, "estimators": estimators,
                    "parent_run_id": parent.run_id, "prior_errors": errors, "results": results, "table_markdown": markdown})
    write_section(out.benchmarks, NAME, markdown)
    print(f"{markdown}\n\n{out.json}, section '{NAME}' of {out.benchmarks}")


if __name__ == "__main__":
    main()
