"""The forward half of a training step, as one module: what ``DistributedDataParallel`` wraps.

Holding the model and the objective (with its discriminator and loss weights)
in one module gives data parallelism a single set of parameters to average,
and gives the trainer one call for one or many workers.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Optional

import torch
from torch import nn

from galaxy_da.distributed import World
from galaxy_da.objective import Objective, StepKnobs


class TrainingStep(nn.Module):
    """``(source images, source labels, target images or None, knobs) -> loss components``.

    The two domains go through the model as one batch (BatchNorm sees both, as
    in the reference), under ``precision`` (an autocast context factory). The
    classification and entropy terms read this worker's slice; the alignment
    terms read the features of the *global* batch, gathered from every worker
    with their gradient (:meth:`World.gather`), so they compare the two domains
    over all ``W x B`` samples and are the same on every worker (with label-shift
    weighting the source labels are gathered too, to weigh those samples).

    Shapes: images (B, C, H, W) and (B_t, C, H, W), labels (B,) -> a dict of
    scalars (``cls``, ``align``, ``entropy``, ``topk_ot``, ``total``); see
    :class:`~galaxy_da.objective.Objective`.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        world: World,
        forward: Optional[Callable[[torch.Tensor], Any]] = None,
        precision: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> None:
        super().__init__()
        self.model, self.objective, self.world = model, objective, world
        self.run_model = forward or model.__call__  # the model, or its compiled form (same parameters); not a second submodule
        self.precision = precision

    def forward(
        self, source_images: torch.Tensor, source_labels: torch.Tensor, target_images: Optional[torch.Tensor], knobs: StepKnobs
    ) -> dict[str, torch.Tensor]:
        n = source_images.shape[0]
        images = source_images if target_images is None else torch.cat([source_images, target_images])
        with self.precision():
            logits, features = self.run_model(images)
        if target_images is None:
            return self.objective(logits, source_labels, features, None, None, knobs)
        source_features, target_features = self.world.gather(features[:n]), self.world.gather(features[n:])
        feature_labels = self.world.gather(source_labels) if self.objective.weighs_classes else None
        return self.objective(logits[:n], source_labels, source_features, logits[n:], target_features, knobs, feature_labels)
