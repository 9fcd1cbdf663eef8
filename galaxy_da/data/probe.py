"""Can this node list an object-store prefix? A cluster node's setup asks before it takes trials.

    python -m galaxy_da.data.probe s3://BUCKET/galaxy-da      # exit 0, or 1 with one line on stderr

The prefix is listed through the same pyarrow filesystem the shard reader uses
(:class:`~galaxy_da.data.reader.ShardDataset`), with the node's own credentials
(its IAM instance profile on AWS, or ``AWS_*`` from the node environment). A
node that cannot list it would fail every trial it takes, after minutes of
retries; ``cluster/gpu.yaml`` runs this in every node's setup so such a node
fails its setup instead, with the line that says why.
"""

from __future__ import annotations

import sys

import pyarrow.fs as pafs

HINT = ("give the node type an IamInstanceProfile that may read the bucket (cluster/gpu.yaml), "
        "or AWS credentials in ~/.galaxy-da.env")


def probe(uri: str) -> str | None:
    """``None`` when ``uri``'s prefix lists from here; else the one-line reason it does not."""
    try:
        filesystem, path = pafs.FileSystem.from_uri(uri)
        filesystem.get_file_info(pafs.FileSelector(path.rstrip("/"), allow_not_found=False))
    except (OSError, ValueError) as error:
        cause = " ".join(str(error).split())[:300]
        return f"{uri}: this node cannot list it ({type(error).__name__}: {cause}); {HINT}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or "://" not in args[0]:
        print("usage: python -m galaxy_da.data.probe s3://BUCKET/PREFIX", file=sys.stderr)
        return 2
    reason = probe(args[0])
    if reason:
        print(f"object-store probe: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
