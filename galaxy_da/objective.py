r"""The per-step objective: one loss assembled from the configured pieces.

``Objective(...)(batch)`` returns the total and every named component, so all
of them are logged without extra code (the "weighter" of pytorch-adapt):

=============== ====================================================================
component       definition
=============== ====================================================================
``cls``         focal loss on the labelled source batch
``align``       ``align.method`` between source and target features (0 if none)
``entropy``     mean target prediction entropy
``topk_ot``     the OT top-k soft-matching add-on (``align.ot.weight > 0``)
``total``       fixed:     cls + w_align(e)·align + λ_ent·entropy + λ_ot·topk_ot
                trainable: Kendall(cls, align) + λ_ent·entropy + λ_ot·topk_ot
=============== ====================================================================

During warm-up epochs only ``cls`` is active and no target batch is drawn.

With ``align.label_shift`` set, the objective holds the class ratios
:math:`w_y = \hat q(y)/p(y)` (buffer ``class_ratios``, (K,), 1 until the trainer
first sets them with :meth:`Objective.set_class_ratios`) and every alignment
term (``align`` and ``topk_ot``) compares the target with the source re-weighted
by the sample masses :math:`a_i = w_{y_i}/\sum_b w_{y_b}`
(:func:`~galaxy_da.label_shift.weights.sample_masses`); the classification and
entropy terms are unchanged. Without it there is no buffer (checkpoints keep
their keys) and the losses get no masses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from galaxy_da.config import TrialConfig
from galaxy_da.label_shift.weights import sample_masses
from galaxy_da.losses.alignment import ALIGNMENT_METHODS
from galaxy_da.losses.entropy import prediction_entropy
from galaxy_da.losses.focal import build_classification_loss
from galaxy_da.losses.topk_ot import TopKOTLoss
from galaxy_da.losses.weighting import UncertaintyWeights


@dataclass(frozen=True)
class StepKnobs:
    """Scheduled scalars for the current epoch."""

    aligning: bool  # False during warm-up
    align_weight: float
    blur: float
    grl_strength: float


class Objective(nn.Module):
    def __init__(self, cfg: TrialConfig, feature_dim: int, train_counts: Sequence[int]):
        super().__init__()
        align = cfg.align
        self.classification = build_classification_loss(cfg.loss, train_counts)
        self.alignment = ALIGNMENT_METHODS[align.method](align, feature_dim)
        self.topk_ot = TopKOTLoss(align, feature_dim) if align.ot.weight > 0 and align.method != "topk_ot" else None
        self.uncertainty = UncertaintyWeights(align.eta_init) if align.weighting == "trainable" else None
        self.entropy_weight = align.entropy_weight
        self.topk_ot_weight = align.ot.weight
        self.uses_target = align.method != "none" or self.entropy_weight > 0 or self.topk_ot is not None
        self.weighs_classes = align.label_shift != "none"
        if self.weighs_classes:
            self.register_buffer("class_ratios", torch.ones(len(train_counts)))

    def set_class_ratios(self, ratios: Sequence[float]) -> None:
        """Replace :math:`w` (K,) used by the following steps (label shift only)."""
        self.class_ratios.copy_(torch.as_tensor(ratios, dtype=self.class_ratios.dtype))

    def weight_parameters(self) -> list[nn.Parameter]:
        """Loss-weight parameters (no weight decay)."""
        return list(self.uncertainty.parameters()) if self.uncertainty is not None else []

    def module_parameters(self) -> list[nn.Parameter]:
        """Other trainable parameters (the DANN discriminator)."""
        return list(self.alignment.parameters()) + list(self.classification.parameters())

    def forward(
        self,
        source_logits: torch.Tensor,
        source_labels: torch.Tensor,
        source_features: torch.Tensor,
        target_logits: Optional[torch.Tensor],
        target_features: Optional[torch.Tensor],
        knobs: StepKnobs,
        feature_labels: Optional[torch.Tensor] = None,
    ) -> dict[str, torch.Tensor]:
        """Shapes: logits (B, K), labels (B,), features (B', D); target ones (B_t, ·) or None.

        ``feature_labels`` (B',) are the labels of the rows of ``source_features``
        when those are more than this worker's batch (gathered from every worker);
        default ``source_labels``. Only label-shift weighting reads them.
        """
        cls = self.classification(source_logits.float(), source_labels)
        zero = cls.new_zeros(())
        parts = {"cls": cls, "align": zero, "entropy": zero, "topk_ot": zero}
        if not knobs.aligning or target_features is None:
            parts["total"] = cls
            return parts
        source_features, target_features = source_features.float(), target_features.float()
        labels = source_labels if feature_labels is None else feature_labels
        masses = sample_masses(self.class_ratios, labels) if self.weighs_classes else None
        options = dict(blur=knobs.blur, grl_strength=knobs.grl_strength, source_masses=masses)
        parts["align"] = self.alignment(source_features, target_features, **options)
        if self.entropy_weight > 0:
            parts["entropy"] = prediction_entropy(target_logits.float())
        if self.topk_ot is not None:
            parts["topk_ot"] = self.topk_ot(source_features, target_features, **options)
        if self.uncertainty is not None:
            total = self.uncertainty([cls, parts["align"]])
        else:
            total = cls + knobs.align_weight * parts["align"]
        parts["total"] = total + self.entropy_weight * parts["entropy"] + self.topk_ot_weight * parts["topk_ot"]
        return parts

    def diagnostics(self) -> dict[str, torch.Tensor]:
        """Per-step scalars worth logging (solver convergence, discriminator accuracy, weights), as detached device tensors."""
        found = {f"align/{k}": v for k, v in getattr(self.alignment, "diagnostics", {}).items()}
        if self.topk_ot is not None:
            found.update({f"align/topk_ot_{k}": v for k, v in self.topk_ot.diagnostics.items()})
        if self.uncertainty is not None:
            weights = self.uncertainty.weights
            found.update({"weights/cls": weights[0], "weights/align": weights[1]})
        return found

    def after_step(self) -> None:
        if self.uncertainty is not None:
            self.uncertainty.clamp_()
