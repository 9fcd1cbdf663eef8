"""Copy a finished dataset to any pyarrow filesystem URI (``s3://bucket/synth``), manifest last.

    galaxy-da upload data/synth s3://bucket/galaxy-da/synth        # AWS_ENDPOINT_URL for a non-AWS server

Every shard is checked against the manifest's sha256 before it is sent, and
the manifest is written only after every shard is in place, so an interrupted
upload never looks like a finished dataset (the reader refuses a folder
without ``manifest.json``). Readers check the sha256 again as they read.
"""

from __future__ import annotations

import pyarrow.fs as pafs

from galaxy_da.data.reader import ShardDataset
from galaxy_da.data.schema import MANIFEST_NAME


def upload(source: str, destination: str, overwrite: bool = False) -> str:
    """Copy the dataset at ``source`` (path or URI) to ``destination``; returns ``destination``."""
    if "://" not in destination:
        raise ValueError(f"{destination}: not a URI (for a local copy, write the dataset there directly)")
    dataset = ShardDataset(source)
    filesystem, root = pafs.FileSystem.from_uri(destination)
    root = root.rstrip("/")
    if filesystem.get_file_info(f"{root}/{MANIFEST_NAME}").type != pafs.FileType.NotFound and not overwrite:
        raise FileExistsError(f"{destination}: a dataset is already there (pass --overwrite to replace it)")
    filesystem.create_dir(root, recursive=True)
    for shard in dataset.manifest["shards"]:
        with filesystem.open_output_stream(f"{root}/{shard['path']}") as stream:
            stream.write(dataset.verified_bytes(shard))
    with filesystem.open_output_stream(f"{root}/{MANIFEST_NAME}") as stream:
        stream.write(dataset.manifest_bytes)
    return destination
