"""Images per second into a float training batch: shards vs PNG folder vs a bare copy.

All three paths serve the same rendered galaxies (the synthetic benchmark's
source and target stamps) at each size, in one run:

* ``shards``   read ``<domain>/part-*.parquet`` with the project reader, decode
               the image column, convert to normalised float32 batches of 64;
               once with zstd shards (the default) and once uncompressed;
* ``png``      decode one PNG per galaxy with PIL (``.convert("RGB")``), stack,
               the same float conversion: the original code's path;
* ``memcpy``   the limit: copy the same uint8 bytes already in memory, the same
               float conversion.

Run: ``python bench/data_throughput.py [--n 2000] [--sizes 64 128] [--json bench/results/data_throughput.json]``
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from galaxy_da.data.loader import ChannelStats, to_float
from galaxy_da.data.reader import ShardDataset, decode_images
from galaxy_da.data.splits import assign_splits
from galaxy_da.data.synth import SynthParams, render_domain
from galaxy_da.data.writer import DatasetWriter
from timing import best_of  # bench/, on sys.path when run as a script

BATCH = 64  # the training batch size (configs default)


def to_batches(images: np.ndarray, stats: ChannelStats) -> int:
    tensor = torch.from_numpy(images)
    affine = stats.affine()
    total = 0
    for start in range(0, tensor.shape[0], BATCH):
        total += to_float(tensor[start : start + BATCH], affine).shape[0]
    return total


def measure(size: int, n: int, workdir: Path, repeats: int) -> dict:
    params = SynthParams(n_source=n // 2, n_target=n - n // 2, size=size)
    rendered = {domain: render_domain(domain, params, workers=2, progress=False) for domain in ("source", "target")}
    images = np.concatenate([rendered[d][0] for d in rendered])
    stats = ChannelStats.of(images)

    shard_dirs = {}
    for compression in ("zstd", "none"):
        out = shard_dirs[compression] = workdir / f"shards{size}-{compression}"
        with DatasetWriter(out, images.shape[1:], shard_rows=1024, compression=compression) as writer:
            for domain, (domain_images, labels, _) in rendered.items():
                ids = [f"{domain}-{i}" for i in range(labels.size)]
                writer.add_batch(domain, ids, assign_splits(labels, domain, 0), labels, domain_images)
    png_dir = workdir / f"png{size}"
    png_dir.mkdir()
    paths = []
    for i, image in enumerate(images):
        path = png_dir / f"subhalo_{i}.png"
        Image.fromarray(image.transpose(1, 2, 0)).save(path)
        paths.append(path)

    def from_shards(compression: str) -> None:
        dataset = ShardDataset(str(shard_dirs[compression]))
        for domain in ("source", "target"):
            to_batches(decode_images(dataset.read_table(domain, ["image"])["image"], dataset.image_shape), stats)

    def from_png() -> None:
        decoded = np.stack([np.asarray(Image.open(p).convert("RGB")).transpose(2, 0, 1) for p in paths])
        to_batches(np.ascontiguousarray(decoded), stats)

    def from_memory() -> None:
        to_batches(images.copy(), stats)

    def bare_copy() -> None:
        images.copy()

    from_shards("zstd")  # warm the page cache for every file path
    from_shards("none")
    from_png()
    seconds = {
        "shards": best_of(lambda: from_shards("zstd"), repeats),
        "shards_uncompressed": best_of(lambda: from_shards("none"), repeats),
        "png": best_of(from_png, max(1, repeats // 2)),
        "memcpy_to_float": best_of(from_memory, repeats),
        "memcpy_bytes": best_of(bare_copy, repeats),
    }
    rates = {k: len(images) / v for k, v in seconds.items()}
    shard_bytes = sum(p.stat().st_size for p in shard_dirs["zstd"].rglob("*.parquet"))
    png_bytes = sum(p.stat().st_size for p in paths)
    return {
        "size": size,
        "images": len(images),
        "images_per_s": rates,
        "shards_vs_png": rates["shards"] / rates["png"],
        "uncompressed_shards_vs_png": rates["shards_uncompressed"] / rates["png"],
        "memcpy_to_float_vs_shards": rates["memcpy_to_float"] / rates["shards"],
        "memcpy_to_float_vs_uncompressed_shards": rates["memcpy_to_float"] / rates["shards_uncompressed"],
        "bytes_per_image": {"raw": int(images[0].nbytes), "shards_zstd": shard_bytes / len(images), "png": png_bytes / len(images)},
    }


def markdown(results: list[dict], command: str) -> str:
    lines = [
        "| size | images | zstd shards → float | uncompressed shards → float | PNG+PIL → float | memcpy → float (limit) | bare memcpy | shards / PNG (zstd · none) | limit / shards (zstd · none) | bytes/img raw · zstd · png |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rate = r["images_per_s"]
        b = r["bytes_per_image"]
        lines.append(
            f"| {r['size']} | {r['images']} | {rate['shards']:,.0f} | {rate['shards_uncompressed']:,.0f} | {rate['png']:,.0f} | "
            f"{rate['memcpy_to_float']:,.0f} | {rate['memcpy_bytes']:,.0f} | "
            f"{r['shards_vs_png']:.1f}x · {r['uncompressed_shards_vs_png']:.1f}x | "
            f"{r['memcpy_to_float_vs_shards']:.2f}x · {r['memcpy_to_float_vs_uncompressed_shards']:.2f}x | "
            f"{b['raw']:,} · {b['shards_zstd']:,.0f} · {b['png']:,.0f} |"
        )
    return f"`{command}`\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path("bench/results/data_throughput.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(size, args.n, Path(tmp), args.repeats) for size in args.sizes]
    command = f"python bench/data_throughput.py --n {args.n} --sizes {' '.join(map(str, args.sizes))}"
    payload = {"command": command, "machine": platform.processor() or platform.machine(), "torch_threads": 1, "results": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2))
    print(markdown(results, command))


if __name__ == "__main__":
    main()
