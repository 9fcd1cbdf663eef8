"""Backbones: ``build_model(model_cfg, num_classes, in_channels, image_size)`` -> ``(logits, features)`` models."""

from galaxy_da.models.registry import BACKBONES, build_model

__all__ = ["BACKBONES", "build_model"]
