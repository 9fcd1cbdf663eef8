"""``galaxy-da demo``: the main job on the embedded default dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from galaxy_da.commands.summary import dataset_summary
from galaxy_da.commands.sweep import run as run_sweep
from galaxy_da.commands.synth import DEFAULT_DATA


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-sweep", action="store_true", help="stop after the dataset summary")


def run(args: argparse.Namespace) -> int:
    """Render (or reuse) the synthetic benchmark, summarise it, run a small local top-k sweep into mlflow/."""
    import time

    from galaxy_da.data import synth

    if not (Path(args.data) / "manifest.json").is_file():
        synth.generate(args.data, workers=args.workers)
    else:
        print(f"{args.data} exists; reusing it (delete it or run `galaxy-da synth --overwrite` to regenerate)")
    print(dataset_summary(args.data))
    if args.no_sweep:
        return 0
    name = time.strftime("demo-topk-%Y%m%d-%H%M%S")
    print(f"\nlocal sweep {name}: sweeps/topk.py --smoke-test on {args.data} (a few tiny trials; MLflow store mlflow/)")
    status = run_sweep(argparse.Namespace(sweep="topk", args=["--smoke-test", "--data", args.data, "--name", name]))
    from galaxy_da.tracking import default_tracking_uri, ui_command

    print(f"\ncompare the runs:  {ui_command(default_tracking_uri())}   (then open http://127.0.0.1:5000)")
    return status
