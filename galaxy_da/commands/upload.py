"""``galaxy-da upload SRC URI``: copy a finished dataset to object storage, manifest last."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="dataset folder or URI")
    parser.add_argument("destination", help="pyarrow URI, e.g. s3://bucket/galaxy-da/synth (AWS_ENDPOINT_URL for a non-AWS server)")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already at the destination")


def run(args: argparse.Namespace) -> int:
    from galaxy_da.commands.summary import dataset_summary
    from galaxy_da.data.upload import upload

    print(dataset_summary(upload(args.source, args.destination, overwrite=args.overwrite)))
    return 0
