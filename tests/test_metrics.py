"""Classification, calibration and domain metrics against scikit-learn and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax
from sklearn import metrics as skm

from galaxy_da.metrics import (
    brier_score,
    class_centroid_distances,
    classification_metrics,
    confusion_matrix,
    domain_probe,
    expected_calibration_error,
    majority_baseline,
    reliability_bins,
    sinkhorn_divergence,
)

CLASSES = ("elliptical", "irregular", "spiral")


def random_predictions(seed: int, n: int = 400, skill: float = 1.5):
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, size=n, p=[0.2, 0.1, 0.7])
    probs = softmax(skill * np.eye(3)[labels] + rng.normal(size=(n, 3)), axis=1)
    return labels, probs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_match_sklearn(seed):
    labels, probs = random_predictions(seed)
    preds = probs.argmax(axis=1)
    got = classification_metrics(labels, probs, CLASSES)

    assert got["acc"] == pytest.approx(skm.accuracy_score(labels, preds))
    assert got["balanced_acc"] == pytest.approx(skm.balanced_accuracy_score(labels, preds))
    assert got["macro_f1"] == pytest.approx(skm.f1_score(labels, preds, average="macro"))
    precision, recall, _, support = skm.precision_recall_fscore_support(labels, preds, labels=[0, 1, 2], zero_division=0)
    for index, name in enumerate(CLASSES):
        assert got[f"precision/{name}"] == pytest.approx(precision[index])
        assert got[f"recall/{name}"] == pytest.approx(recall[index])
    assert got["roc_auc_macro"] == pytest.approx(skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    assert got["roc_auc_weighted"] == pytest.approx(skm.roc_auc_score(labels, probs, multi_class="ovr", average="weighted"))
    per_class_ap = [skm.average_precision_score(labels == c, probs[:, c]) for c in range(3)]
    assert got["auprc_macro"] == pytest.approx(np.mean(per_class_ap))
    assert got["auprc_weighted"] == pytest.approx(np.average(per_class_ap, weights=support))
    assert got["brier"] == pytest.approx(np.mean([np.sum((probs[i] - np.eye(3)[labels[i]]) ** 2) for i in range(len(labels))]))
    assert set(got) >= {"ece_15", "brier"}


def test_macro_f1_and_balanced_accuracy_follow_sklearn_when_a_class_is_never_predicted():
    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    probs = np.eye(3)[[0, 0, 0, 2, 2, 2, 2]] * 0.8 + 0.2 / 3
    got = classification_metrics(labels, probs, CLASSES)
    preds = probs.argmax(axis=1)
    assert got["macro_f1"] == pytest.approx(skm.f1_score(labels, preds, average="macro", zero_division=0))
    assert got["balanced_acc"] == pytest.approx(skm.balanced_accuracy_score(labels, preds))
    assert got["precision/irregular"] == 0.0 and got["recall/irregular"] == 0.0


def test_confusion_matrix_matches_sklearn_rows_true_columns_predicted():
    labels, probs = random_predictions(3)
    preds = probs.argmax(axis=1)
    np.testing.assert_array_equal(confusion_matrix(labels, preds, 3), skm.confusion_matrix(labels, preds, labels=[0, 1, 2]))
    assert confusion_matrix(np.array([0, 0]), np.array([2, 2]), 3)[0, 2] == 2


def test_auc_keys_are_nan_when_a_class_is_absent():
    labels = np.array([0, 2, 2, 0, 2])
    probs = softmax(np.random.default_rng(0).normal(size=(5, 3)), axis=1)
    got = classification_metrics(labels, probs, CLASSES)
    for key in ("roc_auc_macro", "roc_auc_weighted", "auprc_macro", "auprc_weighted"):
        assert np.isnan(got[key]), key
    assert not np.isnan(got["acc"])


def test_ece_by_hand_including_confidence_one():
    # 4 bins of width 0.25. conf = 1.0 must land in the last bin [0.75, 1.0].
    probs = np.array([[1.0, 0.0], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 0, 1])  # correct, wrong, correct, correct
    # bin [0.5, 0.75): conf 0.6, 0.7 -> acc 1, conf 0.65; bin [0.75, 1]: conf 1.0, 0.8 -> acc 0.5, conf 0.9
    expected = 2 / 4 * abs(1.0 - 0.65) + 2 / 4 * abs(0.5 - 0.9)
    assert expected_calibration_error(labels, probs, bins=4) == pytest.approx(expected)
    binned = reliability_bins(labels, probs, bins=4)
    np.testing.assert_array_equal(binned.counts, [0, 0, 2, 2])
    assert classification_metrics(labels, np.pad(probs, ((0, 0), (0, 1))), CLASSES, ece_bins=4)["ece_4"] == pytest.approx(expected)


def test_ece_is_zero_for_confident_correct_predictions():
    labels = np.array([0, 1, 2])
    assert expected_calibration_error(labels, np.eye(3), bins=15) == 0.0


def test_brier_by_hand():
    probs = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    labels = np.array([0, 0])
    # row 0: 0.25 + 0.25 = 0.5; row 1: 1 + 0 + 1 = 2
    assert brier_score(labels, probs) == pytest.approx(1.25)


def test_majority_baseline_uses_training_counts():
    labels = np.array([2] * 78 + [0] * 14 + [1] * 8)
    got = majority_baseline([22, 6, 71], labels, CLASSES)
    assert got["class"] == "spiral"
    assert got["acc"] == pytest.approx(0.78)
    spiral_f1 = 2 * 0.78 / (1 + 0.78)
    assert got["macro_f1"] == pytest.approx(spiral_f1 / 3)
    assert got["balanced_acc"] == pytest.approx(1 / 3)
    assert majority_baseline([50, 6, 10], labels, CLASSES)["acc"] == pytest.approx(0.14)


def test_domain_probe_identical_distributions_are_indistinguishable():
    rng = np.random.default_rng(0)
    got = domain_probe(rng.normal(size=(1500, 16)), rng.normal(size=(1500, 16)), seed=0)
    assert got["a_distance"] < 0.2
    assert abs(got["auc"] - 0.5) < 0.06
    assert got["error"] == pytest.approx(1 - got["balanced_acc"])


def test_domain_probe_separable_domains_give_a_distance_two():
    rng = np.random.default_rng(1)
    got = domain_probe(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)) + 3.0)
    assert got["a_distance"] > 1.9
    assert got["auc"] > 0.99


def test_domain_probe_is_balanced_under_domain_imbalance():
    # 5:1 imbalance, same distribution: a prior-driven probe would be 83% accurate.
    rng = np.random.default_rng(2)
    got = domain_probe(rng.normal(size=(3000, 8)), rng.normal(size=(600, 8)), seed=3)
    assert got["balanced_acc"] < 0.56
    assert got["a_distance"] < 0.25


def test_class_centroid_distances_on_normalised_features():
    src = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    tgt = np.array([[0.0, 3.0], [0.0, 5.0]])
    got = class_centroid_distances(src, np.array([0, 0, 1]), tgt, np.array([0, 1]), CLASSES)
    assert got["centroid_dist/elliptical"] == pytest.approx(np.sqrt(2))
    assert got["centroid_dist/irregular"] == pytest.approx(0.0)
    assert np.isnan(got["centroid_dist/spiral"])
    assert got["centroid_dist/mean"] == pytest.approx(np.sqrt(2) / 2)


def test_sinkhorn_divergence_grows_with_the_shift():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(200, 8)) + 2.0
    same = sinkhorn_divergence(base, base + 0.01 * rng.normal(size=base.shape))
    shifted = sinkhorn_divergence(base, rng.normal(size=(200, 8)) - 2.0)
    assert abs(same) < 1e-2
    assert shifted > 0.5
