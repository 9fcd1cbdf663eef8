"""Dotted overrides of a config tree: ``align.topk=8`` or ``{"align.topk": 8}``.

A value written as text is parsed as YAML (``optim.lr=3e-3`` is a number). Each
key's sections must exist in :class:`~galaxy_da.config_trial.TrialConfig`: a
misspelt section fails with the nearest one (``alig.topk: not a config section;
did you mean align?``); a misspelt last key is left to validation, which names it.
"""

from __future__ import annotations

import json
from typing import Any, Union

import yaml

from galaxy_da.config_errors import ConfigError, did_you_mean
from galaxy_da.config_trial import TrialConfig


def parse_override(text: str) -> tuple[str, Any]:
    """``"align.topk=8"`` -> ``("align.topk", 8)``; the value is parsed as YAML (invalid YAML is a :class:`ConfigError`)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected dotted.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    if not raw.strip():
        return key, None
    try:
        return key, yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({yaml_problem(exc)})") from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML parse error: what went wrong and the column of the value where it did."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem is None:
        return " ".join(str(exc).split())
    return f"{problem} at column {mark.column + 1}" if mark is not None else problem


Overrides = Union[dict[str, Any], list[str], None]


def override_items(overrides: Overrides) -> list[tuple[str, Any, str]]:
    """``(dotted key, value, how it was written)`` for a dict or a list of ``key=value`` strings."""
    if not overrides:
        return []
    if isinstance(overrides, dict):
        return [(key, value, f"{key}={json.dumps(value)}") for key, value in overrides.items()]
    return [(*parse_override(text), text) for text in overrides]


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``tree[a][b][c] = value`` for ``key = "a.b.c"``, checking each section exists."""
    node = tree
    parts = key.split(".")
    known: Any = TrialConfig().model_dump()
    for depth, part in enumerate(parts[:-1]):
        sections = [name for name, value in known.items() if isinstance(value, dict)] if isinstance(known, dict) else []
        known = known.get(part) if isinstance(known, dict) else None
        if not isinstance(known, dict):
            section = ".".join(parts[:depth])
            hint = did_you_mean(part, sections, f"{section}." if section else "")
            raise ConfigError(f"override {key}: {'.'.join(parts[: depth + 1])}: not a config section{hint}")
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(parts[: depth + 1])}: expected a mapping, got {node!r}")
    node[parts[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: Overrides) -> dict[str, Any]:
    """Return a copy of ``tree`` with dotted overrides (a dict or ``key=value`` strings) applied."""
    tree = json.loads(json.dumps(tree))  # deep copy, JSON-safe
    for key, value, _ in override_items(overrides):
        set_dotted(tree, key, value)
    return tree
