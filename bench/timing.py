"""Wall-clock timing shared by the benches."""

from __future__ import annotations

import time
from typing import Callable


def seconds(fn: Callable[[], object]) -> float:
    """Wall time of one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` calls of ``fn``, in seconds (the least disturbed by other load)."""
    return min(seconds(fn) for _ in range(repeats))
