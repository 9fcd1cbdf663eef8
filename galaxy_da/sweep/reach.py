"""Refuse a sweep whose trials could not reach its tracking store.

Trials run on every node of the Ray cluster. A local sqlite file (or a plain
folder) lives on the driver's host only: the sweep would start its MLflow
server on that host's loopback and every trial elsewhere would log to its
own. On a cluster of more than one node such a store is refused before
anything starts, with the one line that says what to use instead.
"""

from __future__ import annotations

from galaxy_da.config import ConfigError

LOCAL_PREFIXES = ("sqlite:", "file:")


def is_local_store(tracking_uri: str) -> bool:
    return tracking_uri.startswith(LOCAL_PREFIXES) or "://" not in tracking_uri


def check_reachable(tracking_uri: str, nodes: int) -> None:
    """Raise :class:`ConfigError` when ``nodes`` > 1 and the store is on the driver's disk."""
    if nodes > 1 and is_local_store(tracking_uri):
        raise ConfigError(
            f"tracking URI {tracking_uri}: a local store cannot be reached from the other {nodes - 1} node(s) of this "
            "Ray cluster; run one MLflow server on a cluster address (cluster/README.md) and pass "
            "--tracking-uri http://HOST:PORT (or set MLFLOW_TRACKING_URI on every node)"
        )
