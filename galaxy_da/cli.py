"""``galaxy-da`` command line: synth | ingest | validate | summary | train | eval | sweep | report | demo.

Each command is a (configure, run) pair in :data:`COMMANDS`; heavy imports
happen inside ``run`` so ``galaxy-da --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

DEFAULT_DATA = "data/synth"


# --------------------------------------------------------------------------- synth


def _configure_synth(parser: argparse.ArgumentParser) -> None:
    from galaxy_da.data.synth import SynthParams

    defaults = SynthParams()
    parser.add_argument("--out", default=DEFAULT_DATA, help="dataset folder to write (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--n-source", type=int, default=defaults.n_source, help="TNG-like galaxies (default: %(default)s)")
    parser.add_argument("--n-target", type=int, default=defaults.n_target, help="SDSS-like galaxies (default: %(default)s)")
    parser.add_argument("--size", type=int, default=defaults.size, help="stamp size in pixels; odd sizes suit steerable nets")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard-rows", type=int, default=1024)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    parser.add_argument("--preview", metavar="PNG", help="write a grid of examples per class and domain instead")


def _run_synth(args: argparse.Namespace) -> int:
    from galaxy_da.data import synth

    if args.preview:
        synth.preview(args.preview, seed=args.seed, size=args.size)
        print(f"preview written to {args.preview}")
        return 0
    out = synth.generate(
        args.out, seed=args.seed, n_source=args.n_source, n_target=args.n_target, size=args.size,
        workers=args.workers, shard_rows=args.shard_rows, overwrite=args.overwrite,
    )
    print(dataset_summary(str(out)))
    return 0


# --------------------------------------------------------------------------- ingest


def _configure_ingest(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source-images", required=True, type=Path, help="folder of subhalo_<id>.png (TNG50)")
    parser.add_argument("--source-labels", required=True, type=Path, help="source_galaxy_labels.csv or .json")
    parser.add_argument("--target-images", required=True, type=Path, help="folder of <asset_id>.jpg (GZ2)")
    parser.add_argument("--target-labels", required=True, type=Path, help="gz2_galaxy_labels*.csv or .json")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--size", type=int, default=None, help="resize every image to SIZE x SIZE")
    parser.add_argument("--seed", type=int, default=0, help="split seed")
    parser.add_argument("--max-reject-fraction", type=float, default=0.05)
    parser.add_argument("--shard-rows", type=int, default=1024)
    parser.add_argument("--overwrite", action="store_true")


def _run_ingest(args: argparse.Namespace) -> int:
    from galaxy_da.data.ingest import ingest

    report = ingest(
        args.source_images, args.source_labels, args.target_images, args.target_labels, args.out,
        size=args.size, seed=args.seed, max_reject_fraction=args.max_reject_fraction,
        shard_rows=args.shard_rows, overwrite=args.overwrite,
    )
    print(report.summary())
    if not report.ok(args.max_reject_fraction):
        print(
            f"error: {report.reject_fraction:.1%} of rows rejected, above --max-reject-fraction "
            f"{args.max_reject_fraction:.1%}", file=sys.stderr,
        )
        return 1
    return 0


# --------------------------------------------------------------------------- validate / summary


def dataset_summary(uri: str) -> str:
    """Class counts per domain and split, from the manifest."""
    from galaxy_da.data.reader import ShardDataset

    dataset = ShardDataset(uri)
    names = dataset.class_names
    lines = [f"dataset {uri}  (images {'x'.join(map(str, dataset.image_shape))}, manifest sha256 {dataset.manifest_hash[:12]})"]
    lines.append(f"  {'domain':<8} {'split':<6} " + " ".join(f"{n:>10}" for n in names) + f" {'total':>7}")
    for domain, splits in dataset.manifest["counts"].items():
        domain_total = [0] * len(names)
        for split, counts in splits.items():
            row = [counts[n] for n in names]
            domain_total = [a + b for a, b in zip(domain_total, row)]
            lines.append(f"  {domain:<8} {split:<6} " + " ".join(f"{c:>10}" for c in row) + f" {sum(row):>7}")
        share = " ".join(f"{c / max(1, sum(domain_total)):>10.1%}" for c in domain_total)
        lines.append(f"  {domain:<8} {'prior':<6} {share} {sum(domain_total):>7}")
    return "\n".join(lines)


def _configure_dataset_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", nargs="?", default=DEFAULT_DATA, help="dataset path or URI (default: %(default)s)")


def _run_validate(args: argparse.Namespace) -> int:
    from galaxy_da.data.reader import DatasetError, ShardDataset

    try:
        dataset = ShardDataset(args.data, verify=True)
    except DatasetError as exc:
        print(f"INVALID: {exc}", file=sys.stderr)
        return 1
    print(f"OK: {len(dataset.manifest['shards'])} shards match {args.data}/manifest.json")
    return 0


def _run_summary(args: argparse.Namespace) -> int:
    print(dataset_summary(args.data))
    return 0


# --------------------------------------------------------------------------- train


def _configure_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="trial YAML (default: built-in defaults)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.backbone=resnet18 align.topk=8")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow/mlflow.db)")
    parser.add_argument("--checkpoint-dir", type=Path, help="where last.pt/best.pt go (default: a temporary folder)")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir/last.pt")
    parser.add_argument("--no-track", action="store_true", help="do not log to MLflow")


def _run_train(args: argparse.Namespace) -> int:
    from galaxy_da.config import load_config
    from galaxy_da.trial import run_trial

    cfg = load_config(args.config, args.overrides)
    if args.tracking_uri:
        cfg.tracking.tracking_uri = args.tracking_uri
    result = run_trial(cfg, track=not args.no_track, checkpoint_dir=args.checkpoint_dir, resume=args.resume, progress=True)
    print(json.dumps({"run_id": result.run_id, "best_epoch": result.best_epoch, "best_score": result.best_score}))
    return 0


# --------------------------------------------------------------------------- eval / report

TRACKING_URI_HELP = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow/mlflow.db)"


def _configure_eval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-id", required=True, help="MLflow run id of a trained trial")
    parser.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    parser.add_argument("--data", help="dataset path or URI (default: the one the run was trained on)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best", help="default: %(default)s")
    parser.add_argument("--no-log", action="store_true", help="do not log metrics and plots back to the run")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write every metric to this JSON file")


def _run_eval(args: argparse.Namespace) -> int:
    from galaxy_da.eval import run_command

    return run_command(args)


def _configure_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sweep", required=True, metavar="PARENT_RUN_ID", help="the sweep's parent MLflow run")
    parser.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    parser.add_argument("--force", action="store_true", help="re-evaluate child runs that already hold eval/ metrics")


def _run_report(args: argparse.Namespace) -> int:
    from galaxy_da.report import run_command

    return run_command(args)


# --------------------------------------------------------------------------- demo


SWEEPS_DIR = Path(__file__).resolve().parents[1] / "sweeps"


def _configure_sweep(parser: argparse.ArgumentParser) -> None:
    names = sorted(p.stem for p in SWEEPS_DIR.glob("*.py") if not p.stem.startswith("_"))
    parser.add_argument("sweep", help=f"a sweep in sweeps/ ({', '.join(names)}) or a path to a sweep script")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the sweep's own flags, e.g. --smoke-test --num-samples 8")


def _run_sweep(args: argparse.Namespace) -> int:
    import runpy

    script = Path(args.sweep) if args.sweep.endswith(".py") else SWEEPS_DIR / f"{args.sweep}.py"
    if not script.is_file():
        raise FileNotFoundError(f"{script}: no such sweep script")
    sys.argv = [str(script), *args.args]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def _configure_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-sweep", action="store_true", help="stop after the dataset summary")


def _run_demo(args: argparse.Namespace) -> int:
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
    status = _run_sweep(argparse.Namespace(sweep="topk", args=["--smoke-test", "--data", args.data, "--name", name]))
    print("\ncompare the runs:  mlflow ui --backend-store-uri sqlite:///mlflow/mlflow.db")
    return status


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "synth": ("render the GalSim two-domain benchmark", _configure_synth, _run_synth),
    "ingest": ("convert the original TNG50/GZ2 layout into shards", _configure_ingest, _run_ingest),
    "validate": ("check every shard's sha256 against the manifest", _configure_dataset_arg, _run_validate),
    "summary": ("class counts per domain and split", _configure_dataset_arg, _run_summary),
    "train": ("train one trial and log it to MLflow", _configure_train, _run_train),
    "eval": ("evaluate a run on the target domain; logs metrics and plots back to it", _configure_eval, _run_eval),
    "report": ("evaluate a sweep's child runs; leaderboard, regrets and seed groups", _configure_report, _run_report),
    "sweep": ("run a sweep script (sweeps/<name>.py) locally or on the running Ray cluster", _configure_sweep, _run_sweep),
    "demo": ("the main job on the embedded default dataset", _configure_demo, _run_demo),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="galaxy-da", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, configure, _) in COMMANDS.items():
        configure(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    from galaxy_da.config import ConfigError
    from galaxy_da.data.reader import DatasetError

    try:
        return COMMANDS[args.command][2](args)
    except (ConfigError, DatasetError, FileNotFoundError, FileExistsError, LookupError, ValueError) as exc:
        print(f"galaxy-da {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
