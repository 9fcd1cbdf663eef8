"""The shared command line of the sweep scripts in ``sweeps/``.

A sweep script declares only its search space and trial budget and calls
:func:`main`::

    SPACE = {"align.topk": {"choice": [1, 5, 10, 20]}}
    if __name__ == "__main__":
        sys.exit(main("topk", SPACE, num_samples=12, description=__doc__))

Flags: ``--config``, dotted overrides, ``--data``, ``--smoke-test`` (tiny data with
the target surveys its trials read, generated when missing; 3 epochs; a few trials; running it again replaces the
previous smoke sweep), ``--resume``, ``--tracking-uri``,
``--num-samples``, ``--max-concurrent``, ``--storage-path``, ``--name``,
``--address``, ``--num-cpus``, ``--cpus-per-trial``, ``--searcher``, ``--seed``,
``--use-gpu``/``--no-use-gpu`` and ``--autoscaler-config`` (see :mod:`galaxy_da.sweep.gpus`).
The same script runs locally, under ``ray submit`` (it joins the node's running
cluster) and inside a SLURM job (``cluster/slurm.py``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional, Sequence

from galaxy_da.data.schema import DEFAULT_TARGET
from galaxy_da.sweep.space import Space, values_of

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SMOKE_CONFIG = CONFIGS / "smoke.yaml"
SMOKE_DATA = Path("data/smoke")
# Tiny trials that still learn, so a newcomer's first comparison separates them: 3 epochs of 8 steps
# on a few hundred 33 px galaxies, about 3 s of training per trial. The learning rate is constant:
# a cosine schedule over so few epochs spends the last one at min_lr, and every trial stayed a
# majority-class predictor (a three-way tie).
SMOKE_OVERRIDES: dict[str, Any] = {
    "model.width": 4, "data.batch_size": 16, "data.max_source": 160, "data.max_target": 128,
    "optim.epochs": 3, "optim.warmup_epochs": 0, "optim.steps_per_epoch": 8, "optim.lr": 3e-3,
    "optim.lr_schedule": "constant", "tracking.experiment": "smoke-sweeps",
}
SMOKE_SAMPLES = 3
# After one epoch of 8 steps the smoke trials are barely trained and ASHA's first cut compared near-ties
# (two stopped trials predicted the same on the target); after two they differ.
SMOKE_GRACE_PERIOD = 2


def base_config_path(name: str) -> Path:
    """A sweep's own base trial, sized for the quality benchmark: ``configs/sweep_<name>.yaml``."""
    return CONFIGS / f"sweep_{name}.yaml"


