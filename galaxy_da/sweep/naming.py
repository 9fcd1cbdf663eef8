"""A trial's MLflow run name: what the trial varied, short enough to read in a list of runs.

``{"align": "laplacian+topk", "align.topk": 8, "schedules.align_weight": "cosine", "optim.lr": 0.003}``
becomes ``laplacian+topk·k8·cosine·lr3e-3``, in the order of the sweep's space:

- a named option or a string is its label (``laplacian+topk``, ``resnet18``);
- a number is the key's short name (:data:`SHORT_NAMES`, else the last part of
  its path) followed by the value in its shortest form (``k8``, ``lr3e-3``, ``seed2``);
- a boolean is the short name when true and ``no-<short name>`` when false.

Runs of the base config are then told apart in the MLflow UI by what differs.
"""

from __future__ import annotations

from typing import Any

from galaxy_da.sweep.space import Space

SEPARATOR = "·"
SHORT_NAMES = {
    "align.topk": "k",
    "optim.lr": "lr",
    "optim.weight_decay": "wd",
    "model.width": "w",
    "align.entropy_weight": "ent",
    "align.ot.weight": "ot",
}


def compact_number(value: float) -> str:
    """The shorter of plain and exponent form: ``0.003 -> 3e-3``, ``0.5 -> 0.5``, ``8 -> 8``."""
    if isinstance(value, int):
        return str(value)
    plain = f"{value:.3g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    scientific = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return scientific if len(scientific) < len(plain) else plain


def value_label(path: str, value: Any) -> str:
    short = SHORT_NAMES.get(path, path.rsplit(".", 1)[-1])
    if isinstance(value, bool):
        return short if value else f"no-{short}"
    if isinstance(value, (int, float)):
        return f"{short}{compact_number(value)}"
    return str(value)


def trial_run_name(space: Space, sampled: dict[str, Any]) -> str:
    """The run name of the trial that Tune sampled as ``sampled`` (labels of named options, or values)."""
    return SEPARATOR.join(value_label(path, sampled[path]) for path in space if path in sampled)
