"""The trainer's per-epoch refresh of the target-prior estimate, and what it logs.

At the start of every aligning epoch (:attr:`~galaxy_da.objective.StepKnobs.aligning`)
the current model predicts the labelled source validation split and the
*unlabelled* target adapt split (the :class:`~galaxy_da.trial_data.TrialData`
holds no target label), the ``align.label_shift`` estimator turns those
predictions into :math:`\\hat q`, and the objective weighs the source by a
moving average of :math:`\\hat q / p` (:func:`prior_record`), :math:`p` the source
training label frequencies.
The true target priors never enter training: they are an evaluation metric
(:mod:`galaxy_da.label_shift.evaluation`).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from galaxy_da.inference import predict
from galaxy_da.label_shift.weights import class_ratios, label_frequencies
from galaxy_da.registries import PRIOR_ESTIMATORS

if TYPE_CHECKING:
    from galaxy_da.config import TrialConfig
    from galaxy_da.trial_data import TrialData


def estimate_target_priors(
    cfg: TrialConfig, model: torch.nn.Module, data: TrialData, device: torch.device, layout: torch.memory_format = torch.contiguous_format
) -> np.ndarray:
    """:math:`\\hat q` (K,) by ``cfg.align.label_shift`` from eval-mode predictions on source val and target adapt."""
    run = functools.partial(predict, batch_size=cfg.data.eval_batch_size, device=device, precision=cfg.compute.precision, memory_format=layout)
    source = run(model, data.source_val, data.source_stats)
    target = run(model, data.target_adapt, data.target_stats)
    return PRIOR_ESTIMATORS[cfg.align.label_shift](source.probs, source.labels, target.probs)


def prior_record(
    target_priors: np.ndarray, train_counts: Sequence[int], class_names: Sequence[str], previous_ratios: np.ndarray, momentum: float
) -> tuple[np.ndarray, dict[str, float]]:
    r"""The class ratios applied this epoch (K,) and the epoch's ``label_shift/prior/<class>`` and ``label_shift/weight/<class>``.

    :math:`w_t = m\, w_{t-1} + (1 - m)\, \hat q_t / p` with :math:`w_0 = 1` (the
    objective's buffer, checkpointed with it) and :math:`m` = ``align.ratio_momentum``:
    the moving average of IWDAN's reference code (Tachet des Combes et al., 2020,
    ``ma = 0.5``). The first estimate comes from the warm-up's source-only model,
    which under a covariate shift can call most of the target one class; applied
    alone, such an estimate pulls the alignment towards that very error. Both terms
    satisfy :math:`\sum_y p_y w_y = 1`, so the average does too. ``prior`` logs the
    epoch's estimate :math:`\hat q_t`; ``weight`` the ratios applied.
    """
    estimated = class_ratios(target_priors, label_frequencies(train_counts))
    ratios = momentum * np.asarray(previous_ratios, dtype=np.float64) + (1.0 - momentum) * estimated
    record = {f"label_shift/prior/{name}": float(q) for name, q in zip(class_names, target_priors)}
    record |= {f"label_shift/weight/{name}": float(w) for name, w in zip(class_names, ratios)}
    return ratios, record