def parser(description: Optional[str], num_samples: int, searcher: str, config: Path, scheduler: str = "asha") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="dotted overrides of the base config, e.g. optim.epochs=30")
    p.add_argument("--config", type=Path, help=f"base trial YAML (default: {config.relative_to(CONFIGS.parent)}; with --smoke-test: {SMOKE_CONFIG.relative_to(CONFIGS.parent)})")
    p.add_argument("--data", help="dataset path or URI (default: the config's data.path)")
    p.add_argument("--smoke-test", action="store_true", help="tiny data (generated if missing), 3 epochs, a few trials; replaces the previous smoke sweep")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same --name")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow/mlflow.db)")
    p.add_argument("--num-samples", type=int, help=f"trials (default: {num_samples}; {SMOKE_SAMPLES} with --smoke-test)")
    p.add_argument("--max-concurrent", type=int, default=2, help="trials at once (default: %(default)s)")
    p.add_argument("--storage-path", default="ray_results", help="Ray results folder or URI (default: %(default)s)")
    p.add_argument("--name", help="sweep name; resume finds the sweep by it (default: the script's)")
    p.add_argument("--address", help="Ray address: auto joins the node's running cluster (default: $RAY_ADDRESS, else a fresh local instance)")
    p.add_argument("--num-cpus", type=int, help="CPUs of a local Ray instance (default: all)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0,
                   help="CPUs Ray reserves for each trial (each worker of a multi-worker trial), also its torch threads (default: %(default)s)")
    p.add_argument("--searcher", default=searcher, help="optuna | random (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="searcher seed")
    p.add_argument(
        "--grace-period", type=int,
        help=f"ASHA: epochs before the first cut (default: the first epoch after warm-up; {SMOKE_GRACE_PERIOD} with --smoke-test; 0: never prune)",
    )
    p.add_argument("--max-failures", type=int, default=1, help="retries of a crashing trial")
    p.add_argument("--use-gpu", action=argparse.BooleanOptionalAction, default=None,
                   help="trials ask for GPUs (default: when the cluster has GPU nodes or its autoscaler can add them)")
    p.add_argument("--autoscaler-config", help="autoscaler YAML whose node types decide --use-gpu (default: ~/ray_bootstrap_config.yaml, where `ray up` puts it)")
    p.add_argument("--scheduler", default=scheduler, help="asha | pbt | pb2 (default: %(default)s); for pbt/pb2 --num-samples is the population size")
    p.add_argument("--perturbation-interval", type=int, default=2, help="pbt/pb2: epochs between exploit/explore steps (default: %(default)s)")
    p.add_argument("--quantile-fraction", type=float, default=0.25, help="pbt/pb2: the bottom fraction copies the top one (default: %(default)s)")
    p.add_argument("--resample-probability", type=float, default=0.25, help="pbt: chance an explored knob is drawn afresh (default: %(default)s)")
    p.add_argument("--synchronous", action="store_true",
                   help="pbt/pb2: every member waits at each perturbation point, so exploits happen even when members start "
                        "at different times (default: asynchronous, each member perturbs on its own)")
    return p


def smoke_data_path(targets: Sequence[str]) -> Path:
    """``data/smoke`` for the SDSS-like target alone (every smoke sweep but the label-shift one), else
    ``data/smoke-<target>-<target>...``: a smoke renders only the surveys its trials read."""
    return SMOKE_DATA if list(targets) == [DEFAULT_TARGET] else SMOKE_DATA.with_name(f"{SMOKE_DATA.name}-{'-'.join(sorted(targets))}")


def smoke_data(targets: Sequence[str] = (DEFAULT_TARGET,)) -> Path:
    """A tiny synthetic dataset of 240 source galaxies and 200 of each target survey of ``targets``, rendered once
    (about 20 s with one survey) at :func:`smoke_data_path`."""
    path = smoke_data_path(targets)
    if not (path / "manifest.json").is_file():
        from galaxy_da.data import synth

        synth.generate(path, seed=0, n_source=240, n_target=200, size=33, workers=1, progress=False, targets=sorted(targets))
    return path


def grace_period(args: argparse.Namespace, epochs: int) -> Optional[int]:
    """``--grace-period``; for a smoke test :data:`SMOKE_GRACE_PERIOD` (at most every epoch); else None,
    the tuner's default (the first epoch after warm-up)."""
    if args.grace_period is not None:
        return args.grace_period
    return min(SMOKE_GRACE_PERIOD, epochs) if args.smoke_test else None


def main(
    name: str, space: Space, num_samples: int, description: Optional[str] = None, searcher: str = "optuna",
    smoke_space: Optional[Space] = None, argv: Optional[list[str]] = None, config: Optional[Path] = None,
    prune: bool = True, scheduler: str = "asha", mutations: Optional[Space] = None,
) -> int:
    """Parse the flags, run (or resume) the sweep, print the leaderboard and a JSON summary.

    Exit 0 when every trial ended, 130 when the sweep was interrupted, 2 (one
    line on stderr, no traceback) for a user's error: a bad config or flag, a
    missing or corrupted dataset, a sweep of that name that exists, a store, dataset
    or storage folder the cluster's other hosts cannot reach.
    """
    from galaxy_da.commands import guarded, parse_arguments

    config = config or base_config_path(name)
    cli = parser(description, num_samples, searcher, config, scheduler)
    args = parse_arguments(cli, argv)  # overrides before or after the flags
    return guarded(cli.prog, lambda: run(name, space, smoke_space, config, args, prune, num_samples, mutations))


def run(
    name: str, space: Space, smoke_space: Optional[Space], config: Path, args: argparse.Namespace, prune: bool, num_samples: int,
    mutations: Optional[Space],
) -> int:
    from galaxy_da.config import load_config
    from galaxy_da.sweep.settings import SweepSettings

    overrides: dict[str, Any] = dict(SMOKE_OVERRIDES) if args.smoke_test else {}
    generated = args.smoke_test and not args.data  # the smoke's own data, rendered below with the surveys its trials read
    if generated:
        overrides["data.path"] = str(SMOKE_DATA)
    if args.data:
        overrides["data.path"] = args.data
    config_path = args.config or (SMOKE_CONFIG if args.smoke_test else config)
    cfg = load_config(config_path, [f"{k}={json.dumps(v)}" for k, v in overrides.items()] + args.overrides)
    trial_space = (smoke_space or space) if args.smoke_test else space
    if generated and cfg.data.path == str(SMOKE_DATA):  # not set by an override
        cfg.data.path = str(smoke_data(values_of(cfg.model_dump(mode="json"), trial_space, "data.target")))
    grace = grace_period(args, cfg.optim.epochs) if prune else 0
    settings = SweepSettings(
        name=args.name or (f"{name}-smoke" if args.smoke_test else name), space=trial_space,
        num_samples=args.num_samples if args.num_samples is not None else (min(num_samples, SMOKE_SAMPLES) if args.smoke_test else num_samples),
        max_concurrent=args.max_concurrent, searcher=args.searcher, seed=args.seed,
        grace_period=cfg.optim.epochs if grace == 0 else grace,  # every epoch: no pruning
        max_failures=args.max_failures, cpus_per_trial=args.cpus_per_trial, storage_path=args.storage_path,
        tracking_uri=args.tracking_uri, address=args.address, num_cpus=args.num_cpus, smoke=args.smoke_test,
        use_gpu=args.use_gpu, autoscaler_config=args.autoscaler_config, scheduler=args.scheduler,
        perturbation_interval=args.perturbation_interval, quantile_fraction=args.quantile_fraction,
        resample_probability=args.resample_probability, synchronous=args.synchronous, mutations=mutations,
    )

    from galaxy_da.sweep.state import discard_smoke_sweep
    from galaxy_da.sweep.summary import print_summary
    from galaxy_da.sweep.tuner import run_sweep

    if settings.smoke and not args.resume:
        replaced = discard_smoke_sweep(settings)
        if replaced:
            print(f"replacing the previous smoke sweep in {settings.experiment_path} (its MLflow parent run {replaced} stays)")
    result = run_sweep(cfg, settings, resume=args.resume)
    print_summary(result, settings, cfg)
    return 0 if result.complete else 130
