"""How far a re-run of a study moves each seed: two study JSONs, compared seed by seed.

For every method both runs hold, on the seeds both trained, with
``d_s = metric_after(s) - metric_before(s)``: the median of the metric in each run,
the median of ``|d_s|`` and the largest ``|d_s|`` with its seed. A method whose
seeds move far under a change that should not matter (a float-rounding change of
the input statistics, say) cannot be read seed by seed, only over many seeds.

Run: ``python bench/seed_drift.py BEFORE.json AFTER.json [--metric eval/tgt_test/macro_f1] [--json OUT]``;
an earlier version of a committed result comes from git, e.g.
``git show bdb167f:bench/results/quality.json > /tmp/quality_protocol2.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from paired import per_seed

F1 = "eval/tgt_test/macro_f1"


def drift(before: list[dict[str, Any]], after: list[dict[str, Any]], metric: str = F1) -> list[dict[str, Any]]:
    """One row per method in both result lists with at least one common seed, in ``after``'s order."""
    methods = list(dict.fromkeys(r["method"] for r in after))
    rows = []
    for method in methods:
        old, new = per_seed(before, method, metric), per_seed(after, method, metric)
        seeds = sorted(set(old) & set(new))
        if not seeds:
            continue
        moves = {s: new[s] - old[s] for s in seeds}
        worst = max(seeds, key=lambda s: abs(moves[s]))
        rows.append({"method": method, "seeds": seeds, "median_before": float(np.median([old[s] for s in seeds])),
                     "median_after": float(np.median([new[s] for s in seeds])),
                     "median_abs_move": float(np.median([abs(d) for d in moves.values()])),
                     "largest_move": {"seed": worst, "before": old[worst], "after": new[worst]}})
    return rows


def drift_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| method | seeds | median before | median after | median |Δ| per seed | largest |Δ| (seed: before → after) |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        big = row["largest_move"]
        lines.append(f"| {row['method']} | {len(row['seeds'])} | {row['median_before']:.3f} | {row['median_after']:.3f} | "
                     f"{row['median_abs_move']:.3f} | {abs(big['after'] - big['before']):.3f} "
                     f"(seed {big['seed']}: {big['before']:.3f} → {big['after']:.3f}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--metric", default=F1, help="the metric compared (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    results = []
    for path in (args.before, args.after):
        if not path.is_file():
            raise SystemExit(f"{path}: no such file")
        payload = json.loads(path.read_text())
        if not isinstance(payload, dict) or "results" not in payload:
            raise SystemExit(f"{path}: not a study JSON (no 'results' list)")
        results.append(payload["results"])
    rows = drift(*results, args.metric)
    if not rows:
        raise SystemExit(f"{args.before} and {args.after} share no (method, seed) with {args.metric}")
    print(drift_table(rows))
    if args.json:
        args.json.write_text(json.dumps({"before": str(args.before), "after": str(args.after), "metric": args.metric, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
