"""Alignment-weight and blur schedules (the kernel/OT scale over epochs).

    python sweeps/schedules.py --smoke-test
    python sweeps/schedules.py --num-samples 32          # configs/sweep_schedules.yaml on data/quality
"""

import sys

from galaxy_da.sweep.cli import main

SPACE = {
    "schedules.align_weight": {"choice": {
        "constant-0.1": {"kind": "constant", "start": 0.1, "end": 0.1},
        "linear-0-0.5": {"kind": "linear", "start": 0.0, "end": 0.5},
        "sigmoid-0-1": {"kind": "sigmoid", "start": 0.0, "end": 1.0},
        "cosine-0.5-0.05": {"kind": "cosine", "start": 0.5, "end": 0.05},
    }},
    "schedules.blur": {"choice": {
        "constant-0.5": {"kind": "constant", "start": 0.5, "end": 0.5},
        "exponential-1.0": {"kind": "exponential", "start": 1.0, "end": 0.05, "rate": 0.9},
        "linear-1-0.05": {"kind": "linear", "start": 1.0, "end": 0.05},
    }},
    "optim.lr": {"loguniform": [3e-4, 3e-3]},
}

if __name__ == "__main__":
    sys.exit(main("schedules", SPACE, num_samples=16, description=__doc__))
