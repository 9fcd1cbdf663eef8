"""JSON that strict parsers accept: NaN and infinities become ``null``.

``json.dumps`` writes ``NaN`` and ``-Infinity`` by default, which JavaScript,
``jq`` and most JSON libraries other than Python's reject. A trial's history
holds ``best/score = -inf`` until its first eligible epoch, and metrics can be NaN
(an absent class), so every JSON file and line galaxy-da writes goes through :func:`dumps`.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(tree: Any) -> Any:
    """``tree`` with every non-finite float (at any depth of dicts, lists and tuples) replaced by None."""
    if isinstance(tree, float):
        return tree if math.isfinite(tree) else None
    if isinstance(tree, dict):
        return {key: finite(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [finite(value) for value in tree]
    return tree


def dumps(tree: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`finite` ``(tree)``, refusing any NaN that slipped through."""
    return json.dumps(finite(tree), allow_nan=False, **kwargs)
