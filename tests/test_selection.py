"""Label-free selection rules on synthetic predictions: direction, hand values, oracle isolation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax

from galaxy_da.config import LABEL_FREE_RULES, ConfigError, load_config
from galaxy_da.selection import (
    ORACLE_RULES,
    SELECTION_RULES,
    Predictions,
    SelectionInputs,
    density_ratio,
    score,
    splits_read,
)

K = 3


def clustered(rng: np.random.Generator, n: int, confidence: float, labelled: bool = True, feature_shift: float = 0.0) -> Predictions:
    """Balanced classes; logits put ``confidence`` on the true class; features cluster by class."""
    labels = rng.integers(0, K, size=n)
    logits = confidence * np.eye(K)[labels] + rng.normal(size=(n, K))
    centres = np.random.default_rng(123).normal(size=(K, 8)) * 3
    features = centres[labels] + rng.normal(size=(n, 8)) + feature_shift
    return Predictions(logits, features, labels if labelled else None)


def unstructured(rng: np.random.Generator, n: int) -> Predictions:
    """Probabilities spread uniformly over the simplex (Dirichlet(1,1,1)): no clusters, no confidence."""
    probs = rng.dirichlet(np.ones(K), size=n)
    return Predictions(np.log(probs), rng.normal(size=(n, 8)), None)


def inputs_for(target: Predictions, seed: int = 0, source_confidence: float = 4.0) -> SelectionInputs:
    rng = np.random.default_rng(seed)
    return SelectionInputs(source_val=clustered(rng, 300, source_confidence), target=target)


def test_rule_names_match_the_config():
    assert tuple(SELECTION_RULES) == LABEL_FREE_RULES
    assert "oracle" not in SELECTION_RULES
    assert set(ORACLE_RULES) == {"oracle"}
    with pytest.raises(ConfigError, match="oracle"):
        load_config(overrides={"selection.rule": "oracle"})


def test_scoring_several_rules_predicts_the_union_of_their_splits_once():
    assert splits_read(["entropy", "snd"]) == {"target"}
    assert splits_read(["src_val"]) == {"source_val"}
    assert splits_read(SELECTION_RULES) == {"source_val", "target"}  # selection.audit_rules: every rule, two forward passes
    assert load_config(overrides={"selection.audit_rules": True}).selection.audit_rules
    assert not load_config().selection.audit_rules


@pytest.mark.parametrize("rule", LABEL_FREE_RULES)
def test_every_rule_returns_a_finite_float(rule):
    rng = np.random.default_rng(1)
    value = score(rule, inputs_for(clustered(rng, 400, 4.0, labelled=False, feature_shift=1.0)))
    assert isinstance(value, float) and np.isfinite(value)


def test_src_val_prefers_better_source_predictions():
    rng = np.random.default_rng(2)
    target = clustered(rng, 100, 4.0, labelled=False)
    good = score("src_val", inputs_for(target, source_confidence=5.0))
    poor = score("src_val", inputs_for(target, source_confidence=0.3))
    assert good > poor + 0.3
    assert good > 0.95


@pytest.mark.parametrize("rule", ["entropy", "snd"])
def test_confident_clustered_target_beats_an_unstructured_one(rule):
    rng = np.random.default_rng(3)
    confident = score(rule, inputs_for(clustered(rng, 600, 6.0, labelled=False)))
    diffuse = score(rule, inputs_for(unstructured(rng, 600)))
    assert confident > diffuse


def test_entropy_is_information_maximisation_with_hand_values():
    n = 90
    uniform = Predictions(np.zeros((n, K)), np.zeros((n, 2)))
    assert score("entropy", inputs_for(uniform)) == pytest.approx(0.0, abs=1e-12)
    one_hot_balanced = Predictions(60.0 * np.eye(K)[np.arange(n) % K], np.zeros((n, 2)))
    assert score("entropy", inputs_for(one_hot_balanced)) == pytest.approx(np.log(K), abs=1e-6)
    collapsed = Predictions(60.0 * np.eye(K)[np.zeros(n, dtype=int)], np.zeros((n, 2)))
    assert score("entropy", inputs_for(collapsed)) == pytest.approx(0.0, abs=1e-6)


def test_snd_of_identical_predictions_is_log_n_minus_one():
    # The documented caveat: every row's neighbours are equally similar.
    n = 50
    identical = Predictions(np.tile([2.0, 0.0, -1.0], (n, 1)), np.zeros((n, 2)))
    assert score("snd", inputs_for(identical)) == pytest.approx(np.log(n - 1))


def test_density_ratio_is_finite_positive_and_tracks_the_shift():
    rng = np.random.default_rng(4)
    source = rng.normal(size=(500, 4))
    target = rng.normal(size=(800, 4)) + np.array([1.0, 0, 0, 0])
    weights = density_ratio(source, target)
    assert weights.shape == (500,)
    assert np.all(np.isfinite(weights)) and np.all(weights > 0)
    # Source points that look like target (large x0) get larger weights.
    assert np.corrcoef(source[:, 0], np.log(weights))[0, 1] > 0.8
    same = density_ratio(rng.normal(size=(500, 4)), rng.normal(size=(800, 4)))
    assert np.median(np.abs(np.log(same))) < 0.15


def test_density_ratio_stays_calibrated_in_high_dimension():
    # 256-d, few rows, no shift: an unregularised probe is overconfident (weights 1e-6..1e5).
    rng = np.random.default_rng(8)
    weights = density_ratio(rng.normal(size=(300, 256)), rng.normal(size=(600, 256)))
    assert 0.8 < weights.mean() < 1.2
    assert weights.max() < 3.0


def covariate_shift_split(rng: np.random.Generator, n: int, shift: float) -> Predictions:
    """The model is right and confident for small x0 and wrong for large x0."""
    features = rng.normal(size=(n, 4))
    features[:, 0] += shift
    labels = rng.integers(0, K, size=n)
    logits = 0.3 * rng.normal(size=(n, K))
    logits[np.arange(n), labels] += 2.0 - 1.5 * features[:, 0]
    return Predictions(logits, features, labels)


def cross_entropy(predictions: Predictions) -> float:
    return float(-np.mean(log_softmax(predictions.logits, axis=1)[np.arange(len(predictions.labels)), predictions.labels]))


def test_dev_estimates_the_target_risk_under_covariate_shift():
    rng = np.random.default_rng(0)
    source_val = covariate_shift_split(rng, 600, shift=0.0)
    target = covariate_shift_split(rng, 1500, shift=1.0)
    dev_risk = -score("dev", SelectionInputs(source_val, Predictions(target.logits, target.features, None)))
    source_risk, target_risk = cross_entropy(source_val), cross_entropy(target)
    assert target_risk - source_risk > 0.4
    assert abs(dev_risk - target_risk) < 0.35 * (target_risk - source_risk)


def test_dev_without_shift_is_minus_the_source_loss():
    rng = np.random.default_rng(5)
    source_val = covariate_shift_split(rng, 600, shift=0.0)
    target = covariate_shift_split(rng, 600, shift=0.0)
    dev = score("dev", SelectionInputs(source_val, Predictions(target.logits, target.features, None)))
    assert dev == pytest.approx(-cross_entropy(source_val), abs=0.1)


def test_oracle_needs_labelled_target_test_and_is_not_a_selection_rule():
    rng = np.random.default_rng(6)
    inputs = inputs_for(clustered(rng, 100, 4.0, labelled=False))
    with pytest.raises(ValueError, match="target_test"):
        ORACLE_RULES["oracle"](inputs)
    with pytest.raises(ValueError, match="cannot select"):
        score("oracle", inputs)
    with pytest.raises(ValueError, match="unknown selection rule"):
        score("accuracy", inputs)
    inputs.target_test = clustered(rng, 200, 6.0)
    assert ORACLE_RULES["oracle"](inputs) > 0.95


def test_rules_needing_source_labels_say_so():
    rng = np.random.default_rng(7)
    unlabelled = clustered(rng, 50, 4.0, labelled=False)
    inputs = SelectionInputs(source_val=unlabelled, target=unlabelled)
    for rule in ("src_val", "dev"):
        with pytest.raises(ValueError, match="source_val"):
            score(rule, inputs)
