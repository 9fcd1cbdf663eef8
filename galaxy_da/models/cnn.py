"""The reference's plain CNN encoder, with global average pooling instead of flattening."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from galaxy_da.config import ModelConfig


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """Conv3x3 (padding 1, no bias: BN follows) -> BatchNorm -> ReLU; keeps H and W."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class PlainCNN(nn.Module):
    """Two conv stages and a global average pool.

    ``[Conv3x3-BN-ReLU] x2 (c) -> MaxPool2 -> [Conv3x3-BN-ReLU] x2 (2c) -> MaxPool2 -> mean over (H, W)``

    Shapes: ``x`` (B, C, H, W) -> ``features`` (B, 2c), with H, W >= 4.

    Deliberate change from the reference: it flattened the last feature map into
    ``2c * (H/4) * (W/4)`` features (131072 at 64 px), which tied the feature
    space to the image size and gave the alignment losses a huge, sparse space.
    Global average pooling makes the features ``2c``-dimensional (non-negative,
    after the ReLU) and size-independent.
    """

    head_hidden = (256, 128)  # the reference's head: D -> 256 -> 128 -> K

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(in_channels, channels),
            conv_bn_relu(channels, channels),
            nn.MaxPool2d(2),
            conv_bn_relu(channels, 2 * channels),
            conv_bn_relu(2 * channels, 2 * channels),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.feature_dim = 2 * channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def build_cnn(model_cfg: ModelConfig, in_channels: int, image_size: int) -> PlainCNN:
    """``c = 4 * model.width`` (64 at the default width 16); any image size >= 4 works."""
    return PlainCNN(in_channels, channels=4 * model_cfg.width)
