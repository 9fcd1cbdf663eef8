"""``galaxy-da ingest`` of the Galaxy Zoo DESI table's layout as a target survey: the real table, stand-in images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from galaxy_da.cli import main
from galaxy_da.data.errors import DatasetError
from galaxy_da.data.ingest import ingest
from galaxy_da.data.reader import ShardDataset
from galaxy_da.data.schema import CLASS_NAMES
from tests.test_ingest import first_rows_per_class, save_image, write_csv

PER_CLASS = 6
SIZE = 12


def stand_in_layout(root: Path, labels_dir: Path, per_class: int | None, width: int = 20) -> dict:
    """Real source and DESI label rows (a per-class subset, or all DESI rows), noise pngs under the real file names."""
    rng = np.random.default_rng(1)
    source_rows = first_rows_per_class(list(csv.DictReader(open(labels_dir / "source_galaxy_labels.csv"))), 3)
    desi_rows = list(csv.DictReader(open(labels_dir / "gz_desi_labels.csv")))
    desi_rows = first_rows_per_class(desi_rows, per_class) if per_class else desi_rows
    folders = {"source": root / "tng50", "desi": root / "desi"}
    for folder in folders.values():
        folder.mkdir()
    for row in source_rows:
        save_image(folders["source"] / f"subhalo_{row['subhalo_id']}.png", rng, width, width)
    for row in desi_rows:
        save_image(folders["desi"] / row["subhalo_id"], rng, width, width)
    return {"root": root, "folders": folders, "source_rows": source_rows, "desi_rows": desi_rows}


def write_tables(layout: dict, desi_rows: list[dict]) -> tuple[Path, Path]:
    root = layout["root"]
    write_csv(root / "source.csv", layout["source_rows"])
    write_csv(root / "gz_desi_labels.csv", desi_rows)
    return root / "source.csv", root / "gz_desi_labels.csv"


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A per-class subset with bad rows planted: a missing png, another dataset's row, an unknown class, a duplicate."""
    from tests.conftest import LABELS_DIR

    if not LABELS_DIR.is_dir():
        pytest.skip(f"the real label tables are not at {LABELS_DIR}")
    layout = stand_in_layout(tmp_path_factory.mktemp("desi"), LABELS_DIR, PER_CLASS)
    rows = [dict(row) for row in layout["desi_rows"]]
    (layout["folders"]["desi"] / rows[1]["subhalo_id"]).unlink()
    rows[2]["dataset_name"] = "gz2"
    rows[3]["classification"] = "merger"
    rows.append(dict(rows[4]))
    reasons = {1: "missing_image", 2: "other_dataset", 3: "unknown_class", len(rows) - 1: "duplicate_id"}
    source_labels, desi_labels = write_tables(layout, rows)
    return {**layout, "rows": rows, "reasons": reasons, "source_labels": source_labels, "desi_labels": desi_labels}


def test_the_desi_layout_is_told_from_its_columns_and_bad_rows_are_reported(planted, tmp_path, capsys):
    out = tmp_path / "ds"
    code = main([
        "ingest", "--source-images", str(planted["folders"]["source"]), "--source-labels", str(planted["source_labels"]),
        "--target-images", str(planted["folders"]["desi"]), "--target-labels", str(planted["desi_labels"]),
        "--out", str(out), "--size", str(SIZE), "--max-reject-fraction", "0.5",
    ])
    assert code == 0
    with open(out.with_name("ds.rejects.csv"), newline="") as handle:
        rejects = {(row["domain"], int(row["row"])): row["reason"] for row in csv.DictReader(handle)}
    assert rejects == {("target", row): reason for row, reason in planted["reasons"].items()}
    assert "other_dataset 1" in capsys.readouterr().out  # the same summary line as for the SDSS table

    dataset = ShardDataset(str(out), target="desi", verify=True)
    kept = [row for i, row in enumerate(planted["rows"]) if i not in planted["reasons"]]
    table = dataset.read_table("target", ["object_id", "label_name", "image_file", "dataset_name", "ra", "dec"])
    assert table["object_id"].to_pylist() == [f"desi_{Path(row['subhalo_id']).stem}" for row in kept]
    assert table["label_name"].to_pylist() == [row["classification"] for row in kept]
    assert table["image_file"].to_pylist() == [row["subhalo_id"] for row in kept]
    assert set(table["dataset_name"].to_pylist()) == {"gz_desi"}
    assert table["ra"].to_pylist()[0] == pytest.approx(float(kept[0]["ra"]))


def test_the_manifest_records_the_desi_survey_and_the_prior_of_the_rows_written(planted, tmp_path):
    report = ingest(planted["folders"]["source"], planted["source_labels"], planted["folders"]["desi"], planted["desi_labels"],
                    tmp_path / "ds", size=SIZE, progress=False)
    manifest = ShardDataset(str(report.out), target="desi").manifest
    desi = manifest["targets"]["desi"]
    assert list(manifest["targets"]) == ["desi"]
    assert (desi["bands"], desi["pixel_scale_arcsec"], desi["labels_file"]) == (["g", "r", "z"], 0.262, "gz_desi_labels.csv")
    written = report.accepted["target"]
    assert desi["class_prior"] == pytest.approx({name: written[name] / sum(written.values()) for name in CLASS_NAMES})
    assert manifest["provenance"]["target"]["survey"] == "desi"
    with pytest.raises(DatasetError, match="data.target 'sdss'.*holds desi"):
        ShardDataset(str(report.out)).training_view().target("adapt")  # the default target is not in this dataset


def test_a_gz2_table_is_not_the_desi_layout(planted, tmp_path, labels_dir):
    with pytest.raises(ValueError, match=r"missing column\(s\) \['dataset_name'\]"):
        ingest(planted["folders"]["source"], planted["source_labels"], planted["folders"]["desi"], labels_dir / "gz2_galaxy_labels.csv",
               tmp_path / "ds", size=SIZE, progress=False, target_survey="desi")
    assert not (tmp_path / "ds").exists()


def test_every_row_of_the_real_desi_table_is_accepted(tmp_path, labels_dir):
    """All 10,000 rows, 4 px stand-ins: 5928 / 314 / 3758 written, nothing rejected."""
    layout = stand_in_layout(tmp_path, labels_dir, per_class=None, width=4)
    source_labels, desi_labels = write_tables(layout, layout["desi_rows"])
    report = ingest(layout["folders"]["source"], source_labels, layout["folders"]["desi"], desi_labels, tmp_path / "ds",
                    size=4, shard_rows=4096, progress=False)
    assert report.rejects == []
    assert report.accepted["target"] == {"elliptical": 5928, "irregular": 314, "spiral": 3758}
    prior = json.loads((tmp_path / "ds" / "manifest.json").read_text())["targets"]["desi"]["class_prior"]
    assert [round(100 * prior[name], 1) for name in CLASS_NAMES] == [59.3, 3.1, 37.6]
