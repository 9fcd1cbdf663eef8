"""``galaxy-da ingest``: the original data set's layout -> a Parquet dataset.

The original layout (Zenodo record 17434016, label tables as in
``../shared/data/galaxy-da-labels/``, beside a clone):

- source: a TNG50 folder of ``subhalo_<subhalo_id>.png`` and a label table
  ``source_galaxy_labels.csv|json`` (image_path, subhalo_id, mass, star_forming,
  has_agn, is_compact, metallicity, classification, is_metalrich);
- target, one survey per ingest (:data:`TARGET_LAYOUTS`, ``--target-survey``):

  - ``sdss``: a GZ2 folder of ``<asset_id>.jpg`` and ``gz2_galaxy_labels*.csv|json``
    whose ``subhalo_id`` column holds the file name (subhalo_id, objid, mass,
    star_forming, has_agn, classification; the JSON adds a nested ``metrics``
    dict of GZ2 vote fractions, flattened here to ``metrics.<name>`` columns);
  - ``desi``: a Galaxy Zoo DESI folder of png files and ``gz_desi_labels.csv``
    whose ``subhalo_id`` column holds the png name (subhalo_id, dataset_name, ra,
    dec, classification); a row whose ``dataset_name`` is not ``gz_desi`` is
    rejected (``other_dataset``).

  Without ``--target-survey`` the survey is told from the table: a
  ``dataset_name`` column means ``desi``, none means ``sdss``. The manifest's
  ``targets`` records the survey's facts (:mod:`galaxy_da.data.surveys`) and the
  class prior of the rows written; ``data.target`` names it.

Every row of a label table is either written or listed in ``<out>.rejects.csv``
with its reason; nothing is dropped silently. Rows keep label-file order and
the splits are seeded, so the same inputs give byte-identical shards.
All decoded images of both domains are held in memory until the splits are
known: N x 3 x size x size bytes (about 0.9 GB for the full tables at 224 px).
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
from PIL import Image, ImageFile
from tqdm import tqdm

from galaxy_da.data.ingest_layouts import CLASS_COLUMN, SOURCE_LAYOUT, TARGET_LAYOUTS, DomainLayout, detect_target_survey
from galaxy_da.data.label_tables import EXTRA_CELLS, coerce_column, field_text, infer_arrow_type, read_label_table, typed_value
from galaxy_da.data.schema import CLASS_NAMES, CORE_COLUMNS, DOMAINS
from galaxy_da.data.splits import assign_splits
from galaxy_da.data.surveys import SURVEYS
from galaxy_da.data.writer import DatasetWriter, sha256_file

IMAGE_FILE_COLUMN = "image_file"  # the image's file name inside its folder, added to every row
REJECT_COLUMNS = ("domain", "row", "object_id", "image", "reason", "detail")


# ---------------------------------------------------------------- images
class Rejection(Exception):
    """A label-table row that cannot become a dataset row; ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@contextmanager
