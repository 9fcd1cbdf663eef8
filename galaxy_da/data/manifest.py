"""The manifest read (:func:`load`): its shape, its target surveys read alike from both schema versions, its self-consistency.

A version-2 manifest (what :class:`~galaxy_da.data.writer.DatasetWriter` writes)::

    counts:  {"source": {split: {class: n}}, "target": {survey: {split: {class: n}}}}
    targets: {survey: {what the survey is: its conditions, class prior, label table ...}}
    shards:  [{"path", "domain", "target" (target shards only: the survey), "rows", "sha256"}]

A version-1 manifest held one target: ``counts["target"]`` was ``{split: {class: n}}``
and there was no ``targets``. :func:`upgraded` reads it as a version-2 manifest
whose one survey is :data:`~galaxy_da.data.schema.DEFAULT_TARGET`, so every
dataset written before surveys keeps working with the default ``data.target``.

A manifest that is not JSON, not an object, or lacks a key either version needs is
a :class:`~galaxy_da.data.errors.DatasetError` naming the file and the JSON error's
position or the missing key.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Iterator, Optional

from galaxy_da.data.errors import DatasetError
from galaxy_da.data.schema import DEFAULT_TARGET, MANIFEST_NAME, READABLE_SCHEMA_VERSIONS

# The keys every reader uses, with their JSON type; ``targets`` is version 2's (version 1 had one target survey).
REQUIRED_KEYS: dict[str, type] = {"class_names": list, "image_shape": list, "counts": dict, "shards": list}
REQUIRED_V2_KEYS: dict[str, type] = {"targets": dict}
REQUIRED_COUNTS = ("source", "target")
REQUIRED_SHARD_KEYS = ("path", "domain", "rows", "sha256")
JSON_NAMES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean", type(None): "null"}


def load(raw: bytes, uri: str) -> dict[str, Any]:
    """The manifest bytes of dataset ``uri`` as a version-2 manifest, checked for shape and self-consistency."""
    name = f"{uri}/{MANIFEST_NAME}"
    try:
        manifest = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError (with its line and column) or bytes that are not UTF-8
        raise DatasetError(f"{name}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise DatasetError(f"{name}: expected a JSON object, got {JSON_NAMES[type(manifest)]}")
    version = manifest.get("schema_version")
    if version not in READABLE_SCHEMA_VERSIONS:
        raise DatasetError(f"{name}: schema_version {version} unsupported (this galaxy-da reads {', '.join(map(str, READABLE_SCHEMA_VERSIONS))})")
    check_shape(manifest, name, {**REQUIRED_KEYS, **(REQUIRED_V2_KEYS if version == 2 else {})})
    manifest = upgraded(manifest)
    check(manifest, uri)
    return manifest


def check_shape(manifest: dict[str, Any], name: str, required: dict[str, type]) -> None:
    """Refuse a manifest that lacks a key the readers use, naming the key (``counts.target``, ``shards[3].rows``)."""
    for key, kind in required.items():
        require(manifest, key, name, "", kind)
    for key in REQUIRED_COUNTS:
        require(manifest["counts"], key, name, "counts.", dict)
    for index, shard in enumerate(manifest["shards"]):
        if not isinstance(shard, dict):
            raise DatasetError(f"{name}: 'shards[{index}]' must be an object, got {JSON_NAMES[type(shard)]}")
        for key in REQUIRED_SHARD_KEYS:
            require(shard, key, name, f"shards[{index}].")


def require(node: dict[str, Any], key: str, name: str, where: str, kind: Optional[type] = None) -> None:
    """Refuse ``node`` (at ``where`` in manifest ``name``) without ``key``, or with a value not of JSON type ``kind``."""
    if key not in node:
        raise DatasetError(f"{name}: missing key '{where}{key}'")
    if kind is not None and not isinstance(node[key], kind):
        raise DatasetError(f"{name}: '{where}{key}' must be {JSON_NAMES[kind]}, got {JSON_NAMES[type(node[key])]}")


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
