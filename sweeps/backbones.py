"""Backbones x alignment method: a plain CNN, E(2)-steerable C8 and D4 nets, ResNet-18.

On GPUs a CNN trial takes a quarter GPU and the others a whole one
(galaxy_da.sweep.settings.GPU_SHARE). Steerable nets are exactly rotation-invariant on
odd-sized stamps: use a dataset with an odd --size.

    python sweeps/backbones.py --smoke-test
    python sweeps/backbones.py --searcher random --num-samples 2   # configs/sweep_backbones.yaml on data/quality
"""

import sys

from galaxy_da.sweep.cli import main

SPACE = {
    "model": {"grid": {
        "cnn": {"backbone": "cnn"},
        "steerable-C8": {"backbone": "steerable", "group": "C8"},
        "steerable-D4": {"backbone": "steerable", "group": "D4"},
        "resnet18": {"backbone": "resnet18"},
    }},
    "align.method": {"grid": ["none", "laplacian", "sinkhorn", "dann"]},
}

SMOKE_SPACE = {"model": {"grid": {k: SPACE["model"]["grid"][k] for k in ("cnn", "steerable-C8", "resnet18")}}}

if __name__ == "__main__":
    # A grid: every backbone x method, each repeated --num-samples times (random searcher).
    sys.exit(main("backbones", SPACE, num_samples=1, description=__doc__, searcher="random", smoke_space=SMOKE_SPACE))
