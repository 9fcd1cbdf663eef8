"""Calibrate a two-domain dataset's difficulty: source-only versus target-oracle.

Two runs of the real trainer (``galaxy_da.train.train``, alignment off), both
scored on the labelled target test split:

- **source-only**: trained on source train, checkpoint selected on source val.
  Scored on source val (in-domain difficulty) and target test (the domain gap).
- **target-oracle** (uses target labels: an upper bound, never a method): trained
  on a *target-as-source* copy of the dataset. Its source train is the target
  adapt split minus a stratified 20 % held out as its source val (checkpoint
  selection); its target domain is the original target rows. Target test stays
  unseen until scoring, so the oracle's number is not selected on the test set.

A benchmark is calibrated when both in-domain accuracies lie near 85-95 %, the
source-only model does not collapse to one class on the target, and its target
macro-F1 lies at least 15 points below the oracle's. The majority-class
predictor (from source-train counts) is printed alongside.

A dataset holds one or more target surveys; ``--target`` picks the one to
calibrate (``data.target``: ``sdss``, the SDSS-like target, or ``desi``, the
DESI-like one). The label-shift study (``bench/label_shift_study.py``) measures the same goals on both
targets over seeds; BENCHMARKS.md gives its figures.

Run: ``python bench/calibrate_synth.py --data data/synth --epochs 8 [--seed 0] [--target desi]
[--json bench/results/calibration.json]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from galaxy_da.checkpoint import load_checkpoint
from galaxy_da.config import TrialConfig, load_config
from galaxy_da.data.reader import ImageSet, ShardDataset
from galaxy_da.data.schema import DEFAULT_TARGET
from galaxy_da.metrics import majority_baseline
from galaxy_da.train import train
from oracle import score_state, write_target_as_source  # bench/ is the script's folder

BEST_CHECKPOINT = "best.pt"


def trial_config(data: str, epochs: int, seed: int, width: int, target: str = DEFAULT_TARGET) -> TrialConfig:
    overrides = [
        f"data.path={data}", f"data.target={target}", f"seed={seed}", f"model.width={width}", f"optim.epochs={epochs}",
        "data.batch_size=64", "optim.lr=0.002", "align.method=none",
    ]
    return load_config(None, overrides)


def train_and_score(cfg: TrialConfig, scored: dict[str, tuple[ImageSet, str]], workdir: Path) -> dict[str, dict]:
    """Train one trial, reload its selected checkpoint and score each ``name -> (labelled set, stats domain)``."""
    result = train(cfg, checkpoint_dir=workdir)
    checkpoint = load_checkpoint(workdir / BEST_CHECKPOINT)
    return {"best_epoch": result.best_epoch, **{name: score_state(checkpoint, cfg.model, data, domain) for name, (data, domain) in scored.items()}}


def calibrate(data: str, epochs: int, seed: int, width: int, workdir: Path, target: str = DEFAULT_TARGET) -> dict:
    dataset = ShardDataset(data, target=target)
    view = dataset.evaluation_view()
    source_val, target_test = view.labelled("source", "val"), view.labelled("target", "test")
    class_names = dataset.class_names
    train_counts = np.bincount(view.labelled("source", "train").labels, minlength=len(class_names))
    source_only = train_and_score(
        trial_config(data, epochs, seed, width, target),
        {"src_val": (source_val, "source"), "tgt_test": (target_test, "target")},
        workdir / "source_only",
    )
    oracle_data = write_target_as_source(data, workdir / "target_as_source", seed, target)
    oracle = train_and_score(
        trial_config(str(oracle_data), epochs, seed, width, target), {"tgt_test": (target_test, "target")}, workdir / "target_oracle"
    )
    return {
        "data": data, "target": target, "epochs": epochs, "seed": seed, "width": width,
        "source_only": source_only,
        "target_oracle": oracle,
        "majority": {
            "src_val": majority_baseline(train_counts, source_val.labels, class_names),
            "tgt_test": majority_baseline(train_counts, target_test.labels, class_names),
        },
        "gap_macro_f1": oracle["tgt_test"]["macro_f1"] - source_only["tgt_test"]["macro_f1"],
    }


def summary(report: dict) -> str:
    so, oracle, majority = report["source_only"], report["target_oracle"], report["majority"]
    rows = [
        ("source-only  src_val", so["src_val"]),
        ("source-only  tgt_test", so["tgt_test"]),
        ("target-oracle tgt_test", oracle["tgt_test"]),
        ("majority     src_val", majority["src_val"]),
        ("majority     tgt_test", majority["tgt_test"]),
    ]
    lines = [f"{'run':24s} {'acc':>6s} {'macroF1':>8s}  recall / predicted counts"]
    for name, scores in rows:
        detail = f"recall {_rounded(scores['recall'])} predicted {scores['predicted']}" if "recall" in scores else f"(always {scores['class']})"
        lines.append(f"{name:24s} {scores['acc']:6.3f} {scores['macro_f1']:8.3f}  {detail}")
    lines.insert(0, f"target survey: {report.get('target', DEFAULT_TARGET)}")
    lines.append(f"oracle - source-only target macro-F1: {report['gap_macro_f1']:+.3f} (calibrated: >= +0.15)")
    return "\n".join(lines)


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in values.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/synth")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", default=DEFAULT_TARGET, help="the target survey to calibrate (data.target; default: %(default)s)")
    parser.add_argument("--width", type=int, default=8, help="CNN width")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 on a shared machine)")
    parser.add_argument("--json", type=Path, help="write the full report here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="calibrate-synth-") as workdir:
        report = calibrate(args.data, args.epochs, args.seed, args.width, Path(workdir), args.target)
    print(summary(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
