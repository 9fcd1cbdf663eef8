"""Do a sweep's trials ask for GPUs? From the node types the cluster can add, not only the nodes that are up.

On an autoscaling cluster the GPU workers often start at zero (``cluster/gpu.yaml``:
a CPU head, ``gpu_worker`` with ``min_workers: 0``). Deciding from
``ray.cluster_resources()`` at start would then see no GPU, request CPUs only,
and the autoscaler would never add a GPU node: the sweep would train on the
head's CPUs. So the default (``--use-gpu``/``--no-use-gpu`` override it) asks
which node types the autoscaler can start, in this order:

1. Ray's cluster config in the GCS (``node_group_configs``), published by
   autoscalers that report their config (KubeRay's). Ray 2.60's own autoscaler,
   started by ``ray up`` or ``ray start --autoscaling-config``, does not publish it;
2. the autoscaler's YAML itself: ``--autoscaler-config``, by default
   ``~/ray_bootstrap_config.yaml``, where ``ray up`` writes it on the head (the
   node ``ray submit`` runs the sweep on), with each node type's resources filled in;
3. the GPUs of the nodes up now.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import yaml

BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")


def gpu_node_types(node_types: dict[str, dict[str, Any]]) -> list[str]:
    """Names of the node types (autoscaler ``available_node_types`` layout) that have GPUs and may be started."""
    return sorted(name for name, spec in node_types.items()
                  if float((spec.get("resources") or {}).get("GPU", 0)) > 0 and spec.get("max_workers", -1) != 0)


def reported_node_types() -> dict[str, dict[str, Any]]:
    """Node types from the cluster config in Ray's GCS (empty when no autoscaler reported one)."""
    import ray

    config = ray._private.state.state.get_cluster_config()
    if config is None:
        return {}
    return {group.name: {"resources": dict(group.resources), "min_workers": group.min_count, "max_workers": group.max_count}
            for group in config.node_group_configs}


def autoscaler_config(path: Optional[str]) -> dict[str, Any]:
    """The autoscaler YAML at ``path`` (default :data:`BOOTSTRAP_CONFIG` when it exists, else empty)."""
    file = Path(path).expanduser() if path else BOOTSTRAP_CONFIG.expanduser()
    if not file.is_file():
        if path:
            raise FileNotFoundError(f"--autoscaler-config {path}: no such file")
        return {}
    return yaml.safe_load(file.read_text()) or {}


def configured_node_types(path: Optional[str]) -> dict[str, dict[str, Any]]:
    """``available_node_types`` of the autoscaler YAML at ``path`` (:func:`autoscaler_config`)."""
    return autoscaler_config(path).get("available_node_types") or {}


def decide_use_gpu(use_gpu: Optional[bool], autoscaler_config: Optional[str]) -> tuple[bool, str]:
    """``(use GPUs?, why)`` for a sweep on the connected Ray cluster; ``use_gpu`` set by a flag wins."""
    import ray

    if use_gpu is not None:
        return use_gpu, "--use-gpu" if use_gpu else "--no-use-gpu"
    sources = {"Ray's cluster config": reported_node_types, "autoscaler config": lambda: configured_node_types(autoscaler_config)}
    for source, read in sources.items():
        names = gpu_node_types(read())
        if names:
            return True, f"{source}: GPU node types {', '.join(names)}"
    gpus = ray.cluster_resources().get("GPU", 0)
    return gpus > 0, f"nodes up now: {gpus:g} GPUs"
