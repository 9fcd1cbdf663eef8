"""The shared command line of the sweep scripts in ``sweeps/``.

A sweep script declares only its search space and trial budget and calls
:func:`main`::

    SPACE = {"align.topk": {"choice": [1, 5, 10, 20]}}
    if __name__ == "__main__":
        sys.exit(main("topk", SPACE, num_samples=12, description=__doc__))

Flags: ``--config``, dotted overrides, ``--data``, ``--smoke-test`` (tiny data,
generated when missing; 2 epochs; a few trials), ``--resume``, ``--tracking-uri``,
``--num-samples``, ``--max-concurrent``, ``--storage-path``, ``--name``,
``--address``, ``--num-cpus``, ``--cpus-per-trial``, ``--searcher``, ``--seed``.
The same script runs locally, under ``ray submit`` (it joins the node's running
cluster) and inside a SLURM job (``cluster/slurm.py``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional

from galaxy_da.sweep.space import Space

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SMOKE_CONFIG = CONFIGS / "smoke.yaml"
SMOKE_DATA = Path("data/smoke")
# Tiny trials: 2 epochs of 4 steps on a few hundred 33 px galaxies (about 10 s each on one core).
SMOKE_OVERRIDES: dict[str, Any] = {
    "model.width": 4, "data.batch_size": 16, "data.max_source": 160, "data.max_target": 128,
    "optim.epochs": 2, "optim.warmup_epochs": 0, "optim.steps_per_epoch": 4, "tracking.experiment": "smoke-sweeps",
}
SMOKE_SAMPLES = 3


def base_config_path(name: str) -> Path:
    """A sweep's own base trial, sized for the quality benchmark: ``configs/sweep_<name>.yaml``."""
    return CONFIGS / f"sweep_{name}.yaml"


def parser(description: Optional[str], num_samples: int, searcher: str, config: Path, scheduler: str = "asha") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="dotted overrides of the base config, e.g. optim.epochs=30")
    p.add_argument("--config", type=Path, help=f"base trial YAML (default: {config.relative_to(CONFIGS.parent)}; with --smoke-test: {SMOKE_CONFIG.relative_to(CONFIGS.parent)})")
    p.add_argument("--data", help="dataset path or URI (default: the config's data.path)")
    p.add_argument("--smoke-test", action="store_true", help="tiny data (generated if missing), 2 epochs, a few trials")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same --name")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow/mlflow.db)")
    p.add_argument("--num-samples", type=int, default=num_samples, help="trials (default: %(default)s)")
    p.add_argument("--max-concurrent", type=int, default=2, help="trials at once (default: %(default)s)")
    p.add_argument("--storage-path", default="ray_results", help="Ray results folder or URI (default: %(default)s)")
    p.add_argument("--name", help="sweep name; resume finds the sweep by it (default: the script's)")
    p.add_argument("--address", help="Ray address (default: $RAY_ADDRESS, the node's running cluster, else local)")
    p.add_argument("--num-cpus", type=int, help="CPUs of a local Ray instance (default: all)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--searcher", default=searcher, help="optuna | random (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="searcher seed")
    p.add_argument("--grace-period", type=int, help="ASHA: epochs before the first cut (default: the first epoch after warm-up; 0: never prune)")
    p.add_argument("--max-failures", type=int, default=1, help="retries of a crashing trial")
    p.add_argument("--scheduler", default=scheduler, help="asha | pbt | pb2 (default: %(default)s); for pbt/pb2 --num-samples is the population size")
    p.add_argument("--perturbation-interval", type=int, default=2, help="pbt/pb2: epochs between exploit/explore steps (default: %(default)s)")
    p.add_argument("--quantile-fraction", type=float, default=0.25, help="pbt/pb2: the bottom fraction copies the top one (default: %(default)s)")
    p.add_argument("--resample-probability", type=float, default=0.25, help="pbt: chance an explored knob is drawn afresh (default: %(default)s)")
    return p


def smoke_data(path: Path = SMOKE_DATA) -> Path:
    """A tiny synthetic dataset, rendered once (about 20 s)."""
    if not (path / "manifest.json").is_file():
        from galaxy_da.data import synth

        synth.generate(path, seed=0, n_source=240, n_target=200, size=33, workers=1, progress=False)
    return path


def main(
    name: str, space: Space, num_samples: int, description: Optional[str] = None, searcher: str = "optuna",
    smoke_space: Optional[Space] = None, argv: Optional[list[str]] = None, config: Optional[Path] = None,
    prune: bool = True, scheduler: str = "asha", mutations: Optional[Space] = None,
) -> int:
    """Parse the flags, run (or resume) the sweep, print a JSON summary; exit 0 when every trial ended."""
    from galaxy_da.config import load_config
    from galaxy_da.sweep.leaderboard import to_markdown
    from galaxy_da.sweep.settings import SweepSettings
    from galaxy_da.sweep.tuner import run_sweep

    config = config or base_config_path(name)
    args = parser(description, num_samples, searcher, config, scheduler).parse_args(argv)
    if not prune:
        args.grace_period = 0
    overrides: dict[str, Any] = dict(SMOKE_OVERRIDES) if args.smoke_test else {}
    if args.smoke_test and not args.data:
        overrides["data.path"] = str(smoke_data())
    if args.data:
        overrides["data.path"] = args.data
    config_path = args.config or (SMOKE_CONFIG if args.smoke_test else config)
    cfg = load_config(config_path, [f"{k}={json.dumps(v)}" for k, v in overrides.items()] + args.overrides)
    settings = SweepSettings(
        name=args.name or (f"{name}-smoke" if args.smoke_test else name), space=(smoke_space or space) if args.smoke_test else space,
        num_samples=min(args.num_samples, SMOKE_SAMPLES) if args.smoke_test else args.num_samples,
        max_concurrent=args.max_concurrent, searcher=args.searcher, seed=args.seed,
        grace_period=cfg.optim.epochs if args.grace_period == 0 else args.grace_period,  # every epoch: no pruning
        max_failures=args.max_failures, cpus_per_trial=args.cpus_per_trial, storage_path=args.storage_path,
        tracking_uri=args.tracking_uri, address=args.address, num_cpus=args.num_cpus, scheduler=args.scheduler,
        perturbation_interval=args.perturbation_interval, quantile_fraction=args.quantile_fraction,
        resample_probability=args.resample_probability, mutations=mutations,
    )
    result = run_sweep(cfg, settings, resume=args.resume)
    print(f"\nleaderboard of sweep {settings.name} (MLflow parent run {result.parent_run_id}):\n")
    print(to_markdown(result.leaderboard, cfg.selection.rule))
    print(json.dumps({
        "sweep": settings.name, "parent_run_id": result.parent_run_id, "complete": result.complete,
        "trials": len(result.leaderboard), "best": result.leaderboard[0] if result.leaderboard else None,
        "tracking_uri": result.tracking_uri, "experiment_path": result.experiment_path,
    }, default=str))
    return 0 if result.complete else 130
