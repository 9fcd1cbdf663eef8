"""ORACLE helpers for the benchmarks: they read target labels, so they live here, never in training.

- :func:`write_target_as_source`: a copy of a dataset whose *source* domain is the
  target adapt split with its labels, for the target-oracle upper bound;
- :func:`score_state`: a checkpoint's metrics on a labelled split;
- :class:`OracleTrace`: a ``report`` hook that scores ``last.pt`` on the labelled
  target test split after each epoch. The trainer runs hooks with its random
  streams isolated, so the hook cannot change the trial it watches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from galaxy_da.checkpoint import LAST, load_checkpoint
from galaxy_da.config import TrialConfig
from galaxy_da.data.loader import ChannelStats
from galaxy_da.data.reader import ImageSet, ShardDataset
from galaxy_da.data.splits import assign_splits
from galaxy_da.data.writer import DatasetWriter
from galaxy_da.inference import predict
from galaxy_da.metrics import classification_metrics
from galaxy_da.models.registry import build_model

ORACLE_VAL_FRACTION = 0.2


def write_target_as_source(dataset_path: str, out: Path, seed: int) -> Path:
    """Copy the target domain into both domains of a new dataset (labels of adapt used for training).

    source train/val = target adapt, split stratified ``1 - f`` / ``f``; target adapt/test = unchanged.
    """
    dataset = ShardDataset(dataset_path)
    view = dataset.evaluation_view()
    adapt, test = view.labelled("target", "adapt"), view.labelled("target", "test")
    provenance = {"derived_from": dataset.manifest_hash, "kind": "target-as-source (oracle)", "seed": seed}
    with DatasetWriter(out, dataset.image_shape, dataset.class_names, provenance=provenance, overwrite=True) as writer:
        source_splits = assign_splits(adapt.labels, "source", seed, ORACLE_VAL_FRACTION)
        writer.add_batch("source", [f"as-source/{i}" for i in adapt.object_ids], source_splits, adapt.labels, adapt.images)
        for split, rows in (("adapt", adapt), ("test", test)):
            writer.add_batch("target", list(rows.object_ids), [split] * len(rows), rows.labels, rows.images)
    return out


def score_state(state: dict[str, Any], model_cfg, data: ImageSet, stats_domain: str, model=None) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class recall and predicted counts of a checkpoint on a labelled split."""
    class_names = state["class_names"]
    if model is None:
        channels, height, _ = state["image_shape"]
        model = build_model(model_cfg, len(class_names), channels, height)
    model.load_state_dict(state["model"])
    stats = ChannelStats(**{k: tuple(v) for k, v in state["norm_stats"][stats_domain].items()})
    logits = predict(model, data, stats, 256, torch.device("cpu")).logits
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    metrics = classification_metrics(data.labels, probs, class_names)
    return {
        "acc": metrics["acc"],
        "macro_f1": metrics["macro_f1"],
        "recall": {c: metrics[f"recall/{c}"] for c in class_names},
        "predicted": dict(zip(class_names, np.bincount(probs.argmax(1), minlength=len(class_names)).tolist())),
    }


class OracleTrace:
    """After each epoch, ``last.pt`` on the labelled target TEST split (analysis only; returns nothing to training).

    ``epochs`` holds one row per epoch: ``epoch``, ``scored`` (whether the
    label-free rule could pick that epoch) and :func:`score_state`'s metrics.
    """

    def __init__(self, cfg: TrialConfig):
        self.cfg = cfg
        self.test = ShardDataset(cfg.data.path).evaluation_view().labelled("target", "test")
        self.epochs: list[dict[str, Any]] = []
        self._model = None

    def __call__(self, record: dict[str, Any], checkpoint_dir: Path) -> None:
        state = load_checkpoint(checkpoint_dir / LAST)
        if self._model is None:
            channels, height, _ = state["image_shape"]
            self._model = build_model(self.cfg.model, len(state["class_names"]), channels, height)
        row = score_state(state, self.cfg.model, self.test, "target", self._model)
        self.epochs.append({"epoch": record["epoch"], "scored": f"select/{self.cfg.selection.rule}" in record, **row})

    def at(self, epoch: int) -> dict[str, Any]:
        return next(row for row in self.epochs if row["epoch"] == epoch)

    def best_scored(self) -> dict[str, Any]:
        """The ORACLE choice among the epochs the label-free rule may pick."""
        return max((row for row in self.epochs if row["scored"]), key=lambda row: row["macro_f1"])
