"""How many W-GPU trials can run at once: ``floor(G / W)``, where ``G`` counts the GPUs the cluster has or can add.

A trial with ``resources.workers_per_trial = W > 1`` on GPUs holds W whole GPUs
(one per Ray Train worker). Tune knows nothing of that: it starts
``--max-concurrent`` trial actors (each asks for a sliver of CPU), and every
trial past ``floor(G / W)`` waits forever inside Ray Train's start-up for GPUs
that will never be free. So the sweep caps its concurrency at ``floor(G / W)``,
saying so in one line, and refuses outright when ``G < W`` (no trial could start).

``G`` is the larger of the GPUs on the nodes up now and the GPUs of every node
the autoscaler may start, per node type ``GPU × max_workers``, from the same
sources as :func:`galaxy_da.sweep.gpus.decide_use_gpu` (Ray's cluster config,
else the autoscaler YAML). A GPU node type without a worker limit makes ``G``
unbounded: nothing is capped.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from galaxy_da.config import ConfigError
from galaxy_da.sweep.gpus import configured_node_types, reported_node_types


def addable_gpus(node_types: dict[str, dict[str, Any]]) -> float:
    """``Σ GPU × max_workers`` over node types (autoscaler ``available_node_types`` layout); ``inf`` if a GPU type has no limit."""
    total = 0.0
    for spec in node_types.values():
        gpus = float((spec.get("resources") or {}).get("GPU", 0))
        if gpus > 0:
            limit = spec.get("max_workers", -1)
            total += math.inf if limit is None or limit < 0 else gpus * limit
    return total


def cluster_gpus(autoscaler_config: Optional[str]) -> float:
    """GPUs the connected Ray cluster has now or can add (the larger; see the module docstring)."""
    import ray

    up = float(ray.cluster_resources().get("GPU", 0))
    for read in (reported_node_types, lambda: configured_node_types(autoscaler_config)):
        addable = addable_gpus(read())
        if addable > 0:
            return max(up, addable)
    return up


def concurrent_trials(max_concurrent: int, workers: int, gpus: float) -> tuple[int, Optional[str]]:
    """``(trials to run at once, the line saying why it is fewer than asked)`` for W-GPU trials on ``gpus`` GPUs.

    Raises :class:`ConfigError` when not even one trial fits (``gpus < workers``).
    """
    if gpus < workers:
        raise ConfigError(
            f"resources.workers_per_trial={workers}: each trial needs {workers} GPUs and the cluster has or can add "
            f"{gpus:g}; no trial could start (--max-concurrent {max_concurrent}). Lower workers_per_trial or add GPU nodes"
        )
    fits = math.floor(gpus / workers) if math.isfinite(gpus) else max_concurrent
    if fits >= max_concurrent:
        return max_concurrent, None
    return fits, (f"--max-concurrent {max_concurrent} capped at {fits}: the cluster has or can add {gpus:g} GPUs "
                  f"and each trial holds workers_per_trial={workers} of them")


def fit_concurrency(base: dict[str, Any], settings, has_gpu: bool):
    """``settings`` with ``max_concurrent`` capped for W-GPU trials (the largest W in the space), printing the cap's line."""
    from dataclasses import replace

    from galaxy_da.sweep.space import largest_value

    workers = largest_value(base, settings.space, "resources.workers_per_trial")
    if not has_gpu or workers <= 1:
        return settings
    fits, notice = concurrent_trials(settings.max_concurrent, workers, cluster_gpus(settings.autoscaler_config))
    if notice:
        print(notice, flush=True)
    return replace(settings, max_concurrent=fits)
