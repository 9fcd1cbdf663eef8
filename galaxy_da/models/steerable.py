"""E(2)-steerable CNN encoder (e2cnn 0.2.3) whose features are exactly invariant on odd grids.

e2cnn is imported only when a model is built, so importing this module (and the
registry, which config validation imports) stays light.

Why odd grids: a stride-2 layer samples every other pixel. Rotating the image by
90 degrees about its centre maps the sampled grid onto itself only if the
sampled positions are symmetric about the centre, i.e. if the first and last
sampled pixels are the image's first and last. With kernel k and padding
(k-1)/2 that holds exactly when the input size N is odd, and the output then
has (N+1)/2 pixels: odd again only when N = 1 (mod 4). For N = 3 (mod 4) one
extra ring of zero padding shifts the sampled grid by one pixel so that it
starts and ends one pixel outside the image, still symmetric, and gives
(N+3)/2 pixels, which is odd. :func:`symmetric_padding` picks the padding per
layer at run time, so every odd input size stays odd all the way down and the
pooled features are invariant to the symmetries of the square in the group
(rot90 for C_N / D_N with 4 | N, and flips for D_N). Even inputs run too, but
are only approximately invariant (about 1% of the logits' scale at 64 px).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from galaxy_da.config import GROUP_PATTERN

if TYPE_CHECKING:
    from galaxy_da.config import ModelConfig

# Group family letter -> (e2cnn.gspaces, N) -> gspace. e2cnn wants N >= 2 for the
# rotation groups, so N = 1 gets the trivial group (C1) or the lone flip (D1).
GSPACES = {
    "C": lambda gspaces, n: gspaces.Rot2dOnR2(n) if n > 1 else gspaces.TrivialOnR2(),
    "D": lambda gspaces, n: gspaces.FlipRot2dOnR2(n) if n > 1 else gspaces.Flip2dOnR2(),
}

# (kernel size, stride, width multiplier) of each R2Conv-InnerBatchNorm-ReLU block (the reference's).
BLOCKS = ((5, 2, 1), (3, 2, 2), (3, 1, 4), (3, 1, 4))

# e2cnn's R2Conv registers these buffers in eval mode (filters expanded from the
# weights, cached) and deletes them in train mode, so they would make the
# state_dict's keys depend on the mode. They are derived data: kept out of it.
CACHED_FILTERS = ("filter", "expanded_bias")


def group_space(group: str) -> Any:
    """``"C<N>"`` -> ``gspaces.Rot2dOnR2(N)`` (rotations), ``"D<N>"`` -> ``gspaces.FlipRot2dOnR2(N)``.

    ``C1`` is the trivial group (a plain CNN in the same layout, as a control)
    and ``D1`` the single flip. Anything else raises ``ValueError`` naming ``model.group`` (the reference
    silently mapped unknown names such as ``"E2"`` to C8).
    """
    match = GROUP_PATTERN.match(group)
    if match is None:
        raise ValueError(f"model.group must be C<N> or D<N> with N >= 1, got {group!r}")
    from e2cnn import gspaces

    return GSPACES[group[0]](gspaces, int(match.group(1)))


def symmetric_padding(size: int, kernel_size: int, stride: int) -> int:
    """Zero padding per side that keeps a ``stride`` (1 or 2) layer's sampled grid centred.

    ``(k-1)/2``, plus one when ``stride == 2`` and ``size = 3 (mod 4)``, so that an
    odd ``size`` gives an odd output size (``(size+1)/2`` or ``(size+3)/2``).
    """
    extra = 1 if stride == 2 and size % 4 == 3 else 0
    return (kernel_size - 1) // 2 + extra


class SteerableCNN(nn.Module):
    """Group-equivariant conv blocks, group pooling, global spatial average.

    Input: ``C`` trivial (scalar) fields. Blocks (bias-free ``R2Conv`` ->
    ``InnerBatchNorm`` -> ``ReLU``), in regular fields of the group G (|G|
    channels each), with w = ``width``:

        k5 s2 -> w,  k3 s2 -> 2w,  k3 s1 -> 4w,  k3 s1 -> 4w

    then ``GroupPooling`` (max over each regular field's |G| channels: invariant
    scalars) and the mean over (H, W).

    Shapes: ``x`` (B, C, H, W) -> ``features`` (B, 4w), G-invariant; exactly so
    (to float precision, in eval mode) for odd H = W, see the module docstring.
    A 65 px input runs the blocks at 33, 17, 17, 17 px.
    """

    head_hidden = (256, 128)  # like the cnn's: D -> 256 -> 128 -> K

    def __init__(self, in_channels: int, group: str, width: int) -> None:
        super().__init__()
        from e2cnn import nn as enn

        space = group_space(group)
        field_type = enn.FieldType(space, in_channels * [space.trivial_repr])
        self.input_type = field_type
        self.geometry = tuple((kernel, stride) for kernel, stride, _ in BLOCKS)
        blocks = []
        for kernel, stride, multiplier in BLOCKS:
            out_type = enn.FieldType(space, multiplier * width * [space.regular_repr])
            blocks.append(
                enn.SequentialModule(
                    enn.R2Conv(field_type, out_type, kernel_size=kernel, stride=stride, padding=0, bias=False),
                    enn.InnerBatchNorm(out_type),
                    enn.ReLU(out_type, inplace=True),
                )
            )
            field_type = out_type
        self.blocks = nn.ModuleList(blocks)
        self.group_pool = enn.GroupPooling(field_type)
        self.feature_dim = 4 * width
        self._convolutions = tuple(module for module in self.modules() if isinstance(module, enn.R2Conv))
        self._exclude_cached_filters()
        self.register_load_state_dict_post_hook(_rebuild_cached_filters)

    def _exclude_cached_filters(self) -> None:
        for conv in self._convolutions:
            conv._non_persistent_buffers_set.update(CACHED_FILTERS)

    def train(self, mode: bool = True) -> "SteerableCNN":
        """Set the mode; the state_dict keys stay the same in both modes (no cached filters)."""
        super().train(mode)
        self._exclude_cached_filters()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fields = _geometric_tensor(x, self.input_type)
        for block, (kernel, stride) in zip(self.blocks, self.geometry):
            height, width = fields.tensor.shape[-2:]
            pad_h, pad_w = (symmetric_padding(size, kernel, stride) for size in (height, width))
            padded = F.pad(fields.tensor, (pad_w, pad_w, pad_h, pad_h))
            fields = block(_geometric_tensor(padded, fields.type))
        return self.group_pool(fields).tensor.mean(dim=(2, 3))


def _rebuild_cached_filters(model: SteerableCNN, incompatible_keys: Any) -> None:
    """After loading weights in eval mode, re-expand the cached filters from them."""
    if not model.training:
        model.train(True)
        model.train(False)


def _geometric_tensor(tensor: torch.Tensor, field_type: Any) -> Any:
    from e2cnn.nn import GeometricTensor

    return GeometricTensor(tensor, field_type)


def build_steerable(model_cfg: ModelConfig, in_channels: int, image_size: int) -> SteerableCNN:
    """Group from ``model.group``, ``w = model.width``; warns when ``image_size`` is even."""
    if image_size % 2 == 0:
        warnings.warn(
            f"steerable backbone at an even image size ({image_size}): features are only approximately "
            f"invariant; use an odd size such as {image_size + 1} for exact invariance",
            stacklevel=2,
        )
    return SteerableCNN(in_channels, model_cfg.group, model_cfg.width)
