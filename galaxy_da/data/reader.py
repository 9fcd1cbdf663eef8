"""Read a sharded dataset from a local path or any pyarrow filesystem URI.

Every shard read is checked against its manifest sha256 as it is read (the
bytes are fetched once, hashed, then parsed), on local disk and over a URI
(``s3://...``: another host's storage) alike, unless ``data.verify_hashes=false``. For an S3-compatible server other
than AWS, set ``AWS_ENDPOINT_URL`` (pyarrow reads it).

A dataset may hold several target surveys; a :class:`ShardDataset` serves the
one named by ``target`` (``data.target``; default
:data:`~galaxy_da.data.schema.DEFAULT_TARGET`) wherever a caller asks for the
``target`` domain, so training, selection and evaluation code never names a survey.

Two views enforce the target-label guard (target labels never reach training or model selection):

* :meth:`ShardDataset.training_view` serves source images with labels and
  target images **without** labels. It has no method that returns target labels.
* :meth:`ShardDataset.evaluation_view` is the one explicit door to target
  labels, for evaluation and analysis only.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from galaxy_da.data.errors import DatasetError
from galaxy_da.data import manifest as manifests
from galaxy_da.data.integrity import read_shard
from galaxy_da.data.schema import DEFAULT_TARGET, DOMAIN_SPLITS, MANIFEST_NAME

__all__ = ["DatasetError", "ImageSet", "LabelGuardError", "ShardDataset", "cached_reads"]

# (uri, manifest sha256, domain, target survey or None, split, with labels) -> ImageSet, while :func:`cached_reads` is active
_READ_CACHE: Optional[dict[tuple[str, str, str, Optional[str], str, bool], "ImageSet"]] = None


@contextlib.contextmanager
def cached_reads() -> Iterator[None]:
    """Within this block each split of each dataset is read (and sha256-checked) once per process.

    For a process that runs many trials and evaluations on the same dataset (a
    benchmark worker): the second read of a split returns the first read's
    :class:`ImageSet` (the same arrays; nothing in training or evaluation writes
    to them). The key includes the manifest's sha256, so a re-rendered dataset
    is read again. Outside the block every read goes to the shards.
    """
    global _READ_CACHE
    outer, _READ_CACHE = _READ_CACHE, {} if _READ_CACHE is None else _READ_CACHE
    try:
        yield
    finally:
        _READ_CACHE = outer


class LabelGuardError(PermissionError):
    """Target labels were requested outside evaluation."""


@dataclass(frozen=True)
class ImageSet:
    """Images of one domain split. ``labels`` is None for unlabelled target data.

    images: (N, C, H, W) uint8; labels: (N,) int64 or None; object_ids: (N,) str.
    """

    images: np.ndarray
    labels: Optional[np.ndarray]
    object_ids: np.ndarray

    def __len__(self) -> int:
        return self.images.shape[0]


def decode_images(column: pa.ChunkedArray | pa.Array, image_shape: tuple[int, ...]) -> np.ndarray:
    """Fixed-size binary column -> (N, *image_shape) uint8, one memory copy.

    Each chunk's data buffer is viewed with ``np.frombuffer`` (no copy) and the
    views are concatenated into one contiguous array.
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    width = int(np.prod(image_shape))
    views = []
    for chunk in chunks:
        if chunk.null_count:
            raise DatasetError("image column holds nulls")
        data = np.frombuffer(chunk.buffers()[1], dtype=np.uint8)
        views.append(data[chunk.offset * width : (chunk.offset + len(chunk)) * width])
    flat = np.concatenate(views) if len(views) != 1 else views[0].copy()
    return flat.reshape(-1, *image_shape)

# The flags that render each dataset the configs name, keyed by its folder's name: data/quality (configs/benchmark.yaml,
# sweep_topk, sweep_schedules, ...) as bench/quality.py renders it, data/label_shift (configs/sweep_label_shift.yaml) as
# bench/label_shift_study.py does; data/synth (configs/smoke.yaml and the method configs) is synth's defaults.
SYNTH_RECIPES = {
    "quality": "--n-source 3000 --n-target 2500 --targets sdss",
    "label_shift": "--n-source 3000 --n-target 2500 --targets sdss desi",
}


