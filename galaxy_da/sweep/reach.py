"""Refuse a sweep whose trials could not reach its tracking store, its dataset or its Ray storage.

Trials run on every host of the Ray cluster, including hosts the autoscaler
adds later (:mod:`galaxy_da.sweep.hosts`). When the cluster has or may get a
host other than the driver's, the sweep is refused before anything starts, with
one line naming the flag at fault and what to use instead, if:

- the tracking store is on the driver's disk (a sqlite file or a folder: the
  sweep would serve it on the driver's loopback, and trials elsewhere would log to
  their own), or its URI names a loopback address (``http://127.0.0.1:5000``,
  ``localhost``), which every other host resolves to itself;
- ``--data`` or ``--storage-path`` is a folder on a filesystem of the driver's host
  alone (not one that every host mounts: :mod:`galaxy_da.sweep.mounts`).
"""

from __future__ import annotations

from typing import Optional
from urllib.parse import urlsplit

from galaxy_da.config import ConfigError
from galaxy_da.sweep.hosts import ClusterHosts, is_loopback
from galaxy_da.sweep.mounts import SHARED_FILESYSTEMS, filesystem_type

LOCAL_PREFIXES = ("sqlite:", "file:")


def is_local_store(tracking_uri: str) -> bool:
    return tracking_uri.startswith(LOCAL_PREFIXES) or "://" not in tracking_uri


def local_path(uri: str) -> Optional[str]:
    """The folder a dataset or storage location names on this host; ``None`` for a remote URI (``s3://``, ...)."""
    if "://" not in uri:
        return uri
    parts = urlsplit(uri)
    return parts.path if parts.scheme == "file" else None


def check_tracking(tracking_uri: str, hosts: ClusterHosts) -> None:
    """Raise :class:`ConfigError` when other hosts could not reach the tracking store at ``tracking_uri``."""
    if not hosts.several:
        return
    if is_local_store(tracking_uri):
        raise ConfigError(
            f"tracking URI {tracking_uri} (--tracking-uri): a store on this host's disk cannot be reached from {hosts.others()} "
            "of this Ray cluster; run one MLflow server on a cluster address (cluster/README.md) and pass "
            "--tracking-uri http://HOST:PORT (or set MLFLOW_TRACKING_URI on every node)"
        )
    if is_loopback(urlsplit(tracking_uri).hostname):
        raise ConfigError(
            f"tracking URI {tracking_uri} (--tracking-uri): a loopback address, which {hosts.others()} of this Ray cluster "
            "would each resolve to themselves; pass the tracking server's cluster address (--tracking-uri http://HOST:PORT)"
        )


def check_location(flag: str, uri: str, hosts: ClusterHosts, mountinfo: Optional[str] = None) -> None:
    """Raise :class:`ConfigError` when ``uri`` (given by ``flag``) is a folder that other hosts cannot read."""
    path = local_path(uri)
    if path is None or not hosts.several:
        return
    kind = filesystem_type(path, mountinfo)
    if kind not in SHARED_FILESYSTEMS:
        raise ConfigError(
            f"{flag} {uri}: a folder on this host's {kind} filesystem, which {hosts.others()} of this Ray cluster cannot read; "
            "pass a URI (s3://BUCKET/...) or a folder on a filesystem every host mounts (NFS, Lustre, GPFS, ...)"
        )


def check_reach(tracking_uri: str, data: str, storage: str, hosts: ClusterHosts) -> None:
    """Every check, in the order a user would fix them."""
    check_tracking(tracking_uri, hosts)
    check_location("--data", data, hosts)
    check_location("--storage-path", storage, hosts)
