"""Label tables (CSV or JSON records) and their cells: read, typed, and given an Arrow type."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

EXTRA_CELLS = "__extra_cells__"  # csv.DictReader's key for cells beyond the header
INT64_RANGE = (-(2**63), 2**63 - 1)


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted columns: ``{"metrics": {"odd_prob": p}}`` -> ``{"metrics.odd_prob": p}``."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, restkey=EXTRA_CELLS))


def _read_json(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        records = json.load(handle)
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"{path}: expected a JSON list of records (objects)")
    return [_flatten(record) for record in records]


LABEL_READERS: dict[str, Callable[[Path], list[dict[str, Any]]]] = {".csv": _read_csv, ".json": _read_json}


def read_label_table(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Return ``(columns, records)``: columns in first-appearance order, one dict per row."""
    path = Path(path)
    reader = LABEL_READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path}: unsupported label file type; expected one of {sorted(LABEL_READERS)}")
    records = reader(path)
    columns = list(dict.fromkeys(key for record in records for key in record if key != EXTRA_CELLS))
    return columns, records


def field_text(value: Any) -> str | None:
    """A core field as stripped text; ``None`` when missing or empty."""
    text = None if value is None else str(value).strip()
    return text or None


def typed_value(value: Any) -> Any:
    """A metadata cell as bool / int / float / str / None.

    Text (every CSV cell, and JSON strings) that spells a boolean
    (``true``/``false``, any case) or a number is read as one; empty text is None.
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text


def infer_arrow_type(values: list[Any]) -> pa.DataType:
    """The narrowest of bool / int64 / float64 that holds every non-null value, else string.

    Integers beyond int64 make a string column rather than a lossy float64 one.
    """
    present = [v for v in values if v is not None]
    kinds = {type(v) for v in present}
    if kinds == {bool}:
        return pa.bool_()
    if any(isinstance(v, int) and not INT64_RANGE[0] <= v <= INT64_RANGE[1] for v in present):
        return pa.string()
    if kinds == {int}:
        return pa.int64()
    if kinds and kinds <= {int, float}:
        return pa.float64()
    return pa.string()


def coerce_column(values: list[Any], arrow_type: pa.DataType) -> list[Any]:
    """Values ready for ``pa.array(values, arrow_type)`` (string columns stringify mixed values)."""
    if arrow_type == pa.string():
        return [None if v is None else str(v) for v in values]
    return values
