"""Starting Ray again when a new node's raylet missed Ray's fixed start-up window.

Ray gives a new node's raylet 30 s to register with the GCS (``ray/_private/node.py``) and then raises a bare
``Exception`` naming the time-out; a loaded machine can miss that window, and a second start usually makes it.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

Started = TypeVar("Started")

# Ray's words when a new node's raylet has not registered with the GCS within its 30 s
RAY_STARTUP_TIMEOUT = "timed out during startup"


def retry_ray_startup(start: Callable[[], Started], undo: Callable[[], None] = lambda: None, attempts: int = 3) -> Started:
    """What ``start()`` returns. When it fails with Ray's start-up timeout (:data:`RAY_STARTUP_TIMEOUT`), ``undo()``
    runs and ``start`` is called again, ``attempts`` times in all; any other error, and the last timeout, is raised as it was."""
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except Exception as error:
            if attempt == attempts or RAY_STARTUP_TIMEOUT not in str(error):
                raise
            undo()


def init_local_ray(**options: Any) -> None:
    """``ray.init(address="local", **options)``: a fresh local Ray instance, started again after ``ray.shutdown()``
    when its raylet missed Ray's start-up window (:func:`retry_ray_startup`)."""
    import ray

    retry_ray_startup(lambda: ray.init(address="local", **options), undo=ray.shutdown)
