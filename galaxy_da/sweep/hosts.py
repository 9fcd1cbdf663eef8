"""Which hosts a sweep's trials may run on: the hosts of the nodes up now, and those the autoscaler can add.

Counting the nodes alive at start undercounts an autoscaling cluster: on
``cluster/gpu.yaml`` only the head is up when the sweep starts (the GPU workers
start at zero), yet every trial runs on a worker the autoscaler adds. So the
count takes, as :mod:`galaxy_da.sweep.gpus` does for GPUs, the node types the
autoscaler can start: Ray's cluster config in the GCS (KubeRay publishes it; a
group counts when it can grow, ``max_count`` -1 or above ``min_count``), else the
autoscaler YAML (``--autoscaler-config``, or ``~/ray_bootstrap_config.yaml`` where
``ray up`` leaves it, read only when the sweep joined a running cluster).

Hosts, not nodes: several raylets on one machine (``ray.cluster_utils.Cluster``,
Ray's ``fake_multinode`` provider) share its disk and its loopback, so nodes up
are counted by address, and providers that start nodes on this machine add no host.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Optional

SAME_HOST_PROVIDERS = frozenset({"fake_multinode"})  # autoscaler providers whose nodes are raylets on the head's machine
DEFAULT_MAX_WORKERS = 2  # Ray's default for a node type that names no max_workers (nor the cluster one)


def is_loopback(host: Optional[str]) -> bool:
    """Whether ``host`` names this machine to whoever resolves it: ``localhost``, 127.0.0.0/8, ::1, 0.0.0.0."""
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


@dataclass(frozen=True)
class ClusterHosts:
    """``up``: the distinct addresses of the alive nodes; ``addable``: what the autoscaler can add on other hosts."""

    up: tuple[str, ...]
    addable: tuple[str, ...] = ()

    @property
    def several(self) -> bool:
        """Whether a trial may run on a host other than the driver's."""
        return len(self.up) > 1 or bool(self.addable)

    def others(self) -> str:
        """The other hosts in words, e.g. ``the hosts the autoscaler can add (gpu_worker, up to 8)``."""
        parts = [f"the {len(self.up) - 1} other host(s) up now"] if len(self.up) > 1 else []
        parts += [f"the hosts the autoscaler can add ({'; '.join(self.addable)})"] if self.addable else []
        return " and ".join(parts)


def hosts_up(nodes: list[dict[str, Any]]) -> tuple[str, ...]:
    """Distinct addresses of the alive nodes in ``ray.nodes()``."""
    return tuple(sorted({node["NodeManagerAddress"] for node in nodes if node["Alive"]}))


def addable_from_groups(groups: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    """Node groups of Ray's cluster config (:func:`~galaxy_da.sweep.gpus.reported_node_types`) that can grow."""
    return tuple(f"{name}, up to {'any number' if spec['max_workers'] == -1 else spec['max_workers']}"
                 for name, spec in sorted(groups.items())
                 if spec["max_workers"] == -1 or spec["max_workers"] > spec.get("min_workers", 0))


def addable_from_config(config: dict[str, Any]) -> tuple[str, ...]:
    """What an autoscaler YAML can add on hosts other than the head's: worker node types, or a local provider's ``worker_ips``."""
    provider = config.get("provider") or {}
    if provider.get("type") in SAME_HOST_PROVIDERS:
        return ()
    if provider.get("type") == "local":
        return tuple(f"worker {ip}" for ip in provider.get("worker_ips") or [] if ip != provider.get("head_ip") and not is_loopback(ip))
    default_max = config.get("max_workers", DEFAULT_MAX_WORKERS)
    return tuple(f"{name}, up to {spec.get('max_workers', default_max)}"
                 for name, spec in sorted((config.get("available_node_types") or {}).items())
                 if name != config.get("head_node_type") and spec.get("max_workers", default_max) != 0)


def cluster_hosts(autoscaler_config: Optional[str], joined: bool) -> ClusterHosts:
    """The connected Ray cluster's hosts; ``joined``: the sweep joined a running cluster (not a fresh local Ray)."""
    import ray

    from galaxy_da.sweep import gpus

    addable = addable_from_groups(gpus.reported_node_types())
    if not addable and (autoscaler_config or joined):
        addable = addable_from_config(gpus.autoscaler_config(autoscaler_config))
    return ClusterHosts(hosts_up(ray.nodes()), addable)
