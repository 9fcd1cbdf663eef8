"""Label-free checkpoint selection: a registry of rules, HIGHER IS BETTER for all.

A rule maps :class:`SelectionInputs` (one checkpoint's predictions on the
labelled source-val split and the *unlabelled* target adapt split) to one float.
:data:`SELECTION_RULES` holds the rules that never read a target label; its keys
equal :data:`galaxy_da.config.LABEL_FREE_RULES`. The ``oracle`` rule reads target
test labels, lives apart in :data:`ORACLE_RULES`, and is for analysis only (how
well does a label-free rule track the truth?), never for selection.

Notation: ``p_i = softmax(z_i)`` (K,) for logits ``z_i``; ``H(p) = -sum_c p_c log p_c``
in nats; ``y_i`` a source-val label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np
from scipy.special import log_softmax, softmax
from sklearn.model_selection import StratifiedKFold, cross_val_score

from galaxy_da.domain_metrics import domain_classifier, l2_normalise, subsample
from galaxy_da.metrics import macro_f1

ORACLE = "oracle"


@dataclass
class Predictions:
    """One model's outputs on one split: ``logits`` (N, K), ``features`` (N, D), ``labels`` (N,) or None."""

    logits: np.ndarray
    features: np.ndarray
    labels: Optional[np.ndarray] = None

    @property
    def probs(self) -> np.ndarray:
        """``softmax(logits)`` along the classes, (N, K)."""
        return softmax(np.asarray(self.logits, dtype=np.float64), axis=1)

    def macro_f1(self) -> float:
        """Macro-F1 of ``argmax logits`` against ``labels``."""
        return macro_f1(self.labels, np.argmax(self.logits, axis=1), self.logits.shape[1])


@dataclass
class SelectionInputs:
    """What a selection rule may see for one checkpoint.

    ``source_val``: labelled source validation split. ``target``: the target adapt
    split, ``labels`` None. Either may be None when the rule does not read it
    (:data:`RULE_READS`). ``target_test``: labelled target test split, read ONLY
    by the oracle; leave it None wherever a checkpoint is being selected.
    """

    source_val: Optional[Predictions]
    target: Optional[Predictions]
    target_test: Optional[Predictions] = None


def _require_labels(predictions: Optional[Predictions], split: str, rule: str) -> Predictions:
    if predictions is None or predictions.labels is None:
        raise ValueError(f"selection rule {rule!r} needs labels on {split}, which it was not given")
    return predictions


def src_val_macro_f1(inputs: SelectionInputs) -> float:
    """Source-validation macro-F1 ``(1/K) sum_c F1_c`` of ``argmax_c z_ic`` on ``source_val``.

    Reads only source labels. Blind to the domain shift: a model can score well
    here and predict one class on the target.
    """
    return _require_labels(inputs.source_val, "source_val", "src_val").macro_f1()


def information_maximisation(inputs: SelectionInputs) -> float:
    """Mutual information between input and prediction on the target (Shi & Sha 2012; SHOT).

    ``IM = H(p_bar) - (1/N) sum_i H(p_i)`` with ``p_bar = (1/N) sum_i p_i``, over
    the target adapt split (N, K). In [0, log K]: confident predictions (low
    per-sample entropy) that use every class (high marginal entropy) score high;
    uniform predictions score 0, and so does a model that predicts one class for
    every target galaxy however confidently.
    """
    probs = inputs.target.probs
    log_probs = log_softmax(np.asarray(inputs.target.logits, dtype=np.float64), axis=1)
    mean_entropy = -np.mean(np.sum(probs * log_probs, axis=1))
    marginal = probs.mean(axis=0)
    marginal_entropy = -np.sum(marginal * np.log(np.clip(marginal, 1e-300, None)))
    return float(marginal_entropy - mean_entropy)


DENSITY_RATIO_CS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def calibrated_regularisation(features: np.ndarray, domains: np.ndarray, seed: int = 0) -> float:
    """The C in :data:`DENSITY_RATIO_CS` with the best 3-fold cross-validated log-loss.

    Importance weights need *calibrated* probabilities, not just a good ranking:
    with C = 1 on 512-d features the classifier is overconfident and the weights
    span 1e-7..1e5. Shapes: ``features`` (N, D), ``domains`` (N,) in {0, 1}.
    """
    splitter = StratifiedKFold(n_splits=3, shuffle=True, random_state=seed)
    log_loss = {
        C: -cross_val_score(domain_classifier(C), features, domains, cv=splitter, scoring="neg_log_loss").mean()
        for C in DENSITY_RATIO_CS
    }
    return min(log_loss, key=log_loss.get)


