"""``galaxy-da ingest`` on the real label tables with stand-in images under the real file names."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageFile

from galaxy_da.data.ingest import Reject, infer_arrow_type, ingest, read_label_table, typed_value
from galaxy_da.data.reader import ShardDataset
from galaxy_da.data.schema import CLASS_NAMES
from galaxy_da.data.splits import assign_splits
from tests.conftest import LABELS_DIR

PER_CLASS = 12  # label rows kept per class and domain
SIZE = 16


# ---------------------------------------------------------------- the stand-in layout
@dataclass
class Layout:
    source_images: Path
    target_images: Path
    labels: dict[str, dict[str, Path]]  # format -> domain -> label file
    records: dict[str, dict[str, list[dict]]]  # format -> domain -> records as written
    planted: set[tuple[str, int, str]]  # (domain, row, reason)
    object_ids: dict[str, list[str]]  # domain -> ids expected in the dataset, label-file order
    classes: dict[str, list[str]]  # domain -> their class names


def first_rows_per_class(rows: list[dict], per_class: int) -> list[dict]:
    taken = {name: 0 for name in CLASS_NAMES}
    kept = []
    for row in rows:
        if taken[row["classification"]] < per_class:
            taken[row["classification"]] += 1
            kept.append(row)
    return kept


def save_image(path: Path, rng: np.random.Generator, width: int, height: int) -> bytes:
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG" if path.suffix == ".png" else "JPEG", quality=95)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def build_layout(root: Path, source_csv: Path, source_json: Path, target_csv: Path, target_json: Path, per_class: int | None) -> Layout:
    """Real label rows (a per-class subset, or all), seeded noise images under the real file names.

    With ``per_class`` set, bad rows are planted: a missing source image, a
    duplicated source id, a truncated target JPEG, an unknown target class,
    an empty target class, and a class spelt `` Spiral `` (accepted).
    """
    rng = np.random.default_rng(0)
    tables = {}
    for domain, csv_path, json_path in (("source", source_csv, source_json), ("target", target_csv, target_json)):
        csv_rows = list(csv.DictReader(open(csv_path)))
        json_by_id = {str(r["subhalo_id"]): r for r in json.load(open(json_path))}
        csv_rows = first_rows_per_class(csv_rows, per_class) if per_class else csv_rows
        tables[domain] = {"csv": csv_rows, "json": [json_by_id[r["subhalo_id"]] for r in csv_rows]}

    images = {"source": root / "tng50", "target": root / "gz2"}
    for folder in images.values():
        folder.mkdir()
    file_names = {
        "source": [f"subhalo_{r['subhalo_id']}.png" for r in tables["source"]["csv"]],
        "target": [r["subhalo_id"] for r in tables["target"]["csv"]],
    }
    for domain, names in file_names.items():
        for i, name in enumerate(names):
            width, height = (30, 20) if i % 5 == 4 else (24, 24)  # some off-size images exercise the resize
            save_image(images[domain] / name, rng, width, height)

    planted: set[tuple[str, int, str]] = set()
    if per_class:
        (images["source"] / file_names["source"][3]).unlink()
        planted.add(("source", 3, "missing_image"))
        for fmt in ("csv", "json"):
            tables["source"][fmt].append(dict(tables["source"][fmt][5]))
        planted.add(("source", len(tables["source"]["csv"]) - 1, "duplicate_id"))
        truncated = images["target"] / file_names["target"][2]
        truncated.write_bytes(truncated.read_bytes()[:-40])
        planted.add(("target", 2, "unreadable_image"))
        for row, class_text, reason in ((7, "lenticular", "unknown_class"), (8, "", "missing_field"), (9, " Spiral ", None)):
            for fmt in ("csv", "json"):
                tables["target"][fmt][row] = {**tables["target"][fmt][row], "classification": class_text}
            if reason:
                planted.add(("target", row, reason))

    labels = {fmt: {} for fmt in ("csv", "json")}
    for domain, per_format in tables.items():
        write_csv(root / f"{domain}.csv", per_format["csv"])
        (root / f"{domain}.json").write_text(json.dumps(per_format["json"], indent=1))
        labels["csv"][domain] = root / f"{domain}.csv"
        labels["json"][domain] = root / f"{domain}.json"

    bad_rows = {(domain, row) for domain, row, _ in planted}
    prefix = {"source": "tng50_", "target": "gz2_"}
    object_ids, classes = {}, {}
    for domain, rows in tables.items():
        kept = [(i, r) for i, r in enumerate(rows["csv"]) if (domain, i) not in bad_rows]
        object_ids[domain] = [prefix[domain] + Path(r["subhalo_id"]).stem for _, r in kept]
        classes[domain] = [r["classification"].strip().lower() for _, r in kept]
    records = {fmt: {domain: tables[domain][fmt] for domain in tables} for fmt in ("csv", "json")}
    return Layout(images["source"], images["target"], labels, records, planted, object_ids, classes)


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Layout:
    if not LABELS_DIR.is_dir():
        pytest.skip(f"the real label tables are not at {LABELS_DIR}")
    d = LABELS_DIR
    return build_layout(
        tmp_path_factory.mktemp("original"),
        d / "source_galaxy_labels.csv", d / "source_galaxy_labels.json",
        d / "gz2_galaxy_labels.csv", d / "gz2_galaxy_labels.json",
        per_class=PER_CLASS,
    )


def run(layout: Layout, out: Path, fmt: str = "csv", **kwargs):
    return ingest(
        layout.source_images, layout.labels[fmt]["source"], layout.target_images, layout.labels[fmt]["target"], out,
        progress=False, **{"size": SIZE, "shard_rows": 16, **kwargs},
    )


@pytest.fixture(scope="module", params=["csv", "json"])
def ingested(request, layout, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"ingested_{request.param}") / "ds"
    return request.param, run(layout, out, request.param)


# ---------------------------------------------------------------- rows in, rows out
def test_every_planted_row_is_rejected_with_its_reason(ingested, layout):
    fmt, report = ingested
    assert {(r.domain, r.row, r.reason) for r in report.rejects} == layout.planted
    duplicate = next(r for r in report.rejects if r.reason == "duplicate_id")
    assert duplicate.detail == "same object_id as row 5"
    missing = next(r for r in report.rejects if r.reason == "missing_image")
    assert missing.image == str(layout.source_images / f"subhalo_{layout.records[fmt]['source'][3]['subhalo_id']}.png")
    with open(report.rejects_path, newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [Reject(**{**row, "row": int(row["row"])}) for row in written] == report.rejects


def test_every_other_row_is_written_in_label_file_order(ingested, layout):
    _, report = ingested
    dataset = ShardDataset(str(report.out), verify=True)
    for domain in ("source", "target"):
        table = dataset.read_table(domain, ["object_id", "label_name"])
        assert table["object_id"].to_pylist() == layout.object_ids[domain]
        assert table["label_name"].to_pylist() == layout.classes[domain]
        assert report.accepted[domain] == {name: layout.classes[domain].count(name) for name in CLASS_NAMES}
        assert table.num_rows == len(layout.records["csv"][domain]) - sum(d == domain for d, _, _ in layout.planted)
    spelt_loosely = "gz2_" + Path(layout.records["csv"]["target"][9]["subhalo_id"]).stem  # class " Spiral "
    target = dataset.read_table("target", ["object_id", "label_name"]).to_pylist()
    assert {"object_id": spelt_loosely, "label_name": "spiral"} in target


def test_reject_fraction_and_limit(ingested, layout):
    _, report = ingested
    rows = sum(len(v) for v in layout.records["csv"].values())
    assert report.reject_fraction == pytest.approx(len(layout.planted) / rows)
    assert not report.ok(0.5 * report.reject_fraction) and report.ok(report.reject_fraction)
    assert report.ok() == (report.reject_fraction <= 0.05)
    summary = report.summary()
    assert "duplicate_id 1" in summary and "unknown_class 1" in summary and "TOO MANY REJECTS" in summary


def test_manifest_records_sources_hashes_and_rejects(ingested, layout):
    fmt, report = ingested
    manifest = ShardDataset(str(report.out)).manifest
    provenance = manifest["provenance"]
    assert manifest["image_shape"] == [3, SIZE, SIZE]
    assert provenance["rejects"]["count"] == len(layout.planted)
    assert provenance["rejects"]["by_reason"] == report.rejects_by_reason()
    assert provenance["source"]["labels_file"] == f"source.{fmt}"
    assert provenance["target"]["images"] == str(layout.target_images)
    from galaxy_da.data.writer import sha256_file

    assert provenance["target"]["labels_sha256"] == sha256_file(layout.labels[fmt]["target"])
    assert (provenance["size"], provenance["seed"]) == (SIZE, 0)


def test_splits_are_stratified_and_seeded(ingested, layout):
    _, report = ingested
    for domain in ("source", "target"):
        table = ShardDataset(str(report.out)).read_table(domain, ["split", "label"])
        labels = np.asarray(table["label"].to_pylist())
        assert table["split"].to_pylist() == assign_splits(labels, domain, seed=0).tolist()


# ---------------------------------------------------------------- metadata and pixels
def test_source_metadata_keeps_every_label_column(ingested, layout):
    fmt, report = ingested
    table = ShardDataset(str(report.out)).read_table("source")
    expected = {
        "image_file": pa.string(), "original_image_path": pa.string(), "subhalo_id": pa.int64(),
        "mass": pa.float64() if fmt == "json" else pa.int64(), "star_forming": pa.bool_(), "has_agn": pa.bool_(),
        "is_compact": pa.bool_(), "metallicity": pa.float64(), "is_metalrich": pa.int64(),
    }
    assert {name: table.schema.field(name).type for name in expected} == expected
    first = table.slice(0, 1).to_pylist()[0]  # subhalo_0.png,0,3682930000000,False,False,True,0.03570494,elliptical,1
    assert first["object_id"] == "tng50_0" and first["image_file"] == "subhalo_0.png"
    assert first["mass"] == 3682930000000 and first["metallicity"] == pytest.approx(0.03570494)
    assert (first["star_forming"], first["has_agn"], first["is_compact"], first["is_metalrich"]) == (False, False, True, 1)
    assert first["original_image_path"] == layout.records[fmt]["source"][0]["image_path"]


def test_target_metadata_and_flattened_gz2_metrics(ingested, layout):
    fmt, report = ingested
    table = ShardDataset(str(report.out)).read_table("target")
    first = table.slice(0, 1).to_pylist()[0]
    record = layout.records[fmt]["target"][0]
    assert first["object_id"] == f"gz2_{Path(record['subhalo_id']).stem}" and first["image_file"] == record["subhalo_id"]
    assert first["objid"] == int(record["objid"]) and table.schema.field("objid").type == pa.int64()
    assert first["mass"] == pytest.approx(float(record["mass"]))
    assert "subhalo_id" not in table.schema.names and "classification" not in table.schema.names
    metric_columns = sorted(n for n in table.schema.names if n.startswith("metrics."))
    if fmt == "json":
        assert metric_columns == sorted(f"metrics.{k}" for k in record["metrics"])
        assert first["metrics.smooth_prob"] == pytest.approx(record["metrics"]["smooth_prob"])
    else:
        assert metric_columns == []


def test_images_are_rgb_resized_bilinear(ingested, layout):
    fmt, report = ingested
    table = ShardDataset(str(report.out)).read_table("source", ["image_file", "image"])
    for index in (0, 4):  # a 24x24 and a 30x20 stand-in
        name = table["image_file"][index].as_py()
        expected = np.asarray(Image.open(layout.source_images / name).convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR))
        stored = np.frombuffer(table["image"][index].as_py(), np.uint8).reshape(3, SIZE, SIZE)
        assert np.array_equal(stored, expected.transpose(2, 0, 1))


# ---------------------------------------------------------------- determinism and options
def test_rerun_gives_byte_identical_shards(layout, tmp_path):
    out = tmp_path / "ds"
    run(layout, out)
    first = (out / "manifest.json").read_bytes()
    with pytest.raises(FileExistsError):
        run(layout, out)
    run(layout, out, overwrite=True)
    assert (out / "manifest.json").read_bytes() == first  # it holds every shard's sha256
    assert len(json.loads(first)["shards"]) > 2
    ShardDataset(str(out), verify=True)


def test_native_size_rejects_images_of_another_shape(layout, tmp_path):
    report = run(layout, tmp_path / "ds", size=None)
    wrong = {(r.domain, r.row) for r in report.rejects if r.reason == "wrong_shape"}
    # the 30x20 stand-ins, except rows already rejected for another reason (they keep that reason)
    folders = {"source": layout.source_images, "target": layout.target_images}
    names = {"source": lambda r: f"subhalo_{r['subhalo_id']}.png", "target": lambda r: r["subhalo_id"]}
    off_size = {
        (domain, i)
        for domain, rows in layout.records["csv"].items()
        for i, record in enumerate(rows)
        if (folders[domain] / names[domain](record)).exists() and Image.open(folders[domain] / names[domain](record)).size != (24, 24)
    }
    assert off_size and wrong == off_size - {(domain, row) for domain, row, _ in layout.planted}
    assert ShardDataset(str(report.out)).image_shape == (3, 24, 24)


def test_truncated_jpeg_is_caught_even_if_pil_was_told_to_load_truncated_files(layout, tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    report = run(layout, tmp_path / "ds")
    assert ("target", 2, "unreadable_image") in {(r.domain, r.row, r.reason) for r in report.rejects}
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_a_table_without_its_id_column_is_refused(layout, tmp_path):
    bad = tmp_path / "no_id.csv"
    bad.write_text("image_path,classification\nsubhalo_0.png,spiral\n")
    with pytest.raises(ValueError, match="missing column.*subhalo_id"):
        ingest(layout.source_images, bad, layout.target_images, layout.labels["csv"]["target"], tmp_path / "ds", progress=False)
    assert not (tmp_path / "ds").exists()


def test_malformed_csv_rows_are_rejected(layout, tmp_path):
    good = layout.records["csv"]["source"][0]
    header = ",".join(good)
    cells = ",".join(good.values())
    no_id = ",".join("" if k == "subhalo_id" else v for k, v in good.items())
    labels = tmp_path / "source.csv"
    labels.write_text(f"{header}\n{cells}\n{cells.replace('subhalo_0.png,0,', 'subhalo_1.png,1,')},extra\n{no_id}\n")
    report = ingest(layout.source_images, labels, layout.target_images, layout.labels["csv"]["target"], tmp_path / "ds", size=SIZE, progress=False)
    source_rejects = [(r.row, r.object_id, r.reason) for r in report.rejects if r.domain == "source"]
    assert source_rejects == [(1, "tng50_1", "malformed_row"), (2, "", "missing_field")]
    assert ShardDataset(str(report.out)).read_table("source", ["object_id"])["object_id"].to_pylist() == ["tng50_0"]


# ---------------------------------------------------------------- cell parsing
@pytest.mark.parametrize(
    ("text", "value"),
    [(" True ", True), ("false", False), ("42", 42), ("0.5", 0.5), ("1e3", 1000.0), ("", None), ("11248.jpg", "11248.jpg"), (7, 7)],
)
def test_typed_value(text, value):
    assert typed_value(text) == value and type(typed_value(text)) is type(value)


@pytest.mark.parametrize(
    ("values", "arrow_type"),
    [
        ([True, None, False], pa.bool_()),
        ([1, 2, None], pa.int64()),
        ([1, 2.5], pa.float64()),
        ([2**70], pa.string()),
        ([True, 1], pa.string()),
        (["a", 1], pa.string()),
        ([None], pa.string()),
    ],
)
def test_infer_arrow_type(values, arrow_type):
    assert infer_arrow_type(values) == arrow_type


def test_json_metrics_are_flattened(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps([{"subhalo_id": "1.jpg", "metrics": {"odd_prob": 0.5, "nested": {"x": 1}}}, {"subhalo_id": "2.jpg", "extra": True}]))
    columns, records = read_label_table(path)
    assert columns == ["subhalo_id", "metrics.odd_prob", "metrics.nested.x", "extra"]
    assert records[0]["metrics.nested.x"] == 1 and "extra" not in records[0]


# ---------------------------------------------------------------- the full real tables
def test_full_real_tables_parse_every_row(tmp_path):
    """All 3232 + 2568 real rows, 8 px stand-ins, CSV and JSON (about 8 s)."""
    if not LABELS_DIR.is_dir():
        pytest.skip(f"the real label tables are not at {LABELS_DIR}")
    d = LABELS_DIR
    layout = build_layout(
        tmp_path, d / "source_galaxy_labels.csv", d / "source_galaxy_labels.json",
        d / "gz2_galaxy_labels.csv", d / "gz2_galaxy_labels.json", per_class=None,
    )
    for fmt in ("csv", "json"):
        report = run(layout, tmp_path / f"ds_{fmt}", fmt, size=8, shard_rows=1024)
        assert report.rejects == [] and report.ok(0.0)
        assert report.accepted == {
            "source": {"elliptical": 719, "irregular": 208, "spiral": 2305},
            "target": {"elliptical": 353, "irregular": 215, "spiral": 2000},
        }
    metrics = ShardDataset(str(tmp_path / "ds_json")).read_table("target", ["metrics.odd_prob"])["metrics.odd_prob"]
    assert metrics.null_count == 0 and len(metrics) == 2568
