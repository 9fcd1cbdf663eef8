r"""Label-free estimates of the target class priors :math:`q(y)` (label shift: :math:`p(x|y)` fixed, :math:`p(y)` changes).

Every entry of :data:`~galaxy_da.registries.PRIOR_ESTIMATORS` (the values of
``align.label_shift`` other than ``none``) is called as
``estimate(source_probs, source_labels, target_probs) -> q`` with the model's
softmax outputs on the labelled source validation split, ``source_probs``
(n, K) and ``source_labels`` (n,) int, and on the *unlabelled* target split,
``target_probs`` (m, K); it returns ``q`` (K,) float64, non-negative, summing
to 1. No target label is an input.

- ``bbse``: black-box shift estimation (Lipton, Wang and Smola, ICML 2018), from
  hard predictions; consistent whenever the source confusion matrix is
  invertible, whatever the classifier's calibration.
- ``em``: the EM re-weighting of posteriors (Saerens, Latinne and Decaestecker,
  Neural Computation 2002), after correcting the posteriors to the source's
  label frequencies (:func:`prior_correction`); the maximum-likelihood prior
  when the posteriors are calibrated up to their prior.
- ``em_bcts``: the same EM after bias-corrected temperature scaling fitted on the
  labelled source split (:func:`bcts_calibration`; Alexandari, Kundaje and
  Shrikumar, ICML 2020): it corrects over- or under-confidence as well as the
  prior, which EM's likelihood is sensitive to and BBSE's hard predictions are not.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax


def normalise(weights: np.ndarray) -> np.ndarray:
    """Clip at 0 and rescale to sum 1; all-zero weights become uniform (K,) -> (K,)."""
    clipped = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    total = clipped.sum()
    return clipped / total if total > 0 else np.full(clipped.shape, 1.0 / clipped.size)


def split_frequencies(labels: np.ndarray, classes: int) -> np.ndarray:
    """The labelled split's class frequencies :math:`p` (K,) from its labels (n,)."""
    return np.bincount(np.asarray(labels), minlength=classes) / len(labels)


