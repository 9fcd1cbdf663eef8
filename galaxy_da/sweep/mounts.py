"""Is a local folder on a filesystem that other hosts mount too? Read from the kernel's mount table.

A sweep on several hosts may take ``--data`` or ``--storage-path`` as a plain
path only when every host sees the same folder there: a network or cluster
filesystem (NFS, Lustre, GPFS, ...). The mount that holds a path is the one
with the longest mount point above it in ``/proc/self/mountinfo``; its type
(the first field after `` - ``) says whether it is shared.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

MOUNTINFO = Path("/proc/self/mountinfo")
SHARED_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "beegfs", "ceph", "fuse.ceph", "glusterfs", "fuse.glusterfs",
    "panfs", "wekafs", "afs", "orangefs", "pvfs2", "quobyte", "fuse.quobyte", "fuse.juicefs", "fuse.sshfs",
    "fuse.s3fs", "fuse.gcsfuse", "fuse.mfs", "fuse.lizardfs", "fuse.rclone",
})


def _unescape(field: str) -> str:
    """A mountinfo path field: spaces, tabs, newlines and backslashes come as octal escapes (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda escape: chr(int(escape.group(1), 8)), field)


def mounts(mountinfo: str) -> dict[str, str]:
    """Mount point to filesystem type, from the text of ``/proc/self/mountinfo`` (later mounts cover earlier ones)."""
    table = {}
    for line in mountinfo.splitlines():
        fields, _, rest = line.partition(" - ")
        if rest:
            table[_unescape(fields.split()[4])] = rest.split()[0]
    return table


def filesystem_type(path: str, mountinfo: Optional[str] = None) -> str:
    """The type of the filesystem ``path`` is on (``ext4``, ``overlay``, ``nfs4``, ...); ``unknown`` without a mount table."""
    text = mountinfo if mountinfo is not None else (MOUNTINFO.read_text() if MOUNTINFO.exists() else "")
    table = mounts(text)
    where = Path(os.path.realpath(path))  # symlinks resolved; a folder not made yet is taken as written
    holders = [point for point in table if where == Path(point) or Path(point) in where.parents]
    return table[max(holders, key=len)] if holders else "unknown"
