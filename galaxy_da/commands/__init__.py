"""Command modules of ``galaxy-da``: each owns its flags (``configure``) and its work (``run``).

A command module exposes ``configure(parser)`` and ``run(args) -> exit status``
and keeps heavy imports (torch, Ray, MLflow) inside ``run``, so ``--help`` and
config errors come back at once. :mod:`galaxy_da.cli` dispatches to them;
modules with their own ``python -m`` entry (:mod:`galaxy_da.eval`,
:mod:`galaxy_da.report`) call :func:`standalone` and never import the dispatcher;
the sweep scripts call :func:`guarded`, so every entry point reports a user's
error the same way: one line, no traceback. Each parses with :func:`parse_arguments`,
so dotted overrides may come before, between or after the flags.
"""

from __future__ import annotations

import argparse
import os
import sys
from types import ModuleType
from typing import Callable, Optional

# MLflow's console output that no one reads, off in every command unless the caller's environment says otherwise.
QUIET_MLFLOW = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # "Downloading artifacts: 100%|███" around every checkpoint fetch
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # "View run ... at http://127.0.0.1:<a sweep's server, gone after it>"
}


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's to fix: one line on stderr, exit 2, no traceback."""
    from galaxy_da.config import ConfigError
    from galaxy_da.data.errors import DatasetError
    from galaxy_da.sqlite_store import StoreError

    return (ConfigError, DatasetError, StoreError, FileNotFoundError, FileExistsError, LookupError, ValueError)


def parse_arguments(parser: argparse.ArgumentParser, argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Flags and positionals in any order (``model.width=4 --config c.yaml optim.epochs=2``), where the parser allows it.

    argparse's intermixed parsing refuses a parser with a ``REMAINDER`` (or sub-command)
    positional, whose words are another program's to read: such a parser parses as usual.
    """
    try:
        return parser.parse_intermixed_args(argv)
    except TypeError:  # raised before any word is read: a REMAINDER or sub-command positional
        return parser.parse_args(argv)


def guarded(prog: str, work: Callable[[], int]) -> int:
    """``work()``'s exit status; a user error instead prints ``<prog>: error: <message>`` and gives 2."""
    for key, value in QUIET_MLFLOW.items():
        os.environ.setdefault(key, value)
    try:
        return work()
    except user_errors() as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2


def run_safely(prog: str, module: ModuleType, args: argparse.Namespace) -> int:
    return guarded(prog, lambda: module.run(args))


def standalone(prog: str, module: ModuleType, description: str, argv: Optional[list[str]] = None) -> int:
    """``python -m galaxy_da.<module>``: the module's own flags, the same error handling as ``galaxy-da``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    module.configure(parser)
    return run_safely(prog, module, parse_arguments(parser, argv))
