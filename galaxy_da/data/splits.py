"""Stratified, seeded splits, decided once when a dataset is written."""

from __future__ import annotations

import zlib

import numpy as np

from galaxy_da.data.schema import DOMAIN_SPLITS


def assign_splits(labels: np.ndarray, domain: str, seed: int, holdout_fraction: float = 0.2) -> np.ndarray:
    """Return one split name per row, stratified by class.

    Per class ``c`` with ``n_c`` rows, ``max(1, floor(holdout_fraction * n_c))``
    rows go to the held-out split (source ``val``, target ``test``) when
    ``n_c >= 2``; the rest to the training split (source ``train``, target
    ``adapt``). The permutation depends only on ``seed``, ``domain`` and the
    labels, so every process and node derives the same split.
    """
    if domain not in DOMAIN_SPLITS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {list(DOMAIN_SPLITS)}")
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    fit_split, holdout_split = DOMAIN_SPLITS[domain]
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, zlib.crc32(domain.encode())])
    splits = np.full(labels.shape[0], fit_split, dtype=object)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if members.size < 2:
            continue
        n_holdout = max(1, int(np.floor(holdout_fraction * members.size)))
        splits[rng.permutation(members)[:n_holdout]] = holdout_split
    return splits.astype(str)
