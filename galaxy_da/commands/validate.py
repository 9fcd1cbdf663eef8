"""``galaxy-da validate``: check every shard's sha256 against the manifest."""

from __future__ import annotations

import argparse
import sys

from galaxy_da.commands.summary import add_dataset_argument


def configure(parser: argparse.ArgumentParser) -> None:
    add_dataset_argument(parser)


def run(args: argparse.Namespace) -> int:
    from galaxy_da.data.reader import DatasetError, ShardDataset

    try:
        dataset = ShardDataset(args.data, verify=True)
    except DatasetError as exc:
        print(f"INVALID: {exc}", file=sys.stderr)
        return 1
    print(f"OK: {len(dataset.manifest['shards'])} shards match {args.data}/manifest.json")
    return 0
