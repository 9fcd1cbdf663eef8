"""The manifest's target surveys, read alike from both schema versions, and its self-consistency check.

A version-2 manifest (what :class:`~galaxy_da.data.writer.DatasetWriter` writes)::

    counts:  {"source": {split: {class: n}}, "target": {survey: {split: {class: n}}}}
    targets: {survey: {what the survey is: its conditions, class prior, label table ...}}
    shards:  [{"path", "domain", "target" (target shards only: the survey), "rows", "sha256"}]

A version-1 manifest held one target: ``counts["target"]`` was ``{split: {class: n}}``
and there was no ``targets``. :func:`upgraded` reads it as a version-2 manifest
whose one survey is :data:`~galaxy_da.data.schema.DEFAULT_TARGET`, so every
dataset written before surveys keeps working with the default ``data.target``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterator, Optional

from galaxy_da.data.errors import DatasetError
from galaxy_da.data.schema import DEFAULT_TARGET, MANIFEST_NAME


def upgraded(manifest: dict[str, Any]) -> dict[str, Any]:
    """A version-1 manifest as version 2 (its one target named ``DEFAULT_TARGET``); version 2 unchanged."""
    if manifest.get("schema_version") != 1:
        return manifest
    return {
        **manifest,
        "counts": {**manifest["counts"], "target": {DEFAULT_TARGET: manifest["counts"]["target"]}},
        "targets": {DEFAULT_TARGET: {}},
        "shards": [{**shard, "target": DEFAULT_TARGET} if shard["domain"] == "target" else shard for shard in manifest["shards"]],
    }


def parts(manifest: dict[str, Any]) -> Iterator[tuple[str, Optional[str], dict[str, dict[str, int]]]]:
    """``(domain, survey or None, {split: {class: n}})`` for the source and each target survey."""
    yield "source", None, manifest["counts"]["source"]
    for survey, splits in manifest["counts"]["target"].items():
        yield "target", survey, splits


def check(manifest: dict[str, Any], uri: str) -> None:
    """Refuse a manifest that contradicts itself, naming the shard or survey at fault.

    Every target shard names a survey of ``targets``; ``counts`` has exactly those
    surveys; each part's shards hold as many rows as its counts say.
    """
    declared = list(manifest["targets"])
    if sorted(manifest["counts"]["target"]) != sorted(declared):
        raise DatasetError(
            f"{uri}/{MANIFEST_NAME}: counts hold target surveys {sorted(manifest['counts']['target'])}, "
            f"targets declares {sorted(declared)}"
        )
    rows: Counter = Counter()
    for shard in manifest["shards"]:
        survey = shard.get("target")
        if shard["domain"] == "target" and survey not in declared:
            raise DatasetError(f"{uri}/{shard['path']}: target survey {survey!r} is not one of the manifest's targets {declared}")
        rows[shard["domain"], survey] += shard["rows"]
    for domain, survey, splits in parts(manifest):
        expected = sum(n for per_class in splits.values() for n in per_class.values())
        if rows[domain, survey] != expected:
            name = domain if survey is None else f"{domain} {survey}"
            raise DatasetError(f"{uri}/{MANIFEST_NAME}: {name}: shards hold {rows[domain, survey]} rows, counts say {expected}")


def unknown_target(uri: str, manifest: dict[str, Any], target: str) -> DatasetError:
    """The one-line error for a ``data.target`` the dataset does not hold."""
    return DatasetError(f"data.target {target!r}: {uri} holds no such target survey; it holds {', '.join(manifest['targets'])}")
