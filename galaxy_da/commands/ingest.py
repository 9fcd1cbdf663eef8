"""``galaxy-da ingest``: convert the original TNG50 / GZ2 (or Galaxy Zoo DESI) layout into shards."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    from galaxy_da.data.ingest import TARGET_LAYOUTS

    parser.add_argument("--source-images", required=True, type=Path, help="folder of subhalo_<id>.png (TNG50)")
    parser.add_argument("--source-labels", required=True, type=Path, help="source_galaxy_labels.csv or .json")
    parser.add_argument("--target-images", required=True, type=Path, help="folder of <asset_id>.jpg (GZ2) or of the GZ DESI pngs")
    parser.add_argument("--target-labels", required=True, type=Path, help="gz2_galaxy_labels*.csv or .json, or gz_desi_labels.csv")
    parser.add_argument(
        "--target-survey", choices=list(TARGET_LAYOUTS), default=None,
        help="the target table's layout and the survey it becomes (data.target): sdss (GZ2) or desi (GZ DESI); "
        "default: desi when the table has a dataset_name column, else sdss",
    )
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    parser.add_argument("--size", type=int, default=None, help="resize every image to SIZE x SIZE")
    parser.add_argument("--seed", type=int, default=0, help="split seed")
    parser.add_argument("--max-reject-fraction", type=float, default=0.05, help="fail (exit 1) when more rows than this are rejected (default: %(default)s)")
    parser.add_argument("--shard-rows", type=int, default=1024, help="galaxies per Parquet shard (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")


def run(args: argparse.Namespace) -> int:
    from galaxy_da.data.ingest import ingest

    report = ingest(
        args.source_images, args.source_labels, args.target_images, args.target_labels, args.out,
        size=args.size, seed=args.seed, max_reject_fraction=args.max_reject_fraction,
        shard_rows=args.shard_rows, overwrite=args.overwrite, target_survey=args.target_survey,
    )
    print(report.summary())
    if not report.ok(args.max_reject_fraction):
        print(
            f"error: {report.reject_fraction:.1%} of rows rejected, above --max-reject-fraction "
            f"{args.max_reject_fraction:.1%}", file=sys.stderr,
        )
        return 1
    return 0
