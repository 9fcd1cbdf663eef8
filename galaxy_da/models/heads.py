"""What sits on top of an encoder: the MLP classifier head and the encoder + head pair.

Every backbone in :mod:`galaxy_da.models.registry` is an encoder ``x -> f`` wrapped
in :class:`EncoderClassifier`, so all models share one forward contract::

    logits, features = model(x)   # x: (B, C, H, W) -> (B, K), (B, D)

``features`` is what the alignment losses act on; ``model.feature_dim == D``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class ClassifierHead(nn.Module):
    """MLP from features to class logits, optionally times trainable per-class scales.

    With hidden sizes ``(h_1, ..., h_L)``::

        MLP(f) = Linear(h_L -> K) o ReLU o Linear(h_{L-1} -> h_L) o ... o Dropout(p) o ReLU o Linear(D -> h_1)
        logits = s * MLP(f)

    Dropout sits after the first hidden layer only. ``s`` in R^K is a trainable
    parameter initialised to ones when ``class_scales`` is true (the reference's
    per-class logit scales, without its rarest-class-gets-1 initialisation);
    otherwise ``s = 1`` and there is no parameter.

    Shapes: ``f`` (B, D) -> ``logits`` (B, K).
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        num_classes: int,
        dropout: float,
        class_scales: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for index, size in enumerate(hidden):
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]
            if index == 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.mlp = nn.Sequential(*layers)
        self.class_scales = nn.Parameter(torch.ones(num_classes)) if class_scales else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.mlp(features)
        return logits if self.class_scales is None else logits * self.class_scales


class EncoderClassifier(nn.Module):
    """``x -> (head(encoder(x)), encoder(x))``.

    Shapes: ``x`` (B, C, H, W) -> ``logits`` (B, K), ``features`` (B, D) with
    ``D = encoder.feature_dim``. Parameters are named ``encoder.*`` and ``head.*``.
    """

    def __init__(self, encoder: nn.Module, head: ClassifierHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.feature_dim: int = encoder.feature_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(x)
        return self.head(features), features
