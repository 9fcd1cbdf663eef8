"""One trial's config: its sections, its content hash, and its dotted view.

:class:`TrialConfig` holds the sections of :mod:`galaxy_da.config_sections`.
:meth:`TrialConfig.hash` is the sha256 of the canonical JSON of what the trial
computes (key order never matters; the ``tracking`` section is left out), so runs
are identified by content; :meth:`TrialConfig.flat` is the ``{"align.topk": 5, ...}``
view of MLflow params and sweeps.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from galaxy_da.config_section import Section
from galaxy_da.config_sections import (
    AlignConfig, ClassLossConfig, ComputeConfig, DataConfig, ModelConfig, OptimConfig, ResourcesConfig, SchedulesConfig,
    SelectionConfig, TrackingConfig,
)


class TrialConfig(Section):
    """Everything one trial needs. Sections mirror the package layout."""

    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: ClassLossConfig = ClassLossConfig()
    align: AlignConfig = AlignConfig()
    schedules: SchedulesConfig = SchedulesConfig()
    optim: OptimConfig = OptimConfig()
    selection: SelectionConfig = SelectionConfig()
    resources: ResourcesConfig = ResourcesConfig()
    compute: ComputeConfig = ComputeConfig()
    tracking: TrackingConfig = TrackingConfig()

    def hash(self) -> str:
        """sha256 (first 16 hex digits) of the canonical JSON of what the trial computes.

        Key order never matters, and the ``tracking`` section (where the run is
        logged, what it is called) is left out: it does not change the trial.
        """
        return config_hash(self.model_dump(mode="json", exclude={"tracking"}))

    def hash_without_seed(self) -> str:
        """Groups runs that differ only in their seed."""
        return config_hash(self.model_dump(mode="json", exclude={"tracking", "seed"}))

    def flat(self) -> dict[str, Any]:
        """``{"align.topk": 5, ...}``: the dotted view used for MLflow params and sweeps."""
        return flatten(self.model_dump(mode="json"))



def config_hash(payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat
