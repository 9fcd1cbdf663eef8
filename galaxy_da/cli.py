"""``galaxy-da`` command line: dispatch only.

Each command is a module that owns its flags (``configure``) and its work
(``run``); :data:`COMMANDS` maps a name to its help line and module. Only the
module of the command given is imported, so ``galaxy-da --help`` and a config
error come back at once. The command's words are parsed by its own parser
(:func:`~galaxy_da.commands.parse_arguments`), so overrides may come before or after its flags.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional

from galaxy_da.commands import parse_arguments, run_safely

COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("render the GalSim two-domain benchmark", "galaxy_da.commands.synth"),
    "ingest": ("convert the original TNG50 source and GZ2 or GZ DESI target layout into shards", "galaxy_da.commands.ingest"),
    "upload": ("copy a finished dataset to object storage (s3://...), manifest last", "galaxy_da.commands.upload"),
    "validate": ("check every shard's sha256 against the manifest", "galaxy_da.commands.validate"),
    "summary": ("class counts per domain and split", "galaxy_da.commands.summary"),
    "train": ("train one trial and log it to MLflow", "galaxy_da.commands.train"),
    "eval": ("evaluate a run on the target domain; logs metrics and plots back to it", "galaxy_da.eval"),
    "report": ("evaluate a sweep's child runs; leaderboard, regrets and seed groups", "galaxy_da.report"),
    "sweep": (
        "run a sweep script (sweeps/<name>.py) on a fresh local Ray instance, or on a running cluster with --address auto or $RAY_ADDRESS",
        "galaxy_da.commands.sweep",
    ),
    "demo": (
        "render the synthetic benchmark into data/synth if it is missing, summarise it and run a local smoke sweep "
        "(sweeps/topk.py --smoke-test, a few tiny trials) into the MLflow store",
        "galaxy_da.commands.demo",
    ),
}


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="galaxy-da", description="galaxy morphology domain adaptation: data, training, sweeps, evaluation")
    sub = parser.add_subparsers(dest="command", required=True)
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (help_text, module_name) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module, chosen_parser = importlib.import_module(module_name), command_parser
            module.configure(command_parser)
    if chosen is None:
        parser.parse_args(argv)  # --help, no command or an unknown one: argparse answers and exits
        parser.error("give the command first, e.g. galaxy-da train --help")
    args = parse_arguments(chosen_parser, argv[1:])  # the command's own parser: overrides may follow its flags
    args.command = chosen
    return run_safely(f"galaxy-da {chosen}", module, args)


if __name__ == "__main__":
    sys.exit(main())
