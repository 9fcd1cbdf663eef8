"""The pluggable pieces by name: backbones and alignment losses, known before they are imported.

A :class:`LazyRegistry` maps a name to ``"package.module:attribute"`` and imports
that module the first time the entry is looked up. Membership, iteration and
``len`` import nothing, so :mod:`galaxy_da.config` checks ``model.backbone`` and
``align.method`` without loading torch, GeomLoss or POT: a config error comes
back in well under a second instead of after several seconds of imports.

The entries themselves (and their docstrings with the maths and shapes) live in
their modules: :mod:`galaxy_da.models`, :mod:`galaxy_da.losses.alignment` and
:mod:`galaxy_da.label_shift.estimators`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from typing import Any


class LazyRegistry(MutableMapping):
    """``name -> object``; an entry given as ``"module:attribute"`` is imported on first lookup."""

    def __init__(self, entries: dict[str, Any]) -> None:
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> Any:
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attribute = entry.partition(":")
            entry = self._entries[name] = getattr(importlib.import_module(module), attribute)
        return entry

    def __setitem__(self, name: str, entry: Any) -> None:
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __contains__(self, name: object) -> bool:  # Mapping's default would look the entry up, importing it
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


# ``model.backbone`` -> encoder builder ``(model_cfg, in_channels, image_size) -> nn.Module``.
BACKBONES = LazyRegistry({
    "cnn": "galaxy_da.models.cnn:build_cnn",
    "steerable": "galaxy_da.models.steerable:build_steerable",
    "resnet18": "galaxy_da.models.resnet:build_resnet18",
})

# ``align.method`` -> loss module class ``(align_cfg, feature_dim) -> nn.Module``.
ALIGNMENT_METHODS = LazyRegistry({
    "none": "galaxy_da.losses.alignment:NoAlignment",
    "sinkhorn": "galaxy_da.losses.alignment:SinkhornAlignment",
    "energy": "galaxy_da.losses.alignment:EnergyAlignment",
    "gaussian": "galaxy_da.losses.alignment:GaussianAlignment",
    "laplacian": "galaxy_da.losses.alignment:LaplacianAlignment",
    "topk_ot": "galaxy_da.losses.topk_ot:TopKOTLoss",
    "dann": "galaxy_da.losses.adversarial:DANNLoss",
})

# ``align.label_shift`` (besides ``"none"``) -> target-prior estimator
# ``(source_probs, source_labels, target_probs) -> q``; see :mod:`galaxy_da.label_shift.estimators`.
PRIOR_ESTIMATORS = LazyRegistry({
    "bbse": "galaxy_da.label_shift.estimators:bbse_priors",
    "em": "galaxy_da.label_shift.estimators:em_priors",
    "em_bcts": "galaxy_da.label_shift.estimators:em_bcts_priors",
})
