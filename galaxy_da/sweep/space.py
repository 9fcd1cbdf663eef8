"""Search spaces over dotted config paths, declared as plain data.

A sweep names what it varies and how::

    SPACE = {
        "align.topk": {"choice": [1, 5, 10, 20]},
        "optim.lr": {"loguniform": [1e-4, 1e-2]},
        "schedules.align_weight": {"choice": {                # named options
            "const0.1": {"kind": "constant", "start": 0.1, "end": 0.1},
            "linear": {"kind": "linear", "start": 0.0, "end": 0.5},
        }},
    }

Each spec is ``{kind: arguments}`` with ``kind`` from :data:`DISTRIBUTIONS`.
A ``choice`` (or ``grid``) whose options are not plain scalars is searched over
option *labels* (the dict keys, or the options' JSON); :func:`decode` maps a
sampled label back. A mapping value is merged into the section at its path
(``schedules.align_weight.kind=linear, ...``), so the section's other fields keep
their base values. This module never imports Ray at import time.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable

from galaxy_da.config import ConfigError, TrialConfig, apply_overrides, flatten, validate

Space = dict[str, dict[str, Any]]
SCALARS = (bool, int, float, str, type(None))


@dataclass(frozen=True)
class Distribution:
    """How one spec kind becomes a Ray Tune domain and which values must validate."""

    tune_name: str  # the ``ray.tune`` function that builds the domain
    categorical: bool  # arguments are a list of options (True) or numeric bounds (False)
    probes: Callable[[list], list]  # values checked against the config schema before Ray starts


def _bounds(args: list) -> list:
    return list(args[:2])


def _int_bounds(args: list) -> list:
    return [int(args[0]), int(args[1]) - 1]  # tune.randint's upper bound is exclusive


DISTRIBUTIONS: dict[str, Distribution] = {
    "choice": Distribution("choice", True, list),
    "grid": Distribution("grid_search", True, list),
    "uniform": Distribution("uniform", False, _bounds),
    "loguniform": Distribution("loguniform", False, _bounds),
    "quniform": Distribution("quniform", False, _bounds),
    "randint": Distribution("randint", False, _int_bounds),
}


def _kind_and_args(path: str, spec: dict[str, Any]) -> tuple[str, Any]:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"search space {path}: expected one {{kind: arguments}} entry, got {spec!r}")
    (kind, args), = spec.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"search space {path}: unknown kind {kind!r}; choose from {sorted(DISTRIBUTIONS)}")
    return kind, args


def options(path: str, spec: dict[str, Any]) -> dict[Any, Any]:
    """``{label: value}`` of a categorical spec (labels are the values when all are scalars)."""
    kind, args = _kind_and_args(path, spec)
    if not DISTRIBUTIONS[kind].categorical:
        raise ConfigError(f"search space {path}: {kind!r} has no discrete options")
    if isinstance(args, dict):
        return {str(label): value for label, value in args.items()}
    if not isinstance(args, list) or not args:
        raise ConfigError(f"search space {path}: {kind} needs a non-empty list or mapping of options")
    if all(isinstance(value, SCALARS) for value in args):
        return {value: value for value in args}
    return {json.dumps(value, sort_keys=True): value for value in args}


def probe_values(path: str, spec: dict[str, Any]) -> list[Any]:
    """The values of ``spec`` that must each give a valid config (all options, or both bounds)."""
    kind, args = _kind_and_args(path, spec)
    distribution = DISTRIBUTIONS[kind]
    if distribution.categorical:
        return list(options(path, spec).values())
    if not isinstance(args, (list, tuple)) or len(args) < 2 or not all(isinstance(a, (int, float)) for a in args):
        raise ConfigError(f"search space {path}: {kind} needs numeric [low, high{', q' if kind == 'quniform' else ''}], got {args!r}")
    if args[0] >= args[1] or (kind == "loguniform" and args[0] <= 0):
        raise ConfigError(f"search space {path}: {kind} bounds {args!r} are not an interval{' of positive numbers' if kind == 'loguniform' else ''}")
    return distribution.probes(list(args))


def path_overrides(path: str, value: Any) -> dict[str, Any]:
    """A sampled value as dotted overrides: a mapping is merged field by field into the section."""
    if isinstance(value, dict):
        return {f"{path}.{key}": leaf for key, leaf in flatten(value).items()}
    return {path: value}


FIXED_PER_SWEEP: dict[str, str] = {
    "selection.rule": "a sweep ranks, prunes and picks its trials by one label-free rule (Tune's metric select/<rule>), "
                      "and scores of different rules do not compare",
}


def check_space(base: dict[str, Any], space: Space) -> None:
    """Every path and every probe value must validate on top of ``base``, and none may set a key of
    :data:`FIXED_PER_SWEEP`; the error names the path."""
    if not space:
        raise ConfigError("search space: empty; name at least one dotted path to vary")
    for path, spec in space.items():
        for value in probe_values(path, spec):
            overrides = path_overrides(path, value)
            for key in FIXED_PER_SWEEP.keys() & overrides.keys():
                raise ConfigError(f"search space {path}: {key} cannot vary within a sweep: {FIXED_PER_SWEEP[key]}; "
                                  f"set it in the base config ({key}=...)")
            validate(apply_overrides(base, overrides), source=f"search space {path}={value!r}")


def values_of(base: dict[str, Any], space: Space, key: str) -> list[Any]:
    """Every value the dotted ``key`` takes in some trial of ``space``, once each (for a numeric range, its bounds):
    ``data.target`` of a space that varies it over ``["sdss", "desi"]`` -> ``["sdss", "desi"]``. The base value
    comes first, unless a path sets ``key`` in every one of its options (then no trial keeps it)."""
    values: list[Any] = []
    always_set = False
    for path, spec in space.items():
        set_by_option = [path_overrides(path, value) for value in probe_values(path, spec)]
        always_set = always_set or all(key in overrides for overrides in set_by_option)
        values.extend(overrides[key] for overrides in set_by_option if key in overrides)
    if not always_set:
        values.insert(0, validate(base, "base config").flat()[key])
    return [value for index, value in enumerate(values) if value not in values[:index]]


def largest_value(base: dict[str, Any], space: Space, key: str) -> Any:
    """The largest value the dotted ``key`` takes in any trial of ``space`` (its base value if unvaried)."""
    return max(values_of(base, space, key))


def is_categorical(path: str, spec: dict[str, Any]) -> bool:
    return DISTRIBUTIONS[_kind_and_args(path, spec)[0]].categorical


def uses_grid(space: Space) -> bool:
    return any(_kind_and_args(path, spec)[0] == "grid" for path, spec in space.items())


def to_tune(space: Space) -> dict[str, Any]:
    """``{path: ray.tune domain}``; categorical specs range over their option labels."""
    from ray import tune

    domains = {}
    for path, spec in space.items():
        kind, args = _kind_and_args(path, spec)
        build = getattr(tune, DISTRIBUTIONS[kind].tune_name)
        domains[path] = build(list(options(path, spec))) if DISTRIBUTIONS[kind].categorical else build(*args)
    return domains


def decode(space: Space, sampled: dict[str, Any]) -> dict[str, Any]:
    """Tune's sampled ``{path: label or number}`` -> dotted config overrides."""
    overrides: dict[str, Any] = {}
    for path, spec in space.items():
        if path not in sampled:
            continue
        kind, _ = _kind_and_args(path, spec)
        value = options(path, spec)[sampled[path]] if DISTRIBUTIONS[kind].categorical else sampled[path]
        overrides.update(path_overrides(path, value))
    return overrides


