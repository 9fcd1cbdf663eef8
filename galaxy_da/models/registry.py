"""Backbone registry: ``model.backbone`` -> encoder builder, and :func:`build_model`.

Each entry builds an encoder ``x (B, C, H, W) -> features (B, D)`` from
``(model_cfg, in_channels, image_size)``; the encoder states ``feature_dim = D``
and ``head_hidden``, the hidden sizes of its classifier head. :func:`build_model`
puts the head on top, so every model returns ``(logits (B, K), features (B, D))``.

The names live in :data:`galaxy_da.registries.BACKBONES`, which imports a
builder's module only when it is looked up (config validation reads the names
without importing torch); the steerable builder imports e2cnn when it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from galaxy_da.models.heads import ClassifierHead, EncoderClassifier
from galaxy_da.registries import BACKBONES

if TYPE_CHECKING:
    from galaxy_da.config import ModelConfig

__all__ = ["BACKBONES", "build_model"]


def build_model(model_cfg: ModelConfig, num_classes: int, in_channels: int, image_size: int) -> EncoderClassifier:
    """The ``model.backbone`` encoder with its MLP head (dropout ``model.dropout``,
    per-class logit scales when ``model.class_scales``).

    ``model(x)`` maps ``x`` (B, in_channels, H, W) to ``(logits (B, num_classes), features (B, D))``
    and ``model.feature_dim == D``.
    """
    encoder = BACKBONES[model_cfg.backbone](model_cfg, in_channels, image_size)
    head = ClassifierHead(
        encoder.feature_dim, encoder.head_hidden, num_classes, model_cfg.dropout, model_cfg.class_scales
    )
    return EncoderClassifier(encoder, head)
