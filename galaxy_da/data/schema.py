"""The on-disk dataset format: names, splits and the Parquet row schema.

A dataset is a folder (or URI) holding ``manifest.json`` plus
``<domain>/part-NNNNN.parquet``. The target domain may hold several target
surveys (``sdss``, ``desi``, ...): each target shard's manifest entry names its
survey, and the config key ``data.target`` picks the one a trial adapts to.
One row per galaxy:

========== ===================== ==========================================
column     type                  meaning
========== ===================== ==========================================
object_id  string                unique within the dataset
domain     string                ``source`` or ``target``
split      string                source: train/val; target: adapt/test
label      int8                  index into ``manifest.class_names``
label_name string
image      fixed_size_binary     raw uint8 bytes, channels x height x width
...        any                   optional metadata (mass, star_forming, ...)
========== ===================== ==========================================

The image column is a fixed-size binary so that decoding a batch is a single
``np.frombuffer`` over the column's data buffer (a memory copy).
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 2  # 2: several target surveys (manifest ``targets``, counts per survey, shard ``target``)
READABLE_SCHEMA_VERSIONS = (1, 2)  # 1: one target survey, read as DEFAULT_TARGET (galaxy_da.data.manifest)
MANIFEST_NAME = "manifest.json"
CLASS_NAMES = ("elliptical", "irregular", "spiral")
DOMAIN_SPLITS = {"source": ("train", "val"), "target": ("adapt", "test")}
DOMAINS = tuple(DOMAIN_SPLITS)
CORE_COLUMNS = ("object_id", "domain", "split", "label", "label_name", "image")
DEFAULT_TARGET = "sdss"  # ``data.target``'s default: the SDSS-like (synth) or GZ2 (ingest) target
ORACLE_KIND = "target-as-source (oracle)"  # manifest provenance ``kind`` of a copy whose source labels are a target's


def trains_on_target_labels(manifest: dict) -> bool:
    """Whether a dataset's source domain is a target survey with its labels (an oracle copy: an upper bound only)."""
    return (manifest.get("provenance") or {}).get("kind") == ORACLE_KIND


def image_nbytes(image_shape: tuple[int, int, int]) -> int:
    channels, height, width = image_shape
    return channels * height * width


def row_schema(image_shape: tuple[int, int, int], metadata: dict[str, pa.DataType] | None = None) -> pa.Schema:
    fields = [
        pa.field("object_id", pa.string(), nullable=False),
        pa.field("domain", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("label", pa.int8(), nullable=False),
        pa.field("label_name", pa.string(), nullable=False),
        pa.field("image", pa.binary(image_nbytes(image_shape)), nullable=False),
    ]
    fields += [pa.field(name, dtype) for name, dtype in (metadata or {}).items()]
    return pa.schema(fields)