def trial_config(base: dict[str, Any], space: Space, sampled: dict[str, Any]) -> TrialConfig:
    """The validated config of one trial."""
    return validate(apply_overrides(base, decode(space, sampled)), source=f"trial {sampled}")


def varied_keys(space: Space) -> list[str]:
    """One flattened config key per path, the param a trial's run shows its value of: a numeric path itself; for a
    categorical one, the first key (alphabetically) whose value differs between its options, a text-valued key
    first (``align`` of ``sweeps/topk.py``: ``align.method``; ``schedules.align_weight``: ``...kind``).
    In the space's order; a path whose options all set the same values has none."""
    keys: list[str] = []
    for path, spec in space.items():
        if not is_categorical(path, spec):
            keys.append(path)
            continue
        per_option = [path_overrides(path, value) for value in options(path, spec).values()]
        differing = [key for key in sorted({key for overrides in per_option for key in overrides})
                     if len({json.dumps(overrides.get(key), sort_keys=True) for overrides in per_option}) > 1]
        texts = [key for key in differing if any(isinstance(overrides.get(key), str) for overrides in per_option)]
        keys.extend((texts or differing)[:1])
    return keys


def describe(space: Space, sampled: dict[str, Any]) -> dict[str, str]:
    """Readable ``{path: label}`` of a trial (floats to 4 significant digits)."""
    return {
        path: f"{value:.4g}" if isinstance(value, float) and math.isfinite(value) else str(value)
        for path, value in sampled.items()
        if path in space
    }
