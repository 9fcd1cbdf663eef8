"""Our own ResNet-18 encoder, state_dict-compatible with torchvision's ``resnet18``.

torchvision does not import next to the CPU torch pinned here, so the network is
written out; its module names are torchvision's, so a torchvision checkpoint file
(``torch.save(torchvision.models.resnet18(weights=...).state_dict(), path)``)
loads into it unchanged, minus the ``fc.*`` classifier keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch
from torch import nn

if TYPE_CHECKING:
    from galaxy_da.config import ModelConfig

STAGES = ("layer1", "layer2", "layer3", "layer4")
STAGE_CHANNELS = (64, 128, 256, 512)
TORCHVISION_HEAD_PREFIX = "fc."
BN_STEP_COUNTER = "num_batches_tracked"  # absent from checkpoints saved by old PyTorch versions


class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock``: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    ``shortcut`` is the identity, or ``downsample = Sequential(Conv1x1(stride), BN)``
    when the stride or the channel count changes. Shapes: (B, C_in, H, W) ->
    (B, C_out, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: Optional[nn.Sequential] = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + shortcut)


class ResNet18Encoder(nn.Module):
    """ResNet-18 without its ``fc``: stem, four stages of two basic blocks, global average pool.

    ``conv1 (7x7, s2) -> bn1 -> relu -> maxpool (3x3, s2) -> layer1..layer4 (64, 128, 256, 512
    channels; stride 1, 2, 2, 2) -> mean over (H, W)``

    Shapes: ``x`` (B, C, H, W) -> ``features`` (B, 512), non-negative. The stem is
    torchvision's (kept for key compatibility); a 64 px input reaches layer4 at 2x2.

    Partial fine-tuning: when ``pretrained_path`` is given, only the last
    ``trainable_stages`` of layer1..layer4 train; the stem and the earlier stages
    get ``requires_grad = False`` *and* their BatchNorm layers stay in eval mode
    through :meth:`train`, so their running statistics are the pretrained ones
    (the reference let them drift). A randomly initialised encoder trains
    entirely: freezing random weights would only cripple it.
    """

    head_hidden = (256,)  # the reference's head: 512 -> 256 -> K
    feature_dim = STAGE_CHANNELS[-1]

    def __init__(
        self,
        in_channels: int = 3,
        trainable_stages: int = len(STAGES),
        pretrained_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= trainable_stages <= len(STAGES):
            raise ValueError(f"model.trainable_stages must be in 0..{len(STAGES)}, got {trainable_stages}")
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_width = 64
        for index, (name, width) in enumerate(zip(STAGES, STAGE_CHANNELS)):
            stride = 1 if index == 0 else 2
            self.add_module(name, nn.Sequential(BasicBlock(in_width, width, stride), BasicBlock(width, width, 1)))
            in_width = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self._init_like_torchvision()
        self.frozen: tuple[str, ...] = ()
        if pretrained_path is not None:
            self.load_torchvision_checkpoint(pretrained_path)
            self.frozen = ("conv1", "bn1") + STAGES[: len(STAGES) - trainable_stages]
            for name in self.frozen:
                getattr(self, name).requires_grad_(False)
            self.train(self.training)

    def _init_like_torchvision(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def load_torchvision_checkpoint(self, path: str | Path) -> None:
        """Load a torchvision-format resnet18 ``state_dict`` file, ignoring its ``fc.*`` keys.

        BatchNorm ``num_batches_tracked`` counters may be absent (old torchvision
        files lack them; they only matter when BN momentum is None) and then keep
        their current value. Raises ``ValueError`` naming the file and every other
        missing or unexpected key, or the key whose shape differs.
        """
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {key: value for key, value in state.items() if not key.startswith(TORCHVISION_HEAD_PREFIX)}
        expected = self.state_dict()
        for key in expected:
            if key.endswith(BN_STEP_COUNTER):
                state.setdefault(key, expected[key])
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"{path}: not a torchvision resnet18 state_dict (model.pretrained_path); "
                f"missing keys {missing}, unexpected keys {unexpected}"
            )
        for key, value in state.items():
            if value.shape != expected[key].shape:
                raise ValueError(
                    f"{path}: key {key!r} has shape {tuple(value.shape)}, the encoder expects "
                    f"{tuple(expected[key].shape)} (model.pretrained_path)"
                )
        self.load_state_dict(state)

    def train(self, mode: bool = True) -> "ResNet18Encoder":
        """Set the mode, but keep the frozen parts (and their BatchNorm statistics) in eval mode."""
        super().train(mode)
        for name in self.frozen:
            getattr(self, name).eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in STAGES:
            x = getattr(self, name)(x)
        return torch.flatten(self.avgpool(x), 1)


def build_resnet18(model_cfg: ModelConfig, in_channels: int, image_size: int) -> ResNet18Encoder:
    """Any image size works (the pool is adaptive); 64 px ends at 2x2 before pooling."""
    return ResNet18Encoder(in_channels, model_cfg.trainable_stages, model_cfg.pretrained_path)
