"""Shared fixtures: tiny seeded datasets written through the real writer."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GALAXY_DA_NO_PROGRESS", "1")
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
LABELS_DIR = SHARED / "data" / "galaxy-da-labels"


def blob_images(labels: np.ndarray, size: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Class-dependent toy stamps: a round blob (0), a clumpy blob (1), a bar (2)."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    images = np.empty((labels.size, 3, size, size), dtype=np.uint8)
    for i, label in enumerate(labels):
        radius = size / 6 * rng.uniform(0.8, 1.2)
        profile = np.exp(-(xx**2 + yy**2) / (2 * radius**2))
        if label == 1:
            cx, cy = rng.uniform(-size / 4, size / 4, 2)
            profile = profile + np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (radius / 3) ** 2))
        elif label == 2:
            profile = profile + np.exp(-(yy**2) / (2 * (radius / 4) ** 2) - xx**2 / (2 * (2 * radius) ** 2))
        stamp = profile[None] * np.array([0.6, 0.8, 1.0])[:, None, None] + noise * rng.standard_normal((3, size, size))
        images[i] = np.clip(stamp * 180 + 20, 0, 255).astype(np.uint8)
    return images


def write_toy_dataset(out: Path, n_source: int = 96, n_target: int = 80, size: int = 17, seed: int = 0, shard_rows: int = 40) -> Path:
    from galaxy_da.data.splits import assign_splits
    from galaxy_da.data.writer import DatasetWriter
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    with DatasetWriter(
        out,
        image_shape=(3, size, size),
        shard_rows=shard_rows,
        provenance={"generator": "tests.toy", "seed": seed},
        metadata={"source": {"mass": pa.float64()}, "target": {}},
    ) as writer:
        for domain, count, priors, noise in (("source", n_source, [0.22, 0.07, 0.71], 0.02), ("target", n_target, [0.14, 0.08, 0.78], 0.15)):
            labels = rng.choice(3, size=count, p=priors)
            labels[:3] = [0, 1, 2]
            splits = assign_splits(labels, domain, seed)
            ids = [f"{domain}_{i:05d}" for i in range(count)]
            meta = {"mass": rng.uniform(1e9, 1e12, count).tolist()} if domain == "source" else {}
            writer.add_batch(domain, ids, splits, labels, blob_images(labels, size, rng, noise), metadata=meta)
    return out


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory) -> Path:
    """96 source + 80 target 3x17x17 stamps, shards of 40 rows."""
    return write_toy_dataset(tmp_path_factory.mktemp("toy") / "toy")


@pytest.fixture(scope="session")
def toy_dataset_odd(tmp_path_factory) -> Path:
    """The same at 25 px (odd), for steerable backbones and training."""
    return write_toy_dataset(tmp_path_factory.mktemp("toy25") / "toy25", n_source=120, n_target=100, size=25)


@pytest.fixture(scope="session")
def study_smoke_data(tmp_path_factory) -> Path:
    """The studies' ``--smoke`` dataset (``bench/study.py``'s ``smoke_dataset``), rendered once for every study's smoke:
    the source and both target surveys (the label-shift study reads ``desi`` too; the others read ``sdss``)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from study import smoke_dataset

    return smoke_dataset(tmp_path_factory.mktemp("study_smoke"), ("sdss", "desi"))


@pytest.fixture
def smoke_out(study_smoke_data, tmp_path):
    """``smoke_out(name)``: a study's ``--out`` folder ``tmp_path/name`` holding a copy of the smoke dataset.

    A study renders its smoke dataset into ``<out>/data`` only when ``data/manifest.json`` is missing,
    so with the copy it skips the render. ``name`` ``""`` is ``tmp_path`` itself.
    """
    def make(name: str) -> Path:
        out = tmp_path / name
        shutil.copytree(study_smoke_data, out / "data")
        return out

    return make


@pytest.fixture
def labels_dir() -> Path:
    if not LABELS_DIR.is_dir():
        pytest.skip(f"the real label tables are not at {LABELS_DIR}")
    return LABELS_DIR


def tamper_with_shard(shard: Path) -> None:
    """Rewrite ``shard`` as valid Parquet with one pixel changed: a corruption no Parquet reader notices."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(shard)
    images = table["image"].to_pylist()
    images[0] = bytes([images[0][0] ^ 0xFF]) + images[0][1:]
    column = table.schema.get_field_index("image")
    pq.write_table(table.set_column(column, table.schema.field(column), pa.array(images, table.schema.field(column).type)), shard, compression="zstd")
