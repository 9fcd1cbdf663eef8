"""``galaxy-da demo``: a newcomer's first run: the synthetic benchmark in ``data/synth`` and a smoke sweep on it.

It renders (or reuses) the synthetic benchmark, prints its summary and runs
``sweeps/topk.py --smoke-test`` on it in a process of its own. The sweep's
output is relayed as it comes, all but its last line: the JSON summary that
scripts read, not people. The sweep's own closing lines already say how to look
at the runs (``make ui``), so the demo adds nothing after them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterable, TextIO

from galaxy_da.commands.summary import dataset_summary
from galaxy_da.commands.sweep import SWEEPS_DIR
from galaxy_da.commands.synth import DEFAULT_DATA


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=DEFAULT_DATA, help="the synthetic benchmark's folder; rendered there if it has no manifest.json (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="processes that render the benchmark (default: %(default)s)")
    parser.add_argument("--no-sweep", action="store_true", help="stop after the dataset summary")


def sweep_command(data: str, name: str) -> list[str]:
    """The demo's sweep: ``sweeps/topk.py --smoke-test`` on ``data``, named ``name``."""
    return [sys.executable, str(SWEEPS_DIR / "topk.py"), "--smoke-test", "--data", data, "--name", name]


def is_json_summary(line: str) -> bool:
    """Whether ``line`` is a sweep's closing JSON summary (an object with its parent run)."""
    try:
        summary = json.loads(line)
    except ValueError:
        return False
    return isinstance(summary, dict) and "parent_run_id" in summary


def relay(lines: Iterable[str], out: TextIO) -> None:
    """Write ``lines`` to ``out`` as they come, except a last line that is the sweep's JSON summary."""
    held = None
    for line in lines:
        if held is not None:
            out.write(held)
            out.flush()
        held = line
    if held is not None and not is_json_summary(held):
        out.write(held)
        out.flush()


def run_sweep(command: list[str]) -> int:
    """Run the sweep script and relay its standard output; Ctrl-C is the sweep's to handle (it exits 130)."""
    import os
    import signal
    import subprocess

    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}  # its lines arrive as it prints them
    # The terminal's Ctrl-C reaches the sweep too. A handler, not SIG_IGN: an ignored signal stays ignored across exec.
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=environment) as process:
            relay(process.stdout, sys.stdout)
        return process.returncode
    finally:
        signal.signal(signal.SIGINT, previous)


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
    print(f"\nlocal sweep {name}: sweeps/topk.py --smoke-test on {args.data} (a few tiny trials; MLflow store mlflow/)", flush=True)
    return run_sweep(sweep_command(args.data, name))
