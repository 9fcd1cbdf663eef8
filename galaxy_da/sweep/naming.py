"""A trial's MLflow run name: what the trial varied, method first, short enough for the UI's default column.

``{"align.topk": 1, "schedules.align_weight": "linear-0-0.5", "align": "laplacian+topk"}`` (the
space of ``sweeps/topk.py``) becomes ``lap+topk·k1·lin-0-0.5``:

- the parts come in a stable order, by :func:`name_rank` (the method, then the backbone, then
  every other knob, schedules last), ties in the order of the sweep's space: what a reader
  compares first stays readable when the UI cuts the name;
- a named option or a string is its label, each word of it shortened by :data:`ABBREVIATIONS`
  (``laplacian+topk`` -> ``lap+topk``, ``linear-0-0.5`` -> ``lin-0-0.5``);
- a number is the key's short name (:data:`SHORT_NAMES`, else the last part of its path)
  followed by the value in its shortest form (``k8``, ``lr3e-3``, ``seed2``);
- a boolean is the short name when true and ``no-<short name>`` when false;
- the knobs of :data:`SHOWN_OFF_DEFAULT` (the label-shift estimator, unbalanced OT's reach, the
  target survey) are shown whenever the base config sets them off their default, varied or not,
  right after the method (the target with the other knobs): a weighted or unbalanced trial of
  ``sweeps/topk.py`` on a base with ``align.label_shift: bbse`` is ``lap+topk·bbse·k1·lin-0-0.5``,
  never the name of its marginal twin; one on the DESI-like target ends in ``·desi``.

MLflow 3.17's runs table cuts a nested run's name after about 17 characters (its
default Run Name column; ``bench/ui_screenshots.py`` measures it). The sweep's own
view of the experiment (:mod:`galaxy_da.sweep.ui_view`) widens the column, so the
whole name shows there. A PBT member renamed after a copy gets its name from here too.
"""

from __future__ import annotations

import re
from typing import Any

from galaxy_da.config import TrialConfig, flatten
from galaxy_da.sweep.space import Space, path_overrides, probe_values

SEPARATOR = "·"
SHORT_NAMES = {
    "align.topk": "k",
    "optim.lr": "lr",
    "optim.weight_decay": "wd",
    "model.width": "w",
    "align.entropy_weight": "ent",
    "align.ot.weight": "ot",
    "align.reach": "reach",
}
# Words of option labels, shortened in run names (whole words only: "topk_ot" stays).
ABBREVIATIONS = {
    "laplacian": "lap",
    "sinkhorn": "sink",
    "constant": "const",
    "linear": "lin",
    "sigmoid": "sig",
    "cosine": "cos",
    "steerable": "steer",
    "exponential": "exp",
}
# Where a space path's part goes in the name: a path listed here (the method, the backbone), else its
# config section's rank (schedules last), else OTHER_RANK.
PATH_RANKS = {"align": 0, "align.method": 0, "align.label_shift": 0, "align.reach": 0, "model": 1, "model.backbone": 1}
SECTION_RANKS = {"schedules": 3}
OTHER_RANK = 2
# Knobs that change what alignment matches, or where: a name shows them off their default even when the sweep
# does not vary them, so weighted and marginal, unbalanced and balanced, DESI-like and SDSS-like runs never share one.
SHOWN_OFF_DEFAULT = ("align.label_shift", "align.reach", "data.target")
DEFAULTS = TrialConfig().flat()


def compact_number(value: float) -> str:
    """The shorter of plain and exponent form: ``0.003 -> 3e-3``, ``0.5 -> 0.5``, ``8 -> 8``."""
    if isinstance(value, int):
        return str(value)
    plain = f"{value:.3g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    scientific = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return scientific if len(scientific) < len(plain) else plain


def abbreviate(label: str) -> str:
    """``label`` with each word in :data:`ABBREVIATIONS` replaced by its short form."""
    return re.sub(r"[A-Za-z]+", lambda word: ABBREVIATIONS.get(word.group(0), word.group(0)), label)


def value_label(path: str, value: Any) -> str:
    short = SHORT_NAMES.get(path, path.rsplit(".", 1)[-1])
    if isinstance(value, bool):
        return short if value else f"no-{short}"
    if isinstance(value, (int, float)):
        return f"{short}{compact_number(value)}"
    return abbreviate(str(value))


def name_rank(path: str) -> int:
    """The rank of ``path``'s part of a run name: :data:`PATH_RANKS`, else its section's :data:`SECTION_RANKS`."""
    return PATH_RANKS.get(path, SECTION_RANKS.get(path.split(".", 1)[0], OTHER_RANK))


def name_order(space: dict[str, Any]) -> list[str]:
    """The space's paths (or any mapping's keys) in run-name order: by :func:`name_rank`, ties in the mapping's order."""
    return sorted(space, key=lambda path: (name_rank(path), list(space).index(path)))


def sets(space: Space, key: str) -> bool:
    """Whether some option of ``space`` sets the dotted ``key`` (its own path, or a named option's field)."""
    return any(key in path_overrides(path, value) for path, spec in space.items() for value in probe_values(path, spec))


def off_default(space: Space, base: dict[str, Any]) -> dict[str, Any]:
    """``{key: value}`` of the :data:`SHOWN_OFF_DEFAULT` knobs that ``base`` (a config tree) sets off their
    default and no option of ``space`` sets: the same in every trial, so the sampled labels never show them."""
    flat = flatten(base)
    return {key: flat[key] for key in SHOWN_OFF_DEFAULT if flat.get(key, DEFAULTS[key]) != DEFAULTS[key] and not sets(space, key)}


def trial_run_name(space: Space, sampled: dict[str, Any], base: dict[str, Any] | None = None) -> str:
    """The run name of the trial that Tune sampled as ``sampled`` (labels of named options, or values) from the
    base config tree ``base``: what it varied, and the :data:`SHOWN_OFF_DEFAULT` knobs ``base`` sets."""
    parts = {path: sampled[path] for path in space if path in sampled} | off_default(space, base or {})
    return SEPARATOR.join(value_label(path, parts[path]) for path in name_order(parts))