def synth_command(uri: str) -> str:
    """The ``galaxy-da synth`` command that renders the dataset a config expects at ``uri`` (synth's defaults elsewhere)."""
    recipe = SYNTH_RECIPES.get(uri.rstrip("/").rsplit("/", 1)[-1])
    return f"galaxy-da synth --out {uri}" + (f" {recipe}" if recipe else "")


class ShardDataset:
    """A finished dataset: ``manifest.json`` + ``<domain>/part-NNNNN.parquet`` (target shards tagged with their survey).

    ``check_hashes``: every shard read is checked against the manifest's sha256
    (the bytes already read are hashed; no second read). ``verify``: check every
    shard now, as ``galaxy-da validate`` does. ``target``: the target survey the
    ``target`` domain means here; one the manifest does not hold is refused, in
    one line naming ``data.target`` and the surveys it does hold, at the first
    read of target rows or counts.
    """

    def __init__(self, uri: str, verify: bool = False, check_hashes: bool = True, target: str = DEFAULT_TARGET):
        self.uri = str(uri)
        self.requested_target = target
        self.check_hashes = check_hashes
        self.filesystem, self.root = pafs.FileSystem.from_uri(self.uri) if "://" in self.uri else (
            pafs.LocalFileSystem(),
            self.uri,
        )
        self.root = self.root.rstrip("/")
        if verify:
            self.verify()

    # ------------------------------------------------------------------ manifest
    def _read_bytes(self, relative: str) -> bytes:
        with self.filesystem.open_input_stream(f"{self.root}/{relative}") as stream:
            return stream.read()

    @cached_property
    def manifest_bytes(self) -> bytes:
        info = self.filesystem.get_file_info(f"{self.root}/{MANIFEST_NAME}")
        if info.type != pafs.FileType.File:
            partial = self.filesystem.get_file_info(f"{self.root}.partial")
            hint = " (a '.partial' folder exists: the write did not finish)" if partial.type != pafs.FileType.NotFound else ""
            hint = hint or f" (render one with `{synth_command(self.uri)}`, or point --data / data.path at a dataset)"
            raise DatasetError(f"{self.uri}: no {MANIFEST_NAME}; not a finished dataset{hint}")
        return self._read_bytes(MANIFEST_NAME)

    @cached_property
    def manifest(self) -> dict[str, Any]:
        """The manifest as version 2 (:mod:`galaxy_da.data.manifest`), checked for self-consistency."""
        return manifests.load(self.manifest_bytes, self.uri)

    @property
    def targets(self) -> dict[str, dict[str, Any]]:
        """Every target survey the dataset holds -> what its manifest records about it (conditions, class prior)."""
        return self.manifest["targets"]

    @property
    def target_survey(self) -> str:
        """The target survey this dataset's ``target`` domain serves; an unknown one raises :class:`DatasetError`."""
        if self.requested_target not in self.targets:
            raise manifests.unknown_target(self.uri, self.manifest, self.requested_target)
        return self.requested_target

    def _survey(self, domain: str) -> Optional[str]:
        return self.target_survey if domain == "target" else None

    @property
    def manifest_hash(self) -> str:
        return hashlib.sha256(self.manifest_bytes).hexdigest()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.manifest["image_shape"])

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])

    def counts(self, domain: str, split: str) -> list[int]:
        """Rows per class, from the manifest (labels are counts, not per-row access)."""
        by_split = self.manifest["counts"][domain]
        table = (by_split[self.target_survey] if domain == "target" else by_split)[split]
        return [table[name] for name in self.class_names]

    @property
    def remote(self) -> bool:
        return not isinstance(self.filesystem, pafs.LocalFileSystem)

    def verified_bytes(self, shard: dict[str, Any]) -> bytes:
        """A shard's bytes, checked against the manifest's sha256; the error names the shard."""
        return read_shard(self.filesystem, self.root, shard, self.uri)

    def verify(self) -> None:
        """Check every shard's sha256 against the manifest; name the first shard at fault."""
        for shard in self.manifest["shards"]:
            self.verified_bytes(shard)

    # ------------------------------------------------------------------ rows
    def read_table(self, domain: str, columns: list[str] | None = None) -> pa.Table:
        """The rows of every shard of ``domain`` (of the target survey, for ``target``), each checked as it is read when ``check_hashes``."""
        survey = self._survey(domain)
        shards = [s for s in self.manifest["shards"] if s["domain"] == domain and s.get("target") == survey]
        if not shards:
            raise DatasetError(f"{self.uri}: no shards for domain {domain!r}" + (f", target survey {survey!r}" if survey else ""))
        tables = []
        for shard in shards:
            data = read_shard(self.filesystem, self.root, shard, self.uri, check=self.check_hashes)
            try:
                tables.append(pq.read_table(pa.BufferReader(data), columns=columns))
            except (OSError, pa.ArrowException) as exc:
                raise DatasetError(f"{self.uri}/{shard['path']}: unreadable shard ({exc})") from None
        return pa.concat_tables(tables)

    def _image_set(self, domain: str, split: str, with_labels: bool) -> ImageSet:
        if _READ_CACHE is None:
            return self._read_image_set(domain, split, with_labels)
        key = (self.uri, self.manifest_hash, domain, self._survey(domain), split, with_labels)
        if key not in _READ_CACHE:
            _READ_CACHE[key] = self._read_image_set(domain, split, with_labels)
        return _READ_CACHE[key]

    def _read_image_set(self, domain: str, split: str, with_labels: bool) -> ImageSet:
        if split not in DOMAIN_SPLITS[domain]:
            raise ValueError(f"unknown split {split!r} for {domain}; expected one of {DOMAIN_SPLITS[domain]}")
        columns = ["object_id", "split", "image"] + (["label"] if with_labels else [])
        table = self.read_table(domain, columns)
        table = table.filter(pc.equal(table["split"], split))
        labels = table["label"].to_numpy().astype(np.int64) if with_labels else None
        return ImageSet(
            images=decode_images(table["image"], self.image_shape),
            labels=labels,
            object_ids=table["object_id"].to_numpy(zero_copy_only=False),
        )

    def training_view(self) -> "TrainingView":
        return TrainingView(self)

    def evaluation_view(self) -> "EvaluationView":
        return EvaluationView(self)


