"""The quality study as a sweep: every recipe of galaxy_da.recipes x 3 seeds, no pruning.

Same base trial as bench/quality.py (configs/benchmark.yaml). The target-oracle
upper bound is not a recipe of this sweep: it trains without alignment on a
target-as-source copy of the data (bench/quality.py writes it to
data/quality-target-as-source), one run per seed S (BENCHMARKS.md, the quality
table's "Reproduce a row"):

    galaxy-da train --config configs/benchmark.yaml data.path=data/quality-target-as-source align.method=none seed=S

bench/quality.py runs it and evaluates every run on target labels.

    python sweeps/benchmark.py --smoke-test
    python sweeps/benchmark.py --data data/quality --max-concurrent 2
    ray submit cluster/gpu.yaml sweeps/benchmark.py -- --data s3://bucket/quality --max-concurrent 16
"""

import sys
from pathlib import Path

from galaxy_da.recipes import DISTANCE_RECIPES, RECIPES, with_topk
from galaxy_da.sweep.cli import main

ALIGN = {**RECIPES, **{f"{name}+topk_ot": with_topk(name) for name in DISTANCE_RECIPES}}
SPACE = {"align": {"grid": ALIGN}, "seed": {"grid": [0, 1, 2]}}
SMOKE_SPACE = {"align": {"grid": {k: ALIGN[k] for k in ("source_only", "laplacian+topk_ot")}}}
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "benchmark.yaml"

if __name__ == "__main__":
    sys.exit(main("benchmark", SPACE, num_samples=1, description=__doc__, searcher="random",
                  smoke_space=SMOKE_SPACE, config=CONFIG, prune=False))
