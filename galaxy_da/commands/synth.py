"""``galaxy-da synth``: render the GalSim benchmark (a source and one or more target surveys), or a preview of it.

``--out`` may be a URI (``s3://bucket/synth``): the dataset is rendered into a
temporary folder and uploaded (:mod:`galaxy_da.data.upload`), manifest last.
"""

from __future__ import annotations

import argparse

DEFAULT_DATA = "data/synth"


def configure(parser: argparse.ArgumentParser) -> None:
    from galaxy_da.data.synth_params import TARGET_SURVEYS, SynthParams

    defaults = SynthParams()
    parser.add_argument("--out", default=DEFAULT_DATA, help="dataset folder or URI (s3://...) to write (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="the dataset is byte-identical for a seed (default: %(default)s)")
    parser.add_argument("--n-source", type=int, default=defaults.n_source, help="TNG-like galaxies (default: %(default)s)")
    parser.add_argument("--n-target", type=int, default=defaults.n_target, help="galaxies per target survey (default: %(default)s)")
    parser.add_argument(
        "--targets", nargs="+", choices=list(TARGET_SURVEYS), default=list(TARGET_SURVEYS), metavar="SURVEY",
        help=f"target surveys to render: {', '.join(TARGET_SURVEYS)} (SDSS-like, DESI-like); data.target picks one (default: all)",
    )
    parser.add_argument("--size", type=int, default=defaults.size, help="stamp size in pixels; odd sizes suit steerable nets")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes; the dataset does not depend on them (default: %(default)s)")
    parser.add_argument("--shard-rows", type=int, default=1024, help="galaxies per Parquet shard (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    parser.add_argument("--preview", metavar="PNG", help="write a grid of examples per class and domain instead")


def run(args: argparse.Namespace) -> int:
    from galaxy_da.data import synth

    if args.preview:
        synth.preview(args.preview, seed=args.seed, size=args.size)
        print(f"preview written to {args.preview}")
        return 0
    from galaxy_da.commands.summary import dataset_summary

    def render(out: str) -> str:
        return str(synth.generate(
            out, seed=args.seed, n_source=args.n_source, n_target=args.n_target, size=args.size,
            workers=args.workers, shard_rows=args.shard_rows, overwrite=args.overwrite, targets=args.targets,
        ))

    if "://" in args.out:
        import tempfile

        from galaxy_da.data.upload import upload

        with tempfile.TemporaryDirectory(prefix="galaxy-da-synth-") as tmp:
            out = upload(render(f"{tmp}/data"), args.out, overwrite=args.overwrite)
    else:
        out = render(args.out)
    print(dataset_summary(out))
    return 0
