"""What checking every shard's sha256 costs: a trial's and an evaluation's data loading, with and without.

Reads run exactly as in a trial (:func:`galaxy_da.trial_data.load_trial_data`: source
train and val, target adapt, statistics) and in ``galaxy-da eval`` (source val,
target test, target adapt), once with ``data.verify_hashes`` on (the default:
the bytes already read are hashed) and once off; the two settings alternate,
best of ``--repeats``. Also the bare sha256 throughput over the dataset's shards.

Run: ``python bench/shard_check.py --data data/quality [--repeats 7] [--json bench/results/shard_check.json]``
(``data/quality``: ``galaxy-da synth --out data/quality --n-source 3000 --n-target 2500 --targets sdss``, as bench/quality.py renders it)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
from pathlib import Path
from typing import Callable

from galaxy_da.config import load_config
from galaxy_da.data.reader import ShardDataset
from galaxy_da.trial_data import load_trial_data
from timing import best_of, seconds  # bench/, on sys.path when run as a script


def trial_load(data: str, check: bool) -> Callable[[], object]:
    cfg = load_config(None, {"data.path": data, "data.verify_hashes": check})
    return lambda: load_trial_data(cfg)


def eval_load(data: str, check: bool) -> Callable[[], object]:
    def read() -> None:
        view = ShardDataset(data, check_hashes=check).evaluation_view()
        view.labelled("source", "val"), view.labelled("target", "test"), view.target("adapt")

    return read


def hash_all(data: str) -> Callable[[], int]:
    dataset = ShardDataset(data)
    blobs = [(Path(data) / shard["path"]).read_bytes() for shard in dataset.manifest["shards"]]
    return lambda: sum(len(hashlib.sha256(blob).digest()) for blob in blobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/quality")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=Path("bench/results/shard_check.json"))
    args = parser.parse_args()

    manifest = ShardDataset(args.data).manifest
    shard_bytes = sum((Path(args.data) / shard["path"]).stat().st_size for shard in manifest["shards"])
    results = {"data": args.data, "shards": len(manifest["shards"]), "shard_mb": shard_bytes / 1e6, "machine": platform.machine()}
    for name, load in (("trial", trial_load), ("eval", eval_load)):
        on, off = load(args.data, True), load(args.data, False)
        on(), off()  # warm the page cache
        timings = {"on": [], "off": []}
        for _ in range(args.repeats):  # alternate, so drifting machine load hits both alike
            timings["on"].append(seconds(on))
            timings["off"].append(seconds(off))
        results[name] = {"checked_s": min(timings["on"]), "unchecked_s": min(timings["off"])}
        results[name]["overhead_s"] = results[name]["checked_s"] - results[name]["unchecked_s"]
    results["sha256_mb_per_s"] = shard_bytes / 1e6 / best_of(hash_all(args.data), args.repeats)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
