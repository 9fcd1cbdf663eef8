"""How far apart the source and target features are.

Inputs are feature matrices ``source`` (n, D) and ``target`` (m, D) as numpy
arrays. :func:`domain_probe` and :func:`sinkhorn_divergence` need no labels;
:func:`class_centroid_distances` reads *target labels* and is therefore an
evaluation metric only: it must never feed training or model selection.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler


def domain_classifier(C: float = 1.0) -> Pipeline:
    """``StandardScaler`` then L2-regularised ``LogisticRegression(C, lbfgs, max_iter=1000)``.

    Standardising first gives C=1 a sensible strength whatever the feature
    scale (the reference fitted C=1 on unit-norm features and underfitted).
    Shared by the domain probe and the DEV selection rule.
    """
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))


def l2_normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit Euclidean norm: ``x / max(||x||_2, 1e-12)``; shape kept (N, D)."""
    features = np.asarray(features, dtype=np.float64)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def subsample(rows: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``size`` rows of ``rows`` drawn without replacement (all of them, unshuffled, if fewer)."""
    if len(rows) <= size:
        return rows
    return rows[np.sort(rng.choice(len(rows), size=size, replace=False))]


def domain_probe(
    source: np.ndarray, target: np.ndarray, seed: int = 0, test_fraction: float = 0.3, max_per_domain: int = 4000
) -> dict[str, float]:
    """A linear probe that tries to tell target from source features, and the proxy A-distance.

    The larger domain is subsampled to the size of the smaller one (and both to
    at most ``max_per_domain``), so chance is exactly 0.5 whatever the domain
    sizes. A :func:`domain_classifier` is fitted on ``1 - test_fraction`` of the
    rows (stratified by domain) and scored on the held-out rest:

    - ``auc``: ROC-AUC of ``p(target | x)``; 0.5 means the domains are indistinguishable;
    - ``balanced_acc``: mean of the per-domain accuracies at threshold 0.5;
    - ``error``: balanced error ``eps = 1 - balanced_acc``;
    - ``a_distance``: proxy A-distance ``clip(2 (1 - 2 eps), 0, 2)`` (Ben-David et
      al. 2007): 0 when mixed, 2 when separable. The reference reported ``2 eps``,
      which reads a separable pair as perfectly aligned.

    Shapes: ``source`` (n, D), ``target`` (m, D); each domain needs at least 4 rows.
    """
    rng = np.random.default_rng(seed)
    size = min(len(source), len(target), max_per_domain)
    if size < 4:
        raise ValueError(f"domain_probe needs >= 4 rows per domain; got {len(source)} source, {len(target)} target")
    features = np.concatenate([subsample(np.asarray(source), size, rng), subsample(np.asarray(target), size, rng)])
    domains = np.repeat([0, 1], size)
    x_fit, x_held, d_fit, d_held = train_test_split(
        features, domains, test_size=test_fraction, stratify=domains, random_state=seed
    )
    p_target = domain_classifier().fit(x_fit, d_fit).predict_proba(x_held)[:, 1]
    balanced_acc = float(balanced_accuracy_score(d_held, p_target >= 0.5))
    error = 1.0 - balanced_acc
    return {
        "auc": float(roc_auc_score(d_held, p_target)),
        "balanced_acc": balanced_acc,
        "error": error,
        "a_distance": float(np.clip(2.0 * (1.0 - 2.0 * error), 0.0, 2.0)),
    }


def class_centroid_distances(
    src_feats: np.ndarray,
    src_labels: np.ndarray,
    tgt_feats: np.ndarray,
    tgt_labels: np.ndarray,
    class_names: Sequence[str],
) -> dict[str, float]:
    """Distance between the source and target centroids of each class. EVALUATION ONLY.

    ``d_c = || mean_{y_i = c} x^s_i - mean_{y_j = c} x^t_j ||_2`` on L2-normalised
    features (so ``d_c`` is in [0, 2] and comparable across backbones). It uses
    the **target labels**: log it under ``eval/``, never select on it.
    Keys ``centroid_dist/<class>`` (NaN if the class is missing on either side)
    and ``centroid_dist/mean`` (mean over the defined classes).
    Shapes: ``src_feats`` (n, D), ``src_labels`` (n,), ``tgt_feats`` (m, D), ``tgt_labels`` (m,).
    """
    src, tgt = l2_normalise(src_feats), l2_normalise(tgt_feats)
    src_labels, tgt_labels = np.asarray(src_labels), np.asarray(tgt_labels)
    distances = {}
    for index, name in enumerate(class_names):
        src_rows, tgt_rows = src[src_labels == index], tgt[tgt_labels == index]
        missing = len(src_rows) == 0 or len(tgt_rows) == 0
        gap = np.nan if missing else np.linalg.norm(src_rows.mean(axis=0) - tgt_rows.mean(axis=0))
        distances[f"centroid_dist/{name}"] = float(gap)
    defined = [value for value in distances.values() if not np.isnan(value)]
    distances["centroid_dist/mean"] = float(np.mean(defined)) if defined else float("nan")
    return distances


def sinkhorn_divergence(
    src: np.ndarray, tgt: np.ndarray, blur: float = 0.05, max_points: int = 1000, seed: int = 0
) -> float:
    """Debiased Sinkhorn divergence between the two feature clouds (GeomLoss).

    ``S(a, b) = OT_eps(a, b) - (OT_eps(a, a) + OT_eps(b, b)) / 2`` with uniform
    weights, cost ``|x - y|^2 / 2`` (``p=2``), ``eps = blur^2``, on L2-normalised
    features; ``scaling=0.9`` (coarser annealing can go negative). Each side is
    subsampled to at most ``max_points`` rows, seeded, so the tensorised backend
    stays under a second on CPU. Shapes: ``src`` (n, D), ``tgt`` (m, D) -> float >= 0.
    """
    import torch
    from geomloss import SamplesLoss

    rng = np.random.default_rng(seed)
    src_rows = torch.as_tensor(subsample(l2_normalise(src), max_points, rng), dtype=torch.float32)
    tgt_rows = torch.as_tensor(subsample(l2_normalise(tgt), max_points, rng), dtype=torch.float32)
    loss = SamplesLoss("sinkhorn", p=2, blur=blur, backend="tensorized", scaling=0.9)
    with torch.no_grad():
        return float(loss(src_rows, tgt_rows))