class TrainingView:
    """What training and model selection may see: no target labels, ever.

    Its public surface is source images with labels, target images without, and
    manifest facts that carry no label information (class names, image shape,
    manifest hash, split sizes). Its reference to the dataset is private: no public
    attribute leads to :meth:`ShardDataset.evaluation_view`.
    """

    def __init__(self, dataset: ShardDataset):
        self._dataset = dataset

    @property
    def uri(self) -> str:
        return self._dataset.uri

    @property
    def class_names(self) -> list[str]:
        return self._dataset.class_names

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self._dataset.image_shape

    @property
    def manifest_hash(self) -> str:
        return self._dataset.manifest_hash

    @property
    def target_survey(self) -> str:
        """The target survey's name (``data.target``); its class prior stays in the manifest, out of this view."""
        return self._dataset.target_survey

    def split_size(self, domain: str, split: str) -> int:
        """Galaxies in a split (all classes together: a size, not a class count)."""
        return sum(self._dataset.counts(domain, split))

    def source(self, split: str) -> ImageSet:
        return self._dataset._image_set("source", split, with_labels=True)

    def target(self, split: str = "adapt") -> ImageSet:
        """Target images of ``split``, labels withheld (``labels`` is None)."""
        return self._dataset._image_set("target", split, with_labels=False)

    def target_labels(self, *_: Any, **__: Any) -> None:
        raise LabelGuardError(
            "target labels are not available to training or model selection; "
            "use ShardDataset.evaluation_view() in evaluation code"
        )


class EvaluationView(TrainingView):
    """Evaluation only: labelled access to every split of both domains."""

    def labelled(self, domain: str, split: str) -> ImageSet:
        return self._dataset._image_set(domain, split, with_labels=True)


def open_dataset(uri: str, verify: bool = False, target: str = DEFAULT_TARGET) -> ShardDataset:
    return ShardDataset(uri, verify=verify, target=target)