def joint_confusion(predicted: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    r""":math:`C_{ij} = \hat P_s(\hat y = i,\, y = j)`, the joint frequency on the source split. Shapes (n,), (n,) -> (K, K)."""
    counts = np.zeros((classes, classes))
    np.add.at(counts, (predicted, labels), 1.0)
    return counts / len(labels)


def bbse_from_confusion(confusion: np.ndarray, target_predicted: np.ndarray) -> np.ndarray:
    r"""BBSE's prior from the source joint confusion :math:`C` (K, K) and the target's predicted-label distribution :math:`\hat\mu` (K,).

    Under label shift :math:`\mu_i = P_t(\hat y = i) = \sum_j P_s(\hat y = i | y = j)\, q_j
    = \sum_j C_{ij}\, w_j` with :math:`w_j = q_j / p_j` and :math:`p_j = \sum_i C_{ij}`
    the source priors. So :math:`\hat w` solves :math:`C \hat w = \hat\mu` (least
    squares: the minimum-norm solution when :math:`C` is singular, e.g. a class the
    source split lacks), and :math:`\hat q = \mathrm{normalise}(\max(\hat w, 0) \odot p)`.
    Exact when :math:`C` and :math:`\hat\mu` are the population values.
    """
    ratios, *_ = np.linalg.lstsq(confusion, target_predicted, rcond=None)
    return normalise(np.clip(ratios, 0.0, None) * confusion.sum(axis=0))


def bbse_priors(source_probs: np.ndarray, source_labels: np.ndarray, target_probs: np.ndarray) -> np.ndarray:
    """BBSE from hard (argmax) predictions: :func:`joint_confusion` on the source split, predicted-label frequencies on the target."""
    classes = source_probs.shape[1]
    confusion = joint_confusion(source_probs.argmax(axis=1), np.asarray(source_labels), classes)
    target_predicted = np.bincount(target_probs.argmax(axis=1), minlength=classes) / len(target_probs)
    return bbse_from_confusion(confusion, target_predicted)


def em_from_posteriors(target_probs: np.ndarray, reference_prior: np.ndarray, *, max_iter: int = 1000, tol: float = 1e-10) -> np.ndarray:
    r"""Saerens' EM: the target prior that makes the re-weighted posteriors self-consistent.

    With posteriors :math:`f_k(x_i)` (m, K) computed under the prior
    :math:`\pi` (``reference_prior``, (K,)), iterate from :math:`q^{(0)} = \pi`:

    .. math:: r_{ik} = \frac{f_k(x_i)\, q_k / \pi_k}{\sum_l f_l(x_i)\, q_l / \pi_l}, \qquad
              q_k \leftarrow \frac1m \sum_i r_{ik}

    until :math:`\max_k |\Delta q_k| <` ``tol`` (or ``max_iter`` rounds). Each round
    does not decrease the target likelihood; the fixed point is its maximiser.
    """
    reference = np.clip(np.asarray(reference_prior, dtype=np.float64), np.finfo(np.float64).tiny, None)
    probs = np.asarray(target_probs, dtype=np.float64)
    prior = reference / reference.sum()
    for _ in range(max_iter):
        adjusted = probs * (prior / reference)
        updated = (adjusted / adjusted.sum(axis=1, keepdims=True)).mean(axis=0)
        converged = np.abs(updated - prior).max() < tol
        prior = updated
        if converged:
            break
    return normalise(prior)


def prior_correction(source_probs: np.ndarray, source_prior: np.ndarray, *, max_iter: int = 1000, tol: float = 1e-10) -> np.ndarray:
    r"""Class factors :math:`r` (K,) that make the posteriors' mean on the source equal its label frequencies.

    A classifier trained with re-weighted classes (the focal loss's
    ``alpha="class_weights"``, close to balanced) has posteriors
    :math:`f_k(x) \propto \pi'_k\, p(x|k)` under a prior :math:`\pi'` that is not the
    source's :math:`p`. Calibrated posteriors under :math:`p` average to :math:`p`
    over the source, so :math:`r` solves

    .. math:: \frac1n\sum_i \frac{f_k(x_i)\, r_k}{\sum_l f_l(x_i)\, r_l} = p_k

    by iterative proportional fitting (Sinkhorn scaling: :math:`r \leftarrow r \odot
    p / \text{lhs}`), so :math:`r \propto p/\pi'` when :math:`f` is calibrated up to
    its prior. Shapes: ``source_probs`` (n, K), ``source_prior`` (K,) -> (K,),
    normalised to sum 1; a class absent from the source keeps factor 0.
    """
    probs = np.asarray(source_probs, dtype=np.float64)
    target = np.asarray(source_prior, dtype=np.float64)
    factors = np.where(target > 0, 1.0, 0.0)
    for _ in range(max_iter):
        adjusted = probs * factors
        mean = (adjusted / adjusted.sum(axis=1, keepdims=True)).mean(axis=0)
        factors = factors * np.divide(target, mean, out=np.zeros_like(target), where=mean > 0)
        if np.abs(mean - target).max() < tol:
            break
    return normalise(factors)


def em_priors(source_probs: np.ndarray, source_labels: np.ndarray, target_probs: np.ndarray) -> np.ndarray:
    r"""EM on prior-corrected posteriors: :func:`em_from_posteriors` of :math:`g = \mathrm{normalise}(f \odot r)` with :math:`\pi = p`.

    :math:`p` is the source split's label frequencies and :math:`r` the
    :func:`prior_correction` that makes the posteriors those of a classifier
    trained under :math:`p`, which is what Saerens' re-weighting by :math:`q/p`
    assumes.
    """
    source_prior = split_frequencies(source_labels, source_probs.shape[1])
    factors = prior_correction(source_probs, source_prior)
    corrected = np.asarray(target_probs, dtype=np.float64) * factors
    return em_from_posteriors(corrected / corrected.sum(axis=1, keepdims=True), source_prior)


def log_posteriors(probs: np.ndarray) -> np.ndarray:
    """:math:`z = \\log f` (n, K) in float64, a zero probability clipped to the smallest positive float (finite)."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), np.finfo(np.float64).tiny, None))


def bcts_objective(params: np.ndarray, logits: np.ndarray, onehot: np.ndarray) -> tuple[float, np.ndarray]:
    r"""The mean NLL of :func:`bcts_calibration` and its gradient at ``params`` = :math:`(a, b_1, \dots, b_{K-1})` (K,).

    ``logits`` :math:`z` (n, K), ``onehot`` :math:`e_{y_i}` (n, K); :math:`b_0 = 0`. The gradient is
    :math:`\frac1n \sum_i (s_i - e_{y_i}) \cdot (z_i, 1)` with :math:`s_i = \mathrm{softmax}(a z_i + b)`.
    """
    bias = np.concatenate([[0.0], params[1:]])
    log_probs = log_softmax(params[0] * logits + bias, axis=1)
    residual = (np.exp(log_probs) - onehot) / len(logits)  # (n, K): d loss / d calibrated logits
    gradient = np.concatenate([[np.sum(residual * logits)], residual.sum(axis=0)[1:]])
    return float(-np.sum(log_probs * onehot) / len(logits)), gradient


def bcts_calibration(source_probs: np.ndarray, source_labels: np.ndarray) -> tuple[float, np.ndarray]:
    r"""Bias-corrected temperature scaling: ``(a, b)`` with calibrated posteriors :math:`\mathrm{softmax}(a \log f(x) + b)`.

    Fitted on the labelled source split, ``source_probs`` (n, K) and ``source_labels`` (n,), by minimising the mean
    negative log-likelihood :math:`\frac1n \sum_i [\log\sum_k e^{a z_{ik} + b_k} - a z_{iy_i} - b_{y_i}]`,
    :math:`z = \log f` (:func:`bcts_objective`). It is convex in :math:`(a, b)` (the logits are linear in them), so
    L-BFGS-B finds the optimum. ``b_0 = 0`` (softmax ignores a common shift); ``a = 1/T`` is kept in [1e-3, 1e3] and
    each :math:`b_k` in [-50, 50], so a class absent from the split gets a large negative bias, not an infinite one.
    Returns ``a`` and ``b`` (K,).
    """
    logits = log_posteriors(source_probs)
    classes = logits.shape[1]
    onehot = np.eye(classes)[np.asarray(source_labels)]
    start = np.concatenate([[1.0], np.zeros(classes - 1)])
    bounds = [(1e-3, 1e3)] + [(-50.0, 50.0)] * (classes - 1)
    fitted = minimize(bcts_objective, start, args=(logits, onehot), jac=True, method="L-BFGS-B", bounds=bounds).x
    return float(fitted[0]), np.concatenate([[0.0], fitted[1:]])


def em_bcts_priors(source_probs: np.ndarray, source_labels: np.ndarray, target_probs: np.ndarray) -> np.ndarray:
    r"""EM (:func:`em_from_posteriors`) on the target posteriors calibrated by :func:`bcts_calibration`, with :math:`\pi = p`.

    Calibrated on the source split, the posteriors are those of its label frequencies :math:`p`, the prior EM's
    re-weighting by :math:`q/p` assumes. Shapes as :func:`em_priors`.
    """
    source_prior = split_frequencies(source_labels, source_probs.shape[1])
    scale, bias = bcts_calibration(source_probs, source_labels)
    calibrated = np.exp(log_softmax(scale * log_posteriors(target_probs) + bias, axis=1))
    return em_from_posteriors(calibrated, source_prior)
