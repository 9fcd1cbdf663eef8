"""Stream galaxies into Parquet shards; write the manifest last.

The writer builds the dataset in ``<out>.partial`` and renames it to ``<out>``
only after every shard and the manifest are on disk, so a crashed or
interrupted write never looks like a finished dataset (the reader also refuses
a folder without ``manifest.json``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from galaxy_da.data.schema import CLASS_NAMES, DEFAULT_TARGET, DOMAIN_SPLITS, MANIFEST_NAME, SCHEMA_VERSION, row_schema

COMPRESSIONS = ("zstd", "lz4", "none")  # zstd: ~3x smaller; none: ~3x faster to read (bench/data_throughput.py)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class DatasetWriter:
    """Write a dataset folder: ``manifest.json`` + ``<domain>/part-NNNNN.parquet``.

    Usage::

        with DatasetWriter(out, image_shape=(3, 65, 65), provenance={...}, targets={"sdss": {...}, "desi": {...}}) as writer:
            writer.add_batch("source", object_ids, splits, labels, images)   # images: (N, C, H, W) uint8
            writer.add_batch("target", object_ids, splits, labels, images, target="desi")

    ``targets`` maps each target survey the dataset holds to what the manifest
    records about it (conditions, class prior, label table; JSON values); by
    default one survey, :data:`~galaxy_da.data.schema.DEFAULT_TARGET`, with
    nothing recorded. A target batch names its survey (``target=``), which may
    be left out when there is only one. Every survey's shards go to ``target/``,
    numbered across surveys; each shard's manifest entry names its survey. ``metadata`` maps a domain to
    ``{column: pyarrow type}`` for optional columns (every survey of the target
    domain shares them); rows then pass values for them in
    ``add_batch(..., metadata={column: values})``.
    """

    def __init__(
        self,
        out: str | Path,
        image_shape: tuple[int, int, int],
        class_names: Sequence[str] = CLASS_NAMES,
        shard_rows: int = 1024,
        provenance: dict[str, Any] | None = None,
        metadata: dict[str, dict[str, pa.DataType]] | None = None,
        overwrite: bool = False,
        compression: str = "zstd",
        targets: dict[str, dict[str, Any]] | None = None,
    ):
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
        self.compression = compression
        if shard_rows < 1:
            raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise FileExistsError(f"{self.out}: already exists (pass --overwrite / overwrite=True to replace it)")
        self.partial = self.out.with_name(self.out.name + ".partial")
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True)
        self.image_shape = tuple(int(v) for v in image_shape)
        self.class_names = list(class_names)
        self.shard_rows = shard_rows
        self.provenance = provenance or {}
        self.schemas = {domain: row_schema(self.image_shape, (metadata or {}).get(domain)) for domain in DOMAIN_SPLITS}
        self.targets = dict(targets if targets is not None else {DEFAULT_TARGET: {}})
        if not self.targets:
            raise ValueError("targets must name at least one target survey")
        # a part is (domain, survey): ("source", None), ("target", "sdss"), ...
        self._parts = [("source", None)] + [("target", survey) for survey in self.targets]
        self._buffers: dict[tuple[str, str | None], list[pa.RecordBatch]] = defaultdict(list)
        self._buffered_rows: dict[tuple[str, str | None], int] = defaultdict(int)
        self._shards: list[dict[str, Any]] = []
        self._counts: dict[tuple[str, str | None], dict[str, dict[str, int]]] = {
            (domain, survey): {split: {name: 0 for name in self.class_names} for split in DOMAIN_SPLITS[domain]}
            for domain, survey in self._parts
        }
        self._seen_ids: set[str] = set()

    # ------------------------------------------------------------------ writing
    def add_batch(
        self,
        domain: str,
        object_ids: Sequence[str],
        splits: Sequence[str],
        labels: Sequence[int],
        images: np.ndarray,
        metadata: dict[str, Sequence[Any]] | None = None,
        target: str | None = None,
    ) -> None:
        part = self._part(domain, target)
        images = np.ascontiguousarray(images)
        count = len(object_ids)
        if images.dtype != np.uint8 or images.shape != (count, *self.image_shape):
            raise ValueError(
                f"{domain}: images must be uint8 of shape {(count, *self.image_shape)}, "
                f"got {images.dtype} {images.shape}"
            )
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise ValueError(f"{domain}: labels must lie in [0, {len(self.class_names)}), got {labels.min()}..{labels.max()}")
        for split in set(splits):
            if split not in DOMAIN_SPLITS[domain]:
                raise ValueError(f"{domain}: unknown split {split!r}; expected one of {DOMAIN_SPLITS[domain]}")
        duplicates = self._seen_ids.intersection(object_ids)
        if duplicates or len(set(object_ids)) != count:
            raise ValueError(f"{domain}: duplicate object_id(s), e.g. {sorted(duplicates)[:3] or 'within the batch'}")
        self._seen_ids.update(object_ids)

        schema = self.schemas[domain]
        image_array = pa.FixedSizeBinaryArray.from_buffers(
            schema.field("image").type, count, [None, pa.py_buffer(images.reshape(-1))]
        ) if count else pa.array([], schema.field("image").type)
        columns = {
            "object_id": pa.array(list(object_ids), pa.string()),
            "domain": pa.array([domain] * count, pa.string()),
            "split": pa.array(list(splits), pa.string()),
            "label": pa.array(labels, pa.int8()),
            "label_name": pa.array([self.class_names[i] for i in labels], pa.string()),
            "image": image_array,
        }
        extra = metadata or {}
        expected_meta = [name for name in schema.names if name not in columns]
        if set(extra) != set(expected_meta):
            raise ValueError(f"{domain}: metadata columns {sorted(extra)} do not match the declared {sorted(expected_meta)}")
        for name in expected_meta:
            columns[name] = pa.array(list(extra[name]), schema.field(name).type)
        self._buffers[part].append(pa.RecordBatch.from_pydict(columns, schema=schema))
        self._buffered_rows[part] += count
        for split, label in zip(splits, labels):
            self._counts[part][split][self.class_names[label]] += 1
        while self._buffered_rows[part] >= self.shard_rows:
            self._flush(part, self.shard_rows)

    def _part(self, domain: str, target: str | None) -> tuple[str, str | None]:
        """``(domain, survey)`` of a batch; a target batch may leave out its survey when there is only one."""
        if domain not in DOMAIN_SPLITS:
            raise ValueError(f"unknown domain {domain!r}; expected one of {list(DOMAIN_SPLITS)}")
        if domain == "source":
            if target is not None:
                raise ValueError(f"source rows belong to no target survey, got target={target!r}")
            return domain, None
        if target is None and len(self.targets) == 1:
            target = next(iter(self.targets))
        if target not in self.targets:
            raise ValueError(f"target rows need target= one of the declared surveys {list(self.targets)}, got {target!r}")
        return domain, target

    def _flush(self, part: tuple[str, str | None], rows: int) -> None:
        domain, survey = part
        table = pa.Table.from_batches(self._buffers[part], schema=self.schemas[domain])
        shard, rest = table.slice(0, rows), table.slice(rows)
        self._buffers[part] = rest.to_batches()
        self._buffered_rows[part] = rest.num_rows
        index = sum(1 for s in self._shards if s["domain"] == domain)  # target shards are numbered across surveys
        relative = f"{domain}/part-{index:05d}.parquet"
        path = self.partial / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(shard, path, compression=self.compression, row_group_size=rows, write_statistics=False)
        entry = {"path": relative, "domain": domain, "rows": shard.num_rows, "sha256": sha256_file(path)}
        self._shards.append(entry if survey is None else {**entry, "target": survey})

    # ------------------------------------------------------------------ finishing
    def close(self) -> Path:
        for part in self._parts:
            if self._buffered_rows[part]:
                self._flush(part, self._buffered_rows[part])
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "image_shape": list(self.image_shape),
            "image_dtype": "uint8",
            "compression": self.compression,
            "class_names": self.class_names,
            "counts": {
                "source": self._counts["source", None],
                "target": {survey: self._counts["target", survey] for survey in self.targets},
            },
            "metadata_columns": {
                domain: {f.name: str(f.type) for f in schema if f.name not in row_schema(self.image_shape).names}
                for domain, schema in self.schemas.items()
            },
            "provenance": self.provenance,
            "targets": self.targets,
            "shards": self._shards,
        }
        (self.partial / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if self.out.exists():
            shutil.rmtree(self.out)
        self.partial.rename(self.out)
        return self.out

    def abort(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
