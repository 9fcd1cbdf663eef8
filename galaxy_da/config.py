"""One typed, validated configuration per trial.

A :class:`TrialConfig` is a nested pydantic model. Every section forbids unknown
keys, so a typo fails before any compute with the dotted path of the key at
fault (``align.topk: must be >= 1, got 0``).

Usage::

    cfg = load_config("configs/smoke.yaml", overrides=["model.backbone=resnet18"])
    cfg.hash()          # stable across processes and key order
    save_config(cfg, "out.yaml")

This module loads, validates and saves; the parts live beside it, and everything
is importable from here:

- :mod:`galaxy_da.config_section`: the strict base of every section;
- :mod:`galaxy_da.config_sections`: the sections, their defaults and bounds;
- :mod:`galaxy_da.config_trial`: :class:`TrialConfig`, its hash and dotted view;
- :mod:`galaxy_da.config_overrides`: dotted ``key=value`` overrides;
- :mod:`galaxy_da.config_errors`: one actionable line per problem.

Search spaces are declared by the sweep files over dotted paths
(:mod:`galaxy_da.sweep.space`); each value is validated against these models
before Ray starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import ValidationError

from galaxy_da.config_errors import ConfigError, invalid_configuration
from galaxy_da.config_overrides import Overrides, apply_overrides, override_items, parse_override, set_dotted
from galaxy_da.config_sections import (
    GROUP_PATTERN, LABEL_FREE_RULES, ORACLE_RULE, AdversarialConfig, AlignConfig, ClassLossConfig, ComputeConfig, DataConfig,
    ModelConfig, OptimConfig, ResourcesConfig, ScheduleConfig, SchedulesConfig, SelectionConfig, TopKOTConfig, TrackingConfig,
)
from galaxy_da.config_trial import TrialConfig, config_hash, flatten

__all__ = [
    "AdversarialConfig", "AlignConfig", "ClassLossConfig", "ComputeConfig", "ConfigError", "DataConfig", "GROUP_PATTERN",
    "LABEL_FREE_RULES", "ModelConfig", "ORACLE_RULE", "OptimConfig", "Overrides", "ResourcesConfig", "ScheduleConfig",
    "SchedulesConfig", "SelectionConfig", "TopKOTConfig", "TrackingConfig", "TrialConfig", "apply_overrides", "config_hash",
    "config_to_yaml", "flatten", "load_config", "override_items", "parse_override", "save_config", "set_dotted", "validate",
]


def validate(tree: dict[str, Any], source: str = "config", overrides: Optional[dict[str, str]] = None) -> TrialConfig:
    """Build a :class:`TrialConfig`, turning pydantic errors into one :class:`ConfigError`.

    ``overrides`` maps each dotted key set by an override to how the user wrote
    it; a problem with such a key is blamed on the override, any other on ``source``.
    """
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(tree).__name__}")
    try:
        return TrialConfig.model_validate(tree)
    except ValidationError as exc:
        raise invalid_configuration(exc, TrialConfig, source, overrides or {}) from None


def load_config(path: str | Path | None = None, overrides: Overrides = None) -> TrialConfig:
    """Load YAML (or defaults when ``path`` is None), apply dotted overrides, validate.

    An error names its origin: ``override align.topkk=3: align.topkk: unknown key;
    did you mean align.topk?``, or the file for a key the file set.
    """
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        source = str(path)
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    origins = {key: f"override {text}" for key, _, text in override_items(overrides)}
    return validate(apply_overrides(tree, overrides), source, origins)


def config_to_yaml(cfg: TrialConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def save_config(cfg: TrialConfig, path: str | Path) -> None:
    Path(path).write_text(config_to_yaml(cfg))
