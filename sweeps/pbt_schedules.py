"""Learned alignment schedules: population-based training of λ, blur, top-k and the learning rate.

A population of trials trains at once. Every --perturbation-interval epochs a
member in the bottom --quantile-fraction copies the weights, optimiser and step of
a top member and perturbs the knobs of MUTATIONS (PBT), or picks them by a GP
bandit (--scheduler pb2, continuous knobs only, log-uniform ones in log space);
explored values stay inside the intervals declared below. The objective is the
label-free selection rule of the base config; nothing is judged inside warm-up.
A member's run then shows the knobs it trains with, and counts every epoch it
trained (compute/epochs_trained). The parent MLflow run holds the lineage (who
copied whom, at which epoch) and a plot of the schedules the members learned.

    python sweeps/pbt_schedules.py --smoke-test
    python sweeps/pbt_schedules.py --num-samples 8              # a population of 8 on data/quality
    python sweeps/pbt_schedules.py --scheduler pb2 --num-samples 8
"""

import sys

from galaxy_da.sweep.cli import main

SPACE = {  # the initial population draws from these; MUTATIONS are the knobs PBT may change while training
    "align.weight": {"loguniform": [0.1, 3.0]},
    "align.blur": {"loguniform": [0.2, 2.0]},
    "align.topk": {"choice": [1, 5, 10, 20]},
    "optim.lr": {"loguniform": [5e-4, 5e-3]},
}
MUTATIONS = SPACE

if __name__ == "__main__":
    sys.exit(main("pbt_schedules", SPACE, num_samples=8, description=__doc__, searcher="random", scheduler="pbt", mutations=MUTATIONS))
