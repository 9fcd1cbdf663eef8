"""Shard integrity: every shard's bytes against the sha256 the manifest recorded when it was written.

Readers check the bytes they read anyway (:func:`read_shard`), so the check costs
one sha256 pass over memory and never a second read of the file; see
``BENCHMARKS.md`` for its share of a trial's data loading. A mismatch or an
unreadable file is a :class:`~galaxy_da.data.errors.DatasetError` naming the shard.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow.fs as pafs

from galaxy_da.data.errors import DatasetError


def read_shard(filesystem: pafs.FileSystem, root: str, shard: dict[str, Any], uri: str, check: bool = True) -> bytes:
    """The bytes of manifest entry ``shard`` (``path``, ``sha256``) under ``root``; checked unless ``check`` is False."""
    name = f"{uri}/{shard['path']}"
    try:
        with filesystem.open_input_stream(f"{root}/{shard['path']}") as stream:
            data = stream.read()
    except (FileNotFoundError, OSError) as exc:
        raise DatasetError(f"{name}: cannot read shard ({exc})") from None
    if check:
        digest = hashlib.sha256(data).hexdigest()
        if digest != shard["sha256"]:
            raise DatasetError(
                f"{name}: sha256 {digest[:12]}… does not match the manifest's {shard['sha256'][:12]}… "
                "(corrupted or modified shard)"
            )
    return data
