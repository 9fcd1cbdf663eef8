"""Losses: focal classification loss, feature alignment, entropy and task weighting."""

from galaxy_da.losses.adversarial import DANNLoss, DomainDiscriminator, GradientReversal
from galaxy_da.losses.alignment import ALIGNMENT_METHODS
from galaxy_da.losses.entropy import prediction_entropy
from galaxy_da.losses.focal import FocalLoss, build_classification_loss, class_weights
from galaxy_da.losses.topk_ot import TopKOTLoss, topk_ot_loss
from galaxy_da.losses.weighting import UncertaintyWeights

__all__ = [
    "ALIGNMENT_METHODS",
    "DANNLoss",
    "DomainDiscriminator",
    "FocalLoss",
    "GradientReversal",
    "TopKOTLoss",
    "UncertaintyWeights",
    "build_classification_loss",
    "class_weights",
    "prediction_entropy",
    "topk_ot_loss",
]
