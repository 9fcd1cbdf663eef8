"""Why is source-only transfer bimodal on the quality benchmark? Seeds x input normalisations.

Source-only (``align.method=none``: no target batch is ever drawn) with the
quality benchmark's budget (``configs/benchmark.yaml``), for many seeds and each
input normalisation of :data:`galaxy_da.trial_data.NORMALISATIONS`:

- ``per_domain``: each domain standardised with its own training-split channel
  statistics (target: the unlabelled adapt split). The default — and already a
  form of adaptation (it matches the first two moments of the inputs);
- ``shared``: one set of statistics from both domains' training splits;
- ``none``: raw [0, 1] pixels.

After every epoch the ORACLE trace (:class:`oracle.OracleTrace`, analysis only)
scores ``last.pt`` on the labelled target test split, so the table shows both the
checkpoint the label-free rule picks and how target macro-F1 moves from epoch to
epoch. Writes ``bench/results/source_only_modes.json`` and a plot of the
per-epoch target macro-F1 of every seed, one panel per normalisation.

Run: ``python bench/source_only_modes.py --data data/quality --seeds 0 1 2 3 4 5 6 7 8 9``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from study import study_command  # noqa: E402


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from galaxy_da.config import load_config
    from galaxy_da.train import Trainer
    from oracle import OracleTrace

    torch.set_num_threads(1)
    overrides = [f"data.path={job['data']}", "align.method=none", f"seed={job['seed']}", f"data.normalization={job['normalization']}"]
    cfg = load_config(REPO / "configs" / "benchmark.yaml", overrides + job["overrides"])
    trace, trainer = OracleTrace(cfg, every_epoch=True), Trainer(cfg)
    for record in trainer.epochs():
        trace(record, trainer)
    result = trainer.result()
    return {
        "normalization": job["normalization"], "seed": job["seed"], "best_epoch": result.best_epoch,
        "selected": trace.at(result.best_epoch), "oracle_best": trace.best_scored(), "epochs": trace.epochs,
        "command": "galaxy-da train --config configs/benchmark.yaml " + " ".join(overrides + job["overrides"]),
    }


def summarise(rows: list[dict[str, Any]], normalizations: list[str], threshold: float) -> str:
    lines = [
        "| normalisation | seeds | median tgt macro-F1 (IQR) | seeds ≥ %.2f | median spiral recall | median elliptical recall | median per-seed range over epochs |" % threshold,
        "|---|---|---|---|---|---|---|",
    ]
    for name in normalizations:
        mine = [r for r in rows if r["normalization"] == name]
        f1 = np.array([r["selected"]["macro_f1"] for r in mine])
        spiral = np.median([r["selected"]["recall"]["spiral"] for r in mine])
        elliptical = np.median([r["selected"]["recall"]["elliptical"] for r in mine])
        spans = [max(e["macro_f1"] for e in r["epochs"]) - min(e["macro_f1"] for e in r["epochs"]) for r in mine]
        q1, q3 = np.percentile(f1, [25, 75])
        lines.append(
            f"| {name} | {len(mine)} | {np.median(f1):.3f} ({q1:.3f}–{q3:.3f}) | {int((f1 >= threshold).sum())}/{len(mine)} "
            f"| {spiral:.3f} | {elliptical:.3f} | {np.median(spans):.3f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], normalizations: list[str], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6 * len(normalizations), 3.8), constrained_layout=True)
    axes = fig.subplots(1, len(normalizations), sharey=True, squeeze=False)[0]
    for ax, name in zip(axes, normalizations):
        for row in (r for r in rows if r["normalization"] == name):
            epochs = [e["epoch"] for e in row["epochs"]]
            ax.plot(epochs, [e["macro_f1"] for e in row["epochs"]], marker="o", markersize=2, linewidth=1, alpha=0.8)
            ax.plot([row["best_epoch"]], [row["selected"]["macro_f1"]], marker="*", color="black", markersize=8)
        ax.set(title=f"source-only, {name} normalisation", xlabel="epoch", ylabel="target test macro-F1 (ORACLE view)")
        ax.grid(alpha=0.3)
    fig.suptitle("one line per seed; ★ = the epoch src_val selects")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/quality")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--normalizations", nargs="+", default=["per_domain", "shared", "none"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threshold", type=float, default=0.6, help="macro-F1 above which a seed 'transfers'")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "source_only_modes.json")
    parser.add_argument("--plot", type=Path, default=REPO / "bench" / "results" / "source_only_modes.png")
    parser.add_argument("overrides", nargs="*", help="dotted overrides of configs/benchmark.yaml")
    args = parser.parse_args()
    started = time.perf_counter()
    jobs = [{"data": args.data, "seed": s, "normalization": n, "overrides": args.overrides} for n in args.normalizations for s in args.seeds]
    import multiprocessing

    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        rows = list(pool.map(run_job, jobs))
    table = summarise(rows, args.normalizations, args.threshold)
    command = study_command(__file__, sys.argv[1:])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"command": command, "wall_seconds": time.perf_counter() - started, "table": table, "rows": rows}, indent=1))
    plot(rows, args.normalizations, args.plot)
    print(f"`{command}` ({(time.perf_counter() - started) / 60:.1f} min)\n\n{table}")


if __name__ == "__main__":
    main()
