"""Classification and calibration metrics, plus the domain metrics re-exported.

Every function takes numpy arrays: ``labels`` (N,) int in ``[0, K)``, ``probs``
(N, K) softmax probabilities whose rows sum to 1, ``preds`` (N,) int. Results are
plain ``dict[str, float]`` so they log to MLflow as they are; per-class keys are
namespaced ``precision/<class>``, ``recall/<class>``.

Per-class precision, recall and F1 are computed here from the confusion matrix
(not delegated to scikit-learn), and the tests check them against scikit-learn.
Averages follow scikit-learn's conventions: macro-F1 averages the classes that
occur in ``labels`` or ``preds``; balanced accuracy averages the recall of the
classes that occur in ``labels``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from galaxy_da.domain_metrics import class_centroid_distances, domain_probe, sinkhorn_divergence

__all__ = [
    "PerClassScores",
    "ReliabilityBins",
    "balanced_accuracy",
    "brier_score",
    "class_centroid_distances",
    "classification_metrics",
    "confusion_matrix",
    "domain_probe",
    "expected_calibration_error",
    "macro_f1",
    "majority_baseline",
    "one_vs_rest_scores",
    "per_class_scores",
    "reliability_bins",
    "sinkhorn_divergence",
]


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``cm[i, j] = #{n : labels_n = i, preds_n = j}``.

    Shapes: ``labels`` (N,), ``preds`` (N,) -> (K, K) int64; rows are the true
    class, columns the predicted class.
    """
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    flat = np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


@dataclass(frozen=True)
class PerClassScores:
    """Per-class precision, recall and F1 from a (K, K) confusion matrix.

    ``precision_c = cm[c,c] / sum_i cm[i,c]``, ``recall_c = cm[c,c] / sum_j cm[c,j]``,
    ``f1_c = 2 P R / (P + R)``; a ratio with a zero denominator is 0.
    ``in_labels[c]``: class c occurs among the true labels; ``occurs[c]``: among
    the labels or the predictions. All arrays have shape (K,).
    """

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    in_labels: np.ndarray
    occurs: np.ndarray

    @property
    def macro_f1(self) -> float:
        """``mean_c f1_c`` over the classes occurring in the labels or the predictions."""
        return float(self.f1[self.occurs].mean())

    @property
    def balanced_accuracy(self) -> float:
        """``mean_c recall_c`` over the classes occurring in the labels."""
        return float(self.recall[self.in_labels].mean())


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=denominator > 0)


def per_class_scores(cm: np.ndarray) -> PerClassScores:
    """See :class:`PerClassScores`; ``cm`` is (K, K) with rows true, columns predicted."""
    cm = np.asarray(cm, dtype=np.float64)
    hits = np.diag(cm)
    true_counts, pred_counts = cm.sum(axis=1), cm.sum(axis=0)
    precision = _ratio(hits, pred_counts)
    recall = _ratio(hits, true_counts)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return PerClassScores(precision, recall, f1, in_labels=true_counts > 0, occurs=(true_counts + pred_counts) > 0)


