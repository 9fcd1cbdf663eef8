"""Label-shift-aware alignment: target-prior estimator x alignment method x target survey, a grid, no pruning.

``align.label_shift`` weighs the source side of the alignment loss by the class ratios
q̂(y)/p(y) of a label-free estimate of the target priors (none: marginal alignment);
``sinkhorn+reach1`` is unbalanced Sinkhorn (``align.reach``), the other answer to label
shift. Each combination runs on the SDSS-like target (priors close to the source's) and
the DESI-like one (ellipticals from a fifth to three fifths). Trials on different
targets are not ranked against each other by pruning; ``galaxy-da report --sweep``
gives each target's own table and best run. The seeded, paired comparison is
bench/label_shift_study.py.

    python sweeps/label_shift.py --smoke-test      # 2 tiny trials: BBSE-weighted Laplacian on each target
    python sweeps/label_shift.py                   # 24 trials: configs/sweep_label_shift.yaml on data/label_shift
"""

import sys

from galaxy_da.sweep.cli import main

SPACE = {
    "align": {"grid": {
        "laplacian": {"method": "laplacian"},
        "sinkhorn": {"method": "sinkhorn"},
        "sinkhorn+reach1": {"method": "sinkhorn", "reach": 1.0},
        "dann": {"method": "dann"},
    }},
    "align.label_shift": {"grid": ["none", "bbse", "em"]},
    "data.target": {"grid": ["sdss", "desi"]},
}

# The plumbing end to end at smoke size: a weighted trial on each survey of a two-target dataset.
SMOKE_SPACE = {"align.label_shift": {"grid": ["bbse"]}, "data.target": {"grid": ["sdss", "desi"]}}

if __name__ == "__main__":
    sys.exit(main("label_shift", SPACE, num_samples=1, description=__doc__, searcher="random", smoke_space=SMOKE_SPACE, prune=False))
