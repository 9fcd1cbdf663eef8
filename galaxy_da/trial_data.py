"""What one trial trains on: source train/val with labels, target adapt without, and their statistics.

Target labels are never read: everything comes from
:meth:`~galaxy_da.data.reader.ShardDataset.training_view`. Normalisation
statistics come from the training splits only (source train, target adapt),
never from the target test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from galaxy_da.config import TrialConfig
from galaxy_da.data.loader import ChannelStats
from galaxy_da.data.reader import ImageSet, ShardDataset, TrainingView


def _subsample(data: ImageSet, limit: Optional[int], seed: int) -> ImageSet:
    if limit is None or len(data) <= limit:
        return data
    keep = np.sort(np.random.default_rng(seed).permutation(len(data))[:limit])
    return ImageSet(data.images[keep], None if data.labels is None else data.labels[keep], data.object_ids[keep])


NORMALISATIONS: dict[str, Callable[[ImageSet, ImageSet], tuple[ChannelStats, ChannelStats]]] = {
    "per_domain": lambda src, tgt: (ChannelStats.of(src.images), ChannelStats.of(tgt.images)),
    "shared": lambda src, tgt: (ChannelStats.of(src.images, tgt.images),) * 2,
    "none": lambda src, tgt: (ChannelStats.identity(src.images.shape[1]),) * 2,
}


@dataclass
class TrialData:
    view: TrainingView  # never the dataset itself: nothing here leads to target labels
    source_train: ImageSet
    source_val: ImageSet
    target_adapt: ImageSet
    source_stats: ChannelStats
    target_stats: ChannelStats

    @property
    def train_counts(self) -> list[int]:
        return np.bincount(self.source_train.labels, minlength=len(self.view.class_names)).tolist()


def load_trial_data(cfg: TrialConfig) -> TrialData:
    """Source train/val with labels, target adapt (of the survey ``data.target``) without; statistics from training splits only."""
    dataset = ShardDataset(cfg.data.path, check_hashes=cfg.data.verify_hashes, target=cfg.data.target)
    view = dataset.training_view()
    source_train = _subsample(view.source("train"), cfg.data.max_source, cfg.seed)
    source_val = _subsample(view.source("val"), cfg.data.max_source, cfg.seed + 1)
    target_adapt = _subsample(view.target("adapt"), cfg.data.max_target, cfg.seed + 2)
    source_stats, target_stats = NORMALISATIONS[cfg.data.normalization](source_train, target_adapt)
    return TrialData(view, source_train, source_val, target_adapt, source_stats, target_stats)
