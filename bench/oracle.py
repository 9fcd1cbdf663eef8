"""ORACLE helpers for the benchmarks: they read target labels, so they live here, never in training.

- :func:`write_target_as_source`: a copy of a dataset whose *source* domain is the
  target adapt split with its labels, for the target-oracle upper bound;
- :func:`score_state`: a checkpoint's metrics on a labelled split;
- :func:`score_predictions`: the same from logits;
- :class:`OracleTrace`: a hook that scores the trainer's in-memory model on the
  labelled target test split after each scored epoch. The trainer runs hooks
  with its random streams isolated, so the hook cannot change the trial it watches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from galaxy_da.config import TrialConfig
from galaxy_da.data.loader import ChannelStats
from galaxy_da.data.reader import ImageSet, ShardDataset
from galaxy_da.data.schema import DEFAULT_TARGET, ORACLE_KIND
from galaxy_da.data.splits import assign_splits
from galaxy_da.data.writer import DatasetWriter
from galaxy_da.inference import predict
from galaxy_da.metrics import classification_metrics
from galaxy_da.models.registry import build_model

ORACLE_VAL_FRACTION = 0.2


def write_target_as_source(dataset_path: str, out: Path, seed: int, target: str = DEFAULT_TARGET) -> Path:
    """Copy target survey ``target`` into both domains of a new dataset (labels of adapt used for training).

    source train/val = target adapt, split stratified ``1 - f`` / ``f``; target adapt/test = unchanged, under
    the same survey name (so the same ``data.target`` reads it).
    """
    dataset = ShardDataset(dataset_path, target=target)
    view = dataset.evaluation_view()
    adapt, test = view.labelled("target", "adapt"), view.labelled("target", "test")
    provenance = {"derived_from": dataset.manifest_hash, "kind": ORACLE_KIND, "seed": seed}
    with DatasetWriter(out, dataset.image_shape, dataset.class_names, provenance=provenance, overwrite=True,
                       targets={target: dataset.targets[target]}) as writer:
        source_splits = assign_splits(adapt.labels, "source", seed, ORACLE_VAL_FRACTION)
        writer.add_batch("source", [f"as-source/{i}" for i in adapt.object_ids], source_splits, adapt.labels, adapt.images)
        for split, rows in (("adapt", adapt), ("test", test)):
            writer.add_batch("target", list(rows.object_ids), [split] * len(rows), rows.labels, rows.images)
    return out


def score_state(state: dict[str, Any], model_cfg, data: ImageSet, stats_domain: str) -> dict[str, Any]:
    """:func:`score_predictions` of a checkpoint on a labelled split."""
    class_names = state["class_names"]
    channels, height, _ = state["image_shape"]
    model = build_model(model_cfg, len(class_names), channels, height)
    model.load_state_dict(state["model"])
    stats = ChannelStats(**{k: tuple(v) for k, v in state["norm_stats"][stats_domain].items()})
    return score_predictions(predict(model, data, stats, 256, torch.device("cpu")).logits, data.labels, class_names)


def score_predictions(logits: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class recall and predicted counts of logits (N, K) against labels (N,)."""
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    metrics = classification_metrics(labels, probs, class_names)
    return {
        "acc": metrics["acc"],
        "macro_f1": metrics["macro_f1"],
        "recall": {c: metrics[f"recall/{c}"] for c in class_names},
        "predicted": dict(zip(class_names, np.bincount(probs.argmax(1), minlength=len(class_names)).tolist())),
    }


class OracleTrace:
    """The trainer's in-memory model on the labelled target TEST split, after each scored epoch (analysis only).

    Called as ``trace(record, trainer)`` between two epochs (``run_trial``'s
    ``extra_report``); it returns nothing to training, and the trainer runs it
    with its random streams isolated. Only the epochs the label-free rule may
    pick are scored (``select/<rule>`` in the record), unless ``every_epoch``.
    ``epochs`` holds one row per traced epoch: ``epoch``, ``scored`` and the
    metrics of :func:`score_predictions`.
    """

    def __init__(self, cfg: TrialConfig, every_epoch: bool = False):
        self.cfg = cfg
        self.every_epoch = every_epoch
        self.test = ShardDataset(cfg.data.path, target=cfg.data.target).evaluation_view().labelled("target", "test")
        self.epochs: list[dict[str, Any]] = []

    def __call__(self, record: dict[str, Any], trainer) -> None:
        scored = f"select/{self.cfg.selection.rule}" in record
        if not (scored or self.every_epoch):
            return
        outputs = predict(trainer.model, self.test, trainer.data.target_stats, self.cfg.data.eval_batch_size, trainer.device,
                          self.cfg.compute.precision, trainer.layout)
        row = score_predictions(outputs.logits, self.test.labels, trainer.data.view.class_names)
        self.epochs.append({"epoch": record["epoch"], "scored": scored, **row})

    def at(self, epoch: int) -> dict[str, Any]:
        return next(row for row in self.epochs if row["epoch"] == epoch)

    def best_scored(self) -> dict[str, Any]:
        """The ORACLE choice among the epochs the label-free rule may pick."""
        return max((row for row in self.epochs if row["scored"]), key=lambda row: row["macro_f1"])