def macro_f1(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> float:
    """``mean_c f1_c`` over the classes occurring in ``labels`` or ``preds``. Shapes (N,), (N,)."""
    return per_class_scores(confusion_matrix(labels, preds, num_classes)).macro_f1


def balanced_accuracy(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> float:
    """``mean_c recall_c`` over the classes occurring in ``labels``. Shapes (N,), (N,)."""
    return per_class_scores(confusion_matrix(labels, preds, num_classes)).balanced_accuracy


@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width confidence bins over the max-probability ``conf_n = max_c p_nc``.

    Bin b covers ``[b/B, (b+1)/B)``; the last bin is closed, so ``conf = 1.0``
    lands in bin B-1 (``np.digitize`` on the edges would drop it). Arrays are
    (B,): ``counts`` n_b, ``confidence`` mean conf in the bin, ``accuracy`` mean
    correctness in the bin (both NaN for an empty bin), ``edges`` (B+1,).
    """

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def ece(self) -> float:
        """``sum_b n_b/N |acc_b - conf_b|`` over the non-empty bins."""
        filled = self.counts > 0
        weights = self.counts[filled] / self.counts.sum()
        return float(np.sum(weights * np.abs(self.accuracy[filled] - self.confidence[filled])))


def reliability_bins(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> ReliabilityBins:
    """Bin the predictions by confidence; see :class:`ReliabilityBins`. Shapes (N,), (N, K)."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(labels)).astype(np.float64)
    index = np.clip(np.floor(confidence * bins).astype(np.int64), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(index, weights=correct, minlength=bins) / counts
    return ReliabilityBins(np.linspace(0.0, 1.0, bins + 1), counts, mean_confidence, accuracy)


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """ECE ``= sum_b n_b/N |acc_b - conf_b|`` with B equal-width bins; shapes (N,), (N, K)."""
    return reliability_bins(labels, probs, bins).ece


def brier_score(labels: np.ndarray, probs: np.ndarray) -> float:
    """Multi-class Brier score ``(1/N) sum_n sum_c (p_nc - [y_n = c])^2`` in [0, 2]; shapes (N,), (N, K)."""
    probs = np.asarray(probs, dtype=np.float64)
    onehot = np.eye(probs.shape[1])[np.asarray(labels)]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def one_vs_rest_scores(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """ROC-AUC and average precision (AUPRC), one class against the rest, on ``probs[:, c]``.

    ``roc_auc_macro = mean_c AUC_c``, ``roc_auc_weighted = sum_c pi_c AUC_c`` with
    ``pi_c`` the class frequency in ``labels``; the same for ``auprc_*`` with
    ``AP_c = sum_k (R_k - R_{k-1}) P_k``. All four are NaN when some class is
    absent from ``labels`` (its curve is undefined). Shapes (N,), (N, K).
    """
    labels = np.asarray(labels)
    num_classes = probs.shape[1]
    support = np.bincount(labels, minlength=num_classes)
    keys = ("roc_auc_macro", "roc_auc_weighted", "auprc_macro", "auprc_weighted")
    if np.any(support == 0):
        return dict.fromkeys(keys, float("nan"))
    onehot = np.eye(num_classes, dtype=bool)[labels]
    auc = np.array([roc_auc_score(onehot[:, c], probs[:, c]) for c in range(num_classes)])
    ap = np.array([average_precision_score(onehot[:, c], probs[:, c]) for c in range(num_classes)])
    prior = support / support.sum()
    return dict(zip(keys, map(float, (auc.mean(), prior @ auc, ap.mean(), prior @ ap))))


def classification_metrics(
    labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str], ece_bins: int = 15
) -> dict[str, float]:
    """All classification and calibration metrics of one split.

    Shapes: ``labels`` (N,) int, ``probs`` (N, K) softmax probabilities, K =
    ``len(class_names)``; predictions are ``argmax_c probs``. Keys: ``acc``,
    ``balanced_acc``, ``macro_f1``, ``precision/<class>``, ``recall/<class>``,
    ``roc_auc_macro``, ``roc_auc_weighted``, ``auprc_macro``, ``auprc_weighted``
    (see :func:`one_vs_rest_scores`), ``ece_<bins>`` (see :class:`ReliabilityBins`)
    and ``brier`` (see :func:`brier_score`).
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(labels), len(class_names)):
        raise ValueError(f"probs has shape {probs.shape}; expected ({len(labels)}, {len(class_names)})")
    preds = probs.argmax(axis=1)
    scores = per_class_scores(confusion_matrix(labels, preds, len(class_names)))
    metrics = {
        "acc": float(np.mean(preds == labels)),
        "balanced_acc": scores.balanced_accuracy,
        "macro_f1": scores.macro_f1,
    }
    for index, name in enumerate(class_names):
        metrics[f"precision/{name}"] = float(scores.precision[index])
        metrics[f"recall/{name}"] = float(scores.recall[index])
    metrics.update(one_vs_rest_scores(labels, probs))
    metrics[f"ece_{ece_bins}"] = expected_calibration_error(labels, probs, ece_bins)
    metrics["brier"] = brier_score(labels, probs)
    return metrics


def majority_baseline(train_counts: Sequence[int], labels: np.ndarray, class_names: Sequence[str]) -> dict:
    """The trivial predictor: the majority class of the *training* counts, for every example.

    ``train_counts`` (K,) are the source-train class counts; ``labels`` (N,) the
    split being scored. Returns ``acc``, ``macro_f1``, ``balanced_acc`` and
    ``class`` (the predicted class name). On the reference's target test split
    (78% spiral) it gives acc 0.780 and macro-F1 0.292.
    """
    majority = int(np.argmax(train_counts))
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.full_like(labels, majority)
    return {
        "acc": float(np.mean(preds == labels)),
        "macro_f1": macro_f1(labels, preds, len(class_names)),
        "balanced_acc": balanced_accuracy(labels, preds, len(class_names)),
        "class": class_names[majority],
    }
