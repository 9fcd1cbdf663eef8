"""``galaxy-da`` command line: dispatch only.

Each command is a module that owns its flags (``configure``) and its work
(``run``); :data:`COMMANDS` maps a name to its help line and module. Only the
module of the command given is imported, so ``galaxy-da --help`` and a config
error come back at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional

from galaxy_da.commands import run_safely

COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("render the GalSim two-domain benchmark", "galaxy_da.commands.synth"),
    "ingest": ("convert the original TNG50/GZ2 layout into shards", "galaxy_da.commands.ingest"),
    "upload": ("copy a finished dataset to object storage (s3://...), manifest last", "galaxy_da.commands.upload"),
    "validate": ("check every shard's sha256 against the manifest", "galaxy_da.commands.validate"),
    "summary": ("class counts per domain and split", "galaxy_da.commands.summary"),
    "train": ("train one trial and log it to MLflow", "galaxy_da.commands.train"),
    "eval": ("evaluate a run on the target domain; logs metrics and plots back to it", "galaxy_da.eval"),
    "report": ("evaluate a sweep's child runs; leaderboard, regrets and seed groups", "galaxy_da.report"),
    "sweep": ("run a sweep script (sweeps/<name>.py) locally or on the running Ray cluster", "galaxy_da.commands.sweep"),
    "demo": ("the main job on the embedded default dataset", "galaxy_da.commands.demo"),
}


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="galaxy-da", description="galaxy morphology domain adaptation: data, training, sweeps, evaluation")
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    modules = {}
    for name, (help_text, module_name) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            modules[name] = importlib.import_module(module_name)
            modules[name].configure(command_parser)
    args = parser.parse_args(argv)
    return run_safely(f"galaxy-da {args.command}", modules[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
