"""``galaxy-da sweep NAME``: run a sweep script of ``sweeps/`` (same flags as the script)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SWEEPS_DIR = Path(__file__).resolve().parents[2] / "sweeps"


def sweep_names() -> list[str]:
    """The sweeps of ``sweeps/``, by name."""
    return sorted(p.stem for p in SWEEPS_DIR.glob("*.py") if not p.stem.startswith("_"))


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", help=f"a sweep in sweeps/ ({', '.join(sweep_names())}) or a path to a sweep script")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the sweep's own flags, e.g. --smoke-test --num-samples 8")


def run(args: argparse.Namespace) -> int:
    import runpy

    script = Path(args.sweep) if args.sweep.endswith(".py") else SWEEPS_DIR / f"{args.sweep}.py"
    if not script.is_file():
        raise FileNotFoundError(f"{script}: no such sweep script; the sweeps are {', '.join(sweep_names())}, or give a path to a script")
    sys.argv = [str(script), *args.args]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0
