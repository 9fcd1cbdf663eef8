"""Top-k OT matching: k x alignment-weight schedule x alignment loss.

    python sweeps/topk.py --smoke-test                 # a few tiny trials, locally
    python sweeps/topk.py                              # the full sweep: configs/sweep_topk.yaml on data/quality
    ray submit cluster/gpu.yaml sweeps/topk.py -- --data s3://bucket/quality
"""

import sys

from galaxy_da.sweep.cli import main

SPACE = {
    "align.topk": {"choice": [1, 5, 10, 20]},
    "schedules.align_weight": {"choice": {
        "constant-0.1": {"kind": "constant", "start": 0.1, "end": 0.1},
        "linear-0-0.5": {"kind": "linear", "start": 0.0, "end": 0.5},
        "sigmoid-0-1": {"kind": "sigmoid", "start": 0.0, "end": 1.0},
    }},
    "align": {"choice": {
        "laplacian+topk": {"method": "laplacian", "ot": {"weight": 0.5}},
        "sinkhorn+topk": {"method": "sinkhorn", "ot": {"weight": 0.5}},
        "topk_ot": {"method": "topk_ot", "ot": {"weight": 0.0}},
    }},
}

if __name__ == "__main__":
    sys.exit(main("topk", SPACE, num_samples=24, description=__doc__))
