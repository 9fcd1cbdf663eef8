"""``galaxy-da train``: train one trial and log it to MLflow."""

from __future__ import annotations

import argparse
from pathlib import Path

from galaxy_da.tracking import TRACKING_URI_HELP


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="trial YAML (default: built-in defaults)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.backbone=resnet18 align.topk=8")
    parser.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    parser.add_argument("--checkpoint-dir", type=Path, help="where last.pt/best.pt go (default: a temporary folder)")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir/last.pt")
    parser.add_argument("--no-track", action="store_true", help="do not log to MLflow")


def run(args: argparse.Namespace) -> int:
    from galaxy_da import strict_json
    from galaxy_da.config import load_config

    cfg = load_config(args.config, args.overrides)  # before torch is imported: a config error comes back at once
    if args.tracking_uri:
        cfg.tracking.tracking_uri = args.tracking_uri
    from galaxy_da.trial import run_trial

    result = run_trial(cfg, track=not args.no_track, checkpoint_dir=args.checkpoint_dir, resume=args.resume, progress=True)
    print(strict_json.dumps({"run_id": result.run_id, "best_epoch": result.best_epoch, "best_score": result.best_score}))
    return 0