def density_ratio(source: np.ndarray, target: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Importance weights ``w(x) = p(t|x) / p(s|x) * n_s / n_t`` for each source row.

    ``p(t|x)`` comes from a :func:`~galaxy_da.domain_metrics.domain_classifier`
    trained on source-vs-target features, its C chosen by
    :func:`calibrated_regularisation`, with ``folds``-fold cross-fitting: a row's
    probability is predicted by the model fitted on the other folds, so no row
    weights itself. ``n_s / n_t`` undoes the domain prior of the classifier.
    ``p(t|x)`` is clipped to [1e-6, 1 - 1e-6]. Shapes: ``source`` (n_s, D),
    ``target`` (n_t, D) -> (n_s,) finite, positive; ``E_s[w] = 1`` in expectation.
    """
    features = np.concatenate([np.asarray(source), np.asarray(target)])
    domains = np.repeat([0, 1], [len(source), len(target)])
    C = calibrated_regularisation(features, domains, seed)
    p_target = np.empty(len(features))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_rows, held_rows in splitter.split(features, domains):
        classifier = domain_classifier(C).fit(features[fit_rows], domains[fit_rows])
        p_target[held_rows] = classifier.predict_proba(features[held_rows])[:, 1]
    p_target = np.clip(p_target[: len(source)], 1e-6, 1 - 1e-6)
    return p_target / (1 - p_target) * len(source) / len(target)


def deep_embedded_validation(inputs: SelectionInputs) -> float:
    """Deep Embedded Validation (You et al. 2019): ``-DEV``, an estimate of minus the target risk.

    On source-val, with per-sample cross-entropy ``l_i = -log p_{i, y_i}`` and
    importance weights ``w_i`` from :func:`density_ratio` (source-val vs target
    features), the control-variate estimate of the target risk is

    ``DEV = mean(w l) + eta mean(w) - eta``, ``eta = -Cov(w l, w) / Var(w)``

    (``eta = 0`` when all weights are equal). ``E[w] = 1``, so the control
    variate reduces the variance without adding bias. Returns ``-DEV``.
    Reads source labels only. Cost: 20 small logistic fits, about 1 s for
    645 + 2055 rows of 512-d features on one core.
    """
    source_val = _require_labels(inputs.source_val, "source_val", "dev")
    weights = density_ratio(source_val.features, inputs.target.features)
    log_probs = log_softmax(np.asarray(source_val.logits, dtype=np.float64), axis=1)
    weighted_loss = weights * -log_probs[np.arange(len(weights)), np.asarray(source_val.labels)]
    weight_variance = np.var(weights, ddof=1)
    eta = 0.0 if weight_variance == 0 else -np.cov(weighted_loss, weights)[0, 1] / weight_variance
    return float(-(weighted_loss.mean() + eta * weights.mean() - eta))


SND_TEMPERATURE = 0.05
SND_MAX_POINTS = 2000


def soft_neighbourhood_density(inputs: SelectionInputs) -> float:
    """Soft Neighbourhood Density (Saito et al. 2021) of the target softmax vectors.

    With ``f_i = p_i / ||p_i||_2`` (N, K) and cosine similarities ``s_ij = f_i . f_j``
    (N, N) with the diagonal excluded, ``P_ij = softmax_j(s_ij / tau)``,
    ``tau = 0.05``, and ``SND = (1/N) sum_i H(P_i)``: high when every target
    galaxy has many close neighbours, i.e. the predictions form dense clusters.
    At most 2000 target rows are used (seeded subsample, the same rows for every
    checkpoint). Known caveat: identical predictions for every galaxy
    give the maximum ``log(N - 1)``; read SND next to ``entropy``.
    """
    rng = np.random.default_rng(0)
    normalised = l2_normalise(subsample(inputs.target.probs, SND_MAX_POINTS, rng))
    similarity = normalised @ normalised.T / SND_TEMPERATURE
    np.fill_diagonal(similarity, -np.inf)
    log_neighbours = log_softmax(similarity, axis=1)
    neighbours = np.exp(log_neighbours)
    np.fill_diagonal(log_neighbours, 0.0)  # P_ii = 0 contributes 0, not 0 * -inf
    entropy = -np.sum(neighbours * log_neighbours, axis=1)
    return float(entropy.mean())


def oracle_target_macro_f1(inputs: SelectionInputs) -> float:
    """ORACLE, analysis only: macro-F1 on the *labelled target test split*.

    Reads target labels, so it can never select a checkpoint or a trial; it
    measures how well the label-free rules track the truth.
    """
    return _require_labels(inputs.target_test, "target_test (the oracle reads target test labels)", ORACLE).macro_f1()


SelectionRule = Callable[[SelectionInputs], float]

SELECTION_RULES: dict[str, SelectionRule] = {
    "src_val": src_val_macro_f1,
    "entropy": information_maximisation,
    "dev": deep_embedded_validation,
    "snd": soft_neighbourhood_density,
}

# Which splits each rule reads: training predicts only those (a src_val-selected trial
# never runs a forward pass over the target adapt split just to score itself).
RULE_READS: dict[str, frozenset[str]] = {
    "src_val": frozenset({"source_val"}),
    "entropy": frozenset({"target"}),
    "dev": frozenset({"source_val", "target"}),
    "snd": frozenset({"target"}),
}

ORACLE_RULES: dict[str, SelectionRule] = {ORACLE: oracle_target_macro_f1}


def splits_read(rules: Iterable[str]) -> frozenset[str]:
    """The splits that scoring ``rules`` needs predicted: the union of their :data:`RULE_READS`."""
    return frozenset().union(*(RULE_READS[rule] for rule in rules))


def score(rule: str, inputs: SelectionInputs) -> float:
    """Score one checkpoint with a label-free rule from :data:`SELECTION_RULES`; higher is better."""
    if rule in ORACLE_RULES:
        raise ValueError(f"{rule!r} reads target test labels and cannot select; call ORACLE_RULES[{rule!r}] for analysis")
    if rule not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule {rule!r}; choose from {sorted(SELECTION_RULES)}")
    return SELECTION_RULES[rule](inputs)
