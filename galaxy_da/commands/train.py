"""``galaxy-da train``: train one trial and log it to MLflow.

One progress line per epoch, then what came of it: the best epoch (epochs
numbered from 1, :mod:`galaxy_da.epoch_numbers`) and which epochs were warm-up,
where the run was logged (store, experiment, run id), a JSON line for scripts,
and the next command to run. ``--resume`` without a ``last.pt`` to continue from
is refused; Ctrl-C ends with one line naming the checkpoint folder and the
command that resumes it (exit 130). A tracked run notes its MLflow run in the
checkpoint folder (:data:`RUN_FILE`), so ``--resume`` logs into that same run
(re-opened; epochs it holds are not logged twice) instead of opening another.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from galaxy_da.tracking import TRACKING_URI_HELP, default_tracking_uri

if TYPE_CHECKING:
    from galaxy_da.config import TrialConfig
    from galaxy_da.trial import TrialOutcome

RUN_FILE = "mlflow_run.json"  # in the checkpoint folder: {"run_id", "tracking_uri"} of the run its checkpoints log to


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="trial YAML (default: built-in defaults)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.backbone=resnet18 align.topk=8")
    parser.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    parser.add_argument("--checkpoint-dir", type=Path, help="where last.pt/best.pt go (default: a temporary folder)")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir/last.pt")
    parser.add_argument("--no-track", action="store_true", help="do not log to MLflow")


def closing_lines(cfg: "TrialConfig", outcome: "TrialOutcome", tracked: bool, checkpoint_dir: Optional[Path] = None) -> list[str]:
    """What ``galaxy-da train`` prints after its last epoch, ending with the next command to run."""
    from galaxy_da import strict_json
    from galaxy_da.epoch_numbers import shown, warmup_note

    rule, epochs = cfg.selection.rule, cfg.optim.epochs
    trained = f"trained {len(outcome.history)} of {epochs} epochs"
    if outcome.best_epoch is None:
        lines = [f"{trained}; no epoch was scored, so there is no best checkpoint"]
    else:
        lines = [f"{trained}; best {rule} {outcome.best_score:.4f} at epoch {shown(outcome.best_epoch)}"]
    warmup = warmup_note(cfg.optim.warmup_epochs)
    if warmup:
        lines.append(warmup)
    if tracked:
        store = cfg.tracking.tracking_uri or default_tracking_uri()
        lines.append(f"logged to MLflow: run {outcome.run_id}, experiment {cfg.tracking.experiment!r}, store {store}")
    else:
        lines.append("not logged to MLflow (--no-track)" + (f"; checkpoints in {checkpoint_dir}" if checkpoint_dir else ""))
    lines.append(strict_json.dumps({"run_id": outcome.run_id, "best_epoch_index": outcome.best_epoch, "best_score": outcome.best_score}))
    if tracked:
        uri_flag = f" --tracking-uri {cfg.tracking.tracking_uri}" if cfg.tracking.tracking_uri else ""
        lines.append(f"next: python -m galaxy_da.eval --run-id {outcome.run_id}{uri_flag}   (target-domain metrics and plots, logged back to the run)")
    else:
        lines.append("next: train again without --no-track to log a run that python -m galaxy_da.eval can evaluate")
    return lines


def check_resume(args: argparse.Namespace) -> None:
    """Refuse ``--resume`` that has no ``last.pt`` to continue from: it would silently start over from epoch 1."""
    from galaxy_da.checkpoint import LAST
    from galaxy_da.config import ConfigError

    if not args.resume:
        return
    if args.checkpoint_dir is None:
        raise ConfigError(f"--resume needs --checkpoint-dir: the folder holding the interrupted run's {LAST} "
                          "(without it, checkpoints go to a fresh temporary folder)")
    if not (args.checkpoint_dir / LAST).is_file():
        raise ConfigError(f"--resume: no {args.checkpoint_dir / LAST}; point --checkpoint-dir at the folder holding the interrupted run's {LAST}")


def remember_run(checkpoint_dir: Path, run_id: Optional[str], tracking_uri: str) -> None:
    """Note in ``checkpoint_dir`` the MLflow run these checkpoints log to (nothing untracked)."""
    if run_id is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        (checkpoint_dir / RUN_FILE).write_text(json.dumps({"run_id": run_id, "tracking_uri": tracking_uri}))


def remembered_run(checkpoint_dir: Path, tracking_uri: str) -> tuple[Optional[str], str]:
    """``(run id to continue or None, the line saying which)`` for ``--resume`` from ``checkpoint_dir``.

    The noted run is continued only when it is in ``tracking_uri``'s store and not deleted; otherwise a new run
    is opened and the line says why.
    """
    path = checkpoint_dir / RUN_FILE
    try:
        noted = json.loads(path.read_text())
        run_id, noted_uri = str(noted["run_id"]), str(noted["tracking_uri"])
    except FileNotFoundError:
        return None, f"resuming into a new MLflow run: {checkpoint_dir} notes no run ({RUN_FILE} is missing)"
    except (ValueError, KeyError, TypeError) as error:
        return None, f"resuming into a new MLflow run: {path} is unreadable ({type(error).__name__}: {error})"
    if noted_uri != tracking_uri:
        return None, f"resuming into a new MLflow run in {tracking_uri}: the checkpoints' run {run_id} is in {noted_uri}"
    from mlflow.exceptions import MlflowException

    from galaxy_da.tracking import mlflow_client

    try:
        stage = mlflow_client(tracking_uri).get_run(run_id).info.lifecycle_stage
    except MlflowException:
        stage = "missing"
    if stage != "active":
        return None, f"resuming into a new MLflow run: the checkpoints' run {run_id} is {stage} in {tracking_uri}"
    return run_id, f"resuming MLflow run {run_id} (epochs it holds are not logged again)"


def resume_command(args: argparse.Namespace, checkpoint_dir: Path) -> str:
    """The ``galaxy-da train`` command that continues this one from ``checkpoint_dir/last.pt``."""
    words = ["galaxy-da", "train", *(["--config", str(args.config)] if args.config else []), *args.overrides]
    words += ["--tracking-uri", args.tracking_uri] if args.tracking_uri else []
    words += ["--no-track"] if args.no_track else []
    return shlex.join([*words, "--checkpoint-dir", str(checkpoint_dir), "--resume"])


def interrupted_line(args: argparse.Namespace, checkpoint_dir: Path, run_id: Optional[str] = None) -> str:
    """What Ctrl-C prints: where the checkpoints are and how to go on, or that there is nothing to go on from."""
    from galaxy_da.checkpoint import LAST

    if not (checkpoint_dir / LAST).is_file():
        return f"interrupted before the first epoch ended; nothing to resume ({checkpoint_dir} holds no {LAST})"
    run = f" (MLflow run {run_id}, closed KILLED; resuming re-opens it)" if run_id else ""
    return f"interrupted; checkpoints in {checkpoint_dir}{run}; resume with: {resume_command(args, checkpoint_dir)}"


def run(args: argparse.Namespace) -> int:
    import sys
    import tempfile

    from galaxy_da.config import load_config

    check_resume(args)
    cfg = load_config(args.config, args.overrides)  # before torch is imported: a config error comes back at once
    if args.tracking_uri:
        cfg.tracking.tracking_uri = args.tracking_uri
    checkpoint_dir = args.checkpoint_dir or Path(tempfile.mkdtemp(prefix="galaxy-da-ckpt-"))  # named here, so Ctrl-C can name it
    tracking_uri = cfg.tracking.tracking_uri or default_tracking_uri()
    run_id = None
    if args.resume and not args.no_track:
        run_id, line = remembered_run(checkpoint_dir, tracking_uri)
        print(line, flush=True)
    runs: list[str] = []

    def started(new_run_id: Optional[str]) -> None:
        runs.append(new_run_id)
        remember_run(checkpoint_dir, new_run_id, tracking_uri)

    try:
        from galaxy_da.trial import run_trial

        result = run_trial(cfg, track=not args.no_track, checkpoint_dir=checkpoint_dir, resume=args.resume, progress=True,
                           run_id=run_id, started=started)
    except KeyboardInterrupt:
        print(interrupted_line(args, checkpoint_dir, runs[0] if runs else None), file=sys.stderr)
        return 130
    print("\n".join(closing_lines(cfg, result, tracked=not args.no_track, checkpoint_dir=checkpoint_dir)))
    return 0
