"""Estimated against true target priors: evaluation metrics only (they read target test labels).

``eval/tgt_test/prior/<class>`` are the target test split's label frequencies;
``eval/label_shift/<estimator>/prior/<class>`` each estimator's label-free
:math:`\\hat q` for the evaluated checkpoint (source val and unlabelled target
adapt predictions, as in training), and ``eval/label_shift/<estimator>/max_abs_error``
:math:`\\max_y |\\hat q_y - q_y|`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from galaxy_da.registries import PRIOR_ESTIMATORS
from galaxy_da.selection import Predictions


def prior_metrics(predictions: dict[str, Predictions], class_names: Sequence[str]) -> dict[str, float]:
    """Reads ``src_val`` and ``tgt_adapt`` for the estimates, ``tgt_test`` labels for the truth."""
    classes = len(class_names)
    truth = np.bincount(predictions["tgt_test"].labels, minlength=classes) / len(predictions["tgt_test"].labels)
    metrics = {f"eval/tgt_test/prior/{name}": float(q) for name, q in zip(class_names, truth)}
    source, target = predictions["src_val"], predictions["tgt_adapt"]
    for estimator in PRIOR_ESTIMATORS:
        estimate = PRIOR_ESTIMATORS[estimator](source.probs, source.labels, target.probs)
        metrics |= {f"eval/label_shift/{estimator}/prior/{name}": float(q) for name, q in zip(class_names, estimate)}
        metrics[f"eval/label_shift/{estimator}/max_abs_error"] = float(np.abs(estimate - truth).max())
    return metrics