def strict_truncation() -> Iterator[None]:
    """Make PIL raise on truncated files while decoding, whatever another library set."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def decode_image(path: Path, size: int | None) -> np.ndarray:
    """Read an image file as uint8 RGB of shape (3, H, W).

    ``verify()`` checks the file's structure (PNG checksums), ``load()`` decodes
    every pixel, so corrupt and truncated files raise. With ``size`` the image is
    resized to ``size x size``, bilinear and antialiased (PIL's filter support
    widens with the downscale factor), as the original code did.
    """
    if not path.is_file():
        raise Rejection("missing_image", f"no file {path}")
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image.load()
            rgb = image.convert("RGB")
        if size is not None:
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    # A corrupt file can surface as any exception type from PIL's format plugins.
    except Exception as error:  # noqa: BLE001
        raise Rejection("unreadable_image", f"{type(error).__name__}: {error}") from error
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))


# ---------------------------------------------------------------- report
@dataclass(frozen=True)
class Reject:
    """One label-table row left out. ``row`` is the 0-based record index (CSV line = row + 2)."""

    domain: str
    row: int
    object_id: str
    image: str
    reason: str
    detail: str


@dataclass
class IngestReport:
    """What ``ingest`` wrote and what it left out."""

    out: Path
    rejects_path: Path
    rows: dict[str, int]  # domain -> rows in its label table
    accepted: dict[str, dict[str, int]]  # domain -> class name -> rows written
    rejects: list[Reject]
    max_reject_fraction: float

    @property
    def reject_fraction(self) -> float:
        total = sum(self.rows.values())
        return len(self.rejects) / total if total else 0.0

    def rejects_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(r.reason for r in self.rejects).items()))

    def ok(self, max_reject_fraction: float | None = None) -> bool:
        limit = self.max_reject_fraction if max_reject_fraction is None else max_reject_fraction
        return self.reject_fraction <= limit

    def summary(self) -> str:
        verdict = "ok" if self.ok() else "TOO MANY REJECTS"
        lines = [
            f"ingested {self.out}: {sum(self.rows.values())} label rows, {len(self.rejects)} rejected "
            f"({self.reject_fraction:.2%}; limit {self.max_reject_fraction:.2%}: {verdict})"
        ]
        for domain, per_class in self.accepted.items():
            classes = ", ".join(f"{name} {count}" for name, count in per_class.items())
            lines.append(f"  {domain}: {sum(per_class.values())} of {self.rows[domain]} accepted ({classes})")
        if self.rejects:
            reasons = ", ".join(f"{reason} {count}" for reason, count in self.rejects_by_reason().items())
            lines.append(f"  rejects: {reasons}; listed in {self.rejects_path}")
        return "\n".join(lines)


def write_rejects(path: Path, rejects: list[Reject]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(REJECT_COLUMNS)
        writer.writerows([getattr(reject, column) for column in REJECT_COLUMNS] for reject in rejects)


# ---------------------------------------------------------------- one domain
@dataclass
class DomainRows:
    """The accepted rows of one domain, in label-file order."""

    object_ids: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    metadata: dict[str, list[Any]] = field(default_factory=dict)


def metadata_columns(layout: DomainLayout, columns: list[str]) -> dict[str, str]:
    """Map dataset metadata column -> label column, for every label column not consumed."""
    kept = {layout.renamed_columns.get(c, c): c for c in columns if c not in layout.dropped_columns}
    clashes = sorted(set(kept).intersection((*CORE_COLUMNS, IMAGE_FILE_COLUMN)))
    if clashes:
        raise ValueError(f"label columns {clashes} clash with dataset columns; rename them in the label file")
    return kept


class DomainIngest:
    """Validate and decode one domain's label table into ``DomainRows`` + rejects.

    The source's layout, or target survey ``survey``'s (:data:`TARGET_LAYOUTS`;
    default: the survey told from the table's columns).
    """

    def __init__(self, domain: str, images_dir: Path, labels_path: Path, survey: str | None = None):
        self.domain = domain
        self.images_dir = Path(images_dir)
        self.labels_path = Path(labels_path)
        columns, self.records = read_label_table(self.labels_path)
        self.survey = None if domain == "source" else survey or detect_target_survey(columns)
        if self.survey is not None and self.survey not in TARGET_LAYOUTS:
            raise ValueError(f"--target-survey {self.survey!r}: unknown; choose from {', '.join(TARGET_LAYOUTS)}")
        self.layout = SOURCE_LAYOUT if self.survey is None else TARGET_LAYOUTS[self.survey]
        missing = [c for c in self.layout.required_columns if c not in columns]
        if missing:
            raise ValueError(f"{self.labels_path}: missing column(s) {missing}; found {columns}")
        self.columns = metadata_columns(self.layout, columns)
        self.types = {IMAGE_FILE_COLUMN: pa.string()} | {
            name: infer_arrow_type([typed_value(r.get(column)) for r in self.records])
            for name, column in self.columns.items()
        }

    def run(self, size: int | None, image_shape: tuple[int, ...] | None, progress: bool) -> tuple[DomainRows, list[Reject], tuple[int, ...] | None]:
        """Decode every row; the first image fixes ``image_shape`` when it is still None."""
        rows = DomainRows(metadata={name: [] for name in self.types})
        rejects: list[Reject] = []
        first_row_of: dict[str, int] = {}
        for index, record in enumerate(tqdm(self.records, desc=f"{self.domain} images", unit="img", disable=not progress)):
            object_id, image_path = "", ""
            try:
                identifier = field_text(record.get(self.layout.id_column))
                if identifier is None:
                    raise Rejection("missing_field", f"empty {self.layout.id_column}")
                object_id = self.layout.object_id(identifier)
                image_file = self.layout.image_file(identifier)
                image_path = str(self.images_dir / image_file)
                if record.get(EXTRA_CELLS):
                    raise Rejection("malformed_row", f"{len(record[EXTRA_CELLS])} cell(s) beyond the header")
                if object_id in first_row_of:
                    raise Rejection("duplicate_id", f"same object_id as row {first_row_of[object_id]}")
                first_row_of[object_id] = index
                for column, expected in self.layout.fixed_values.items():
                    if field_text(record.get(column)) != expected:
                        raise Rejection("other_dataset", f"{column} {record.get(column)!r}, expected {expected!r}")
                class_name = field_text(record.get(CLASS_COLUMN))
                if class_name is None:
                    raise Rejection("missing_field", f"empty {CLASS_COLUMN}")
                if class_name.lower() not in CLASS_NAMES:
                    raise Rejection("unknown_class", f"{class_name!r} is not one of {', '.join(CLASS_NAMES)}")
                image = decode_image(self.images_dir / image_file, size)
                image_shape = image_shape or image.shape
                if image.shape != image_shape:
                    raise Rejection("wrong_shape", f"image shape {image.shape} != {tuple(image_shape)}")
            except Rejection as rejection:
                rejects.append(Reject(self.domain, index, object_id, image_path, rejection.reason, rejection.detail))
                continue
            rows.object_ids.append(object_id)
            rows.labels.append(CLASS_NAMES.index(class_name.lower()))
            rows.images.append(image)
            rows.metadata[IMAGE_FILE_COLUMN].append(image_file)
            for name, column in self.columns.items():
                rows.metadata[name].append(typed_value(record.get(column)))
        return rows, rejects, image_shape

    def provenance(self) -> dict[str, Any]:
        return {
            **({} if self.survey is None else {"survey": self.survey}),
            "images": str(self.images_dir),
            "labels": str(self.labels_path),
            "labels_file": self.labels_path.name,
            "labels_sha256": sha256_file(self.labels_path),
            "rows": len(self.records),
        }


# ---------------------------------------------------------------- entry point
def check_arguments(source_images: Path, target_images: Path, out: Path, *, size: int | None, shard_rows: int, overwrite: bool) -> None:
    """Refuse what would fail only after every image is decoded, naming the flag (and keyword) at fault."""
    for flag, folder in (("--source-images / source_images", source_images), ("--target-images / target_images", target_images)):
        if not Path(folder).is_dir():
            problem = "not a folder" if Path(folder).exists() else "no such folder"
            raise FileNotFoundError(f"{flag} {folder}: {problem}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass --overwrite / overwrite=True to replace it)")
    if size is not None and size < 1:
        raise ValueError(f"--size / size must be >= 1, got {size}")
    if shard_rows < 1:
        raise ValueError(f"--shard-rows / shard_rows must be >= 1, got {shard_rows}")


def ingest(
    source_images: Path,
    source_labels: Path,
    target_images: Path,
    target_labels: Path,
    out: Path,
    *,
    size: int | None = None,
    seed: int = 0,
    max_reject_fraction: float = 0.05,
    shard_rows: int = 1024,
    overwrite: bool = False,
    progress: bool = True,
    target_survey: str | None = None,
) -> IngestReport:
    """Convert the original image folders + label tables into a dataset at ``out``.

    The target table is read with the layout of ``target_survey`` (``sdss``,
    ``desi``; default: told from its columns) and written as that target survey.

    Bad rows never raise: they go to ``<out>.rejects.csv`` (columns
    domain, row, object_id, image, reason, detail) and to the manifest's
    provenance. Malformed tables (unknown file type, a missing id or
    classification column) raise ``ValueError``; a missing image folder, an
    existing ``out`` without ``overwrite`` and an impossible ``size`` or
    ``shard_rows`` raise before any image is read. Callers decide what a reject
    fraction above ``max_reject_fraction`` means (``report.ok()``). With
    ``progress`` (and no ``GALAXY_DA_NO_PROGRESS`` in the environment) a bar runs
    over each domain's images and ``report.summary()`` is printed at the end.
    """
    out = Path(out)
    check_arguments(source_images, target_images, out, size=size, shard_rows=shard_rows, overwrite=overwrite)
    progress = progress and not os.environ.get("GALAXY_DA_NO_PROGRESS")
    domains = {
        "source": DomainIngest("source", source_images, source_labels),
        "target": DomainIngest("target", target_images, target_labels, target_survey),
    }
    image_shape = (3, size, size) if size is not None else None
    decoded: dict[str, DomainRows] = {}
    rejects: list[Reject] = []
    with strict_truncation():
        for domain in DOMAINS:
            decoded[domain], domain_rejects, image_shape = domains[domain].run(size, image_shape, progress)
            rejects += domain_rejects
    if image_shape is None:
        raise ValueError("no label row has a readable image; nothing to ingest")

    report = IngestReport(
        out=out,
        rejects_path=out.with_name(out.name + ".rejects.csv"),
        rows={domain: len(domains[domain].records) for domain in DOMAINS},
        accepted={domain: {name: decoded[domain].labels.count(i) for i, name in enumerate(CLASS_NAMES)} for domain in DOMAINS},
        rejects=rejects,
        max_reject_fraction=max_reject_fraction,
    )
    provenance = {
        "generator": "galaxy-da ingest",
        "size": size,
        "seed": seed,
        **{domain: domains[domain].provenance() for domain in DOMAINS},
        "rejects": {"count": len(rejects), "by_reason": report.rejects_by_reason(), "file": report.rejects_path.name},
    }
    survey = domains["target"].survey
    accepted_counts = [report.accepted["target"][name] for name in CLASS_NAMES]
    with DatasetWriter(
        out,
        image_shape=image_shape,
        shard_rows=shard_rows,
        provenance=provenance,
        metadata={domain: domains[domain].types for domain in DOMAINS},
        overwrite=overwrite,
        targets={survey: SURVEYS[survey].manifest_entry(accepted_counts, CLASS_NAMES, labels_file=domains["target"].labels_path.name)},
    ) as writer:
        for domain in DOMAINS:
            rows = decoded.pop(domain)  # free each domain's images once written
            labels = np.asarray(rows.labels, dtype=np.int64)
            splits = assign_splits(labels, domain, seed)
            for start in range(0, len(rows.object_ids), shard_rows):
                chunk = slice(start, start + shard_rows)
                writer.add_batch(
                    domain,
                    rows.object_ids[chunk],
                    splits[chunk],
                    labels[chunk],
                    np.stack(rows.images[chunk]),
                    metadata={
                        name: coerce_column(values[chunk], domains[domain].types[name])
                        for name, values in rows.metadata.items()
                    },
                    target=domains[domain].survey,
                )
    write_rejects(report.rejects_path, rejects)
    if progress:
        print(report.summary())
    return report
