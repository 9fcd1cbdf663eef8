"""The GalSim synthetic benchmark (a source, SDSS-like and DESI-like targets): determinism, priors, format, image statistics."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from galaxy_da.data.reader import ShardDataset
from galaxy_da.data.schema import CLASS_NAMES, MANIFEST_NAME
from galaxy_da.data.surveys import SURVEYS
from galaxy_da.data.synth import SynthParams, class_counts, generate, preview, render_domain

N_SOURCE, N_TARGET, SIZE = 60, 50, 33
PARTS = ("source", "sdss", "desi")  # the source, then each target survey


def _manifest(path):
    return json.loads((path / MANIFEST_NAME).read_text())


def _shard_hashes(path):
    return [(shard["path"], shard["sha256"]) for shard in _manifest(path)["shards"]]


def _part_shards(path, part):
    return [s for s in _manifest(path)["shards"] if (s["domain"] == "source" if part == "source" else s.get("target") == part)]


def _rows(path):
    """part -> its rows, read from the shards the manifest lists for it."""
    return {part: pa.concat_tables([pq.read_table(path / s["path"]) for s in _part_shards(path, part)]) for part in PARTS}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "seed0"
    return generate(out, seed=0, n_source=N_SOURCE, n_target=N_TARGET, size=SIZE, shard_rows=32, progress=False)


def test_same_seed_is_byte_identical_whatever_the_workers(dataset, tmp_path):
    again = generate(tmp_path / "again", seed=0, n_source=N_SOURCE, n_target=N_TARGET, size=SIZE, shard_rows=32,
                     workers=2, progress=False)
    assert _shard_hashes(again) == _shard_hashes(dataset)
    assert len(_shard_hashes(dataset)) == 6  # 60 -> 32 + 28; 50 -> 32 + 18 for each target survey


def test_a_survey_renders_the_same_whichever_other_surveys_are_rendered(dataset, tmp_path):
    alone = generate(tmp_path / "desi_only", seed=0, n_source=N_SOURCE, n_target=N_TARGET, size=SIZE, shard_rows=32,
                     progress=False, targets=["desi"])
    assert list(_manifest(alone)["targets"]) == ["desi"]
    for part in ("source", "desi"):
        assert [s["sha256"] for s in _part_shards(alone, part)] == [s["sha256"] for s in _part_shards(dataset, part)]


def test_other_seed_differs(dataset, tmp_path):
    other = generate(tmp_path / "seed1", seed=1, n_source=N_SOURCE, n_target=N_TARGET, size=SIZE, shard_rows=32,
                     progress=False)
    assert all(a[1] != b[1] for a, b in zip(_shard_hashes(other), _shard_hashes(dataset)))


@pytest.mark.parametrize(
    ("n", "prior", "expected"),
    [(3232, (719, 208, 2305), [719, 208, 2305]), (2568, (353, 215, 2000), [353, 215, 2000]), (3, (719, 208, 2305), [1, 1, 1])],
)
def test_class_counts_reproduce_the_label_tables(n, prior, expected):
    assert class_counts(n, prior).tolist() == expected


def _declared_counts(manifest, part):
    return manifest["counts"]["source"] if part == "source" else manifest["counts"]["target"][part]


def test_class_counts_follow_the_priors(dataset):
    manifest = _manifest(dataset)
    params = SynthParams()
    for part, n, prior in [("source", N_SOURCE, params.source.class_counts), *((t, N_TARGET, params.targets[t].class_counts) for t in ("sdss", "desi"))]:
        per_class = {name: sum(split[name] for split in _declared_counts(manifest, part).values()) for name in CLASS_NAMES}
        expected = n * np.asarray(prior) / sum(prior)
        assert sum(per_class.values()) == n
        assert np.all(np.abs(np.array([per_class[name] for name in CLASS_NAMES]) - expected) <= 1), (part, per_class)


def test_rendered_desi_labels_follow_the_desi_table_prior(dataset):
    """The rows themselves (not the manifest's counts): about 59 / 3 / 38 %, far from SDSS-like's 14 / 8 / 78 %."""
    rows = _rows(dataset)
    for part in ("sdss", "desi"):
        labels = np.asarray(rows[part]["label"].to_pylist())
        share = np.bincount(labels, minlength=len(CLASS_NAMES)) / labels.size
        prior = np.asarray(SURVEYS[part].class_counts) / sum(SURVEYS[part].class_counts)
        assert np.abs(share - prior).max() <= 1.0 / N_TARGET + 1e-9, (part, share, prior)  # largest remainder: within one galaxy
    desi, sdss = (np.mean(np.asarray(rows[part]["label"].to_pylist()) == CLASS_NAMES.index("elliptical")) for part in ("desi", "sdss"))
    assert desi > 0.55 and sdss < 0.2


def test_manifest_counts_match_the_rows(dataset):
    manifest = _manifest(dataset)
    for part, table in _rows(dataset).items():
        rows = Counter(zip(table["split"].to_pylist(), table["label_name"].to_pylist()))
        declared = {(split, name): count for split, names in _declared_counts(manifest, part).items() for name, count in names.items() if count}
        assert dict(rows) == declared
    assert manifest["provenance"]["generator"] == "galaxy_da.synth"
    assert manifest["provenance"]["size"] == SIZE
    assert manifest["provenance"]["targets"]["sdss"]["sky_electrons"] == [90.0, 150.0, 230.0]
    assert set(manifest["metadata_columns"]["target"]) == {"half_light_radius", "sersic_n", "axis_ratio", "flux", "psf_fwhm"}


def test_manifest_records_each_surveys_conditions_and_prior(dataset):
    targets = _manifest(dataset)["targets"]
    assert sorted(targets) == ["desi", "sdss"]
    desi, sdss = targets["desi"], targets["sdss"]
    assert (desi["bands"], desi["pixel_scale_arcsec"], desi["depth_r_5sigma"]) == (["g", "r", "z"], 0.262, 23.9)
    assert (sdss["bands"], sdss["pixel_scale_arcsec"], sdss["depth_r_5sigma"]) == (["g", "r", "i"], 0.396, 22.7)
    assert desi["class_prior"] == pytest.approx({"elliptical": 0.5928, "irregular": 0.0314, "spiral": 0.3758})
    assert desi["rendering"]["psf_fwhm_arcsec"] == [1.0, 1.5] and desi["rendering"]["sky_electrons"] == [35.0, 59.0, 150.0]
    assert desi["implied_depth_r"] == pytest.approx(23.9, abs=0.15)
    assert ShardDataset(str(dataset), target="desi").targets == targets  # the reader serves the same record


def test_each_survey_is_seen_through_its_own_psf(dataset):
    rows = _rows(dataset)
    for part, (low, high) in (("sdss", (1.2, 1.6)), ("desi", (1.0, 1.5))):
        fwhm = rows[part]["psf_fwhm"].to_numpy()
        assert fwhm.min() >= low and fwhm.max() <= high, part


def _images(dataset, part):
    table = _rows(dataset)[part]
    raw = np.frombuffer(b"".join(table["image"].to_pylist()), dtype=np.uint8)
    return raw.reshape(table.num_rows, 3, SIZE, SIZE)


def test_odd_stamps_have_a_sensible_dynamic_range(dataset):
    assert _manifest(dataset)["image_shape"] == [3, SIZE, SIZE]
    for part in PARTS:
        images = _images(dataset, part)
        peaks = images.reshape(len(images), -1).max(axis=1)
        assert np.all(peaks >= 40), f"{part}: a blank stamp"
        assert np.mean(images == 255) < 0.01, f"{part}: saturated"
        assert np.mean(images == 0) < 0.9


def _background_high_frequency_energy(images: np.ndarray, rows: int = 6) -> float:
    """Mean squared discrete Laplacian over the top and bottom ``rows`` (away from the galaxy's
    sharp core, so pixel noise dominates it)."""
    x = images.astype(np.float64)
    laplacian = 4 * x[..., 1:-1, 1:-1] - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2] - x[..., 1:-1, 2:]
    return float(np.mean(np.concatenate([laplacian[..., :rows, :], laplacian[..., -rows:, :]])))


@pytest.mark.parametrize("survey", ["sdss", "desi"])
def test_target_is_noisier_than_source(dataset, survey):
    target, source = (_background_high_frequency_energy(_images(dataset, part)) for part in (survey, "source"))
    assert target > 5 * source


def test_source_background_is_clean_and_target_background_is_sky_noise(dataset):
    corner = (slice(None), slice(None), slice(0, 4), slice(0, 4))
    assert np.mean(_images(dataset, "source")[corner] <= 2) > 0.8
    for survey in ("sdss", "desi"):
        target_corners = _images(dataset, survey)[corner].astype(float)
        assert target_corners.std() > 3, survey


def test_target_galaxies_are_smaller_than_source_ones(dataset):
    tables = _rows(dataset)
    source_size = np.median(tables["source"]["half_light_radius"].to_numpy())
    target_size = np.median(tables["sdss"]["half_light_radius"].to_numpy())
    assert target_size < source_size


def test_render_domain_returns_labels_in_prior_proportions():
    params = SynthParams(n_source=40, size=17)
    images, labels, metadata = render_domain("source", params, progress=False)
    assert images.shape == (40, 3, 17, 17) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=3).tolist() == class_counts(40, params.source.class_counts).tolist()
    assert set(metadata) == {"half_light_radius", "sersic_n", "axis_ratio"}
    assert all(values.shape == (40,) for values in metadata.values())


@pytest.mark.parametrize(
    ("options", "flag"),
    [({"size": 8}, "--size"), ({"n_source": 2}, "--n-source"), ({"n_target": 0}, "--n-target"), ({"workers": 0}, "--workers"),
     ({"targets": ["hsc"]}, "--targets"), ({"targets": []}, "--targets")],
)
def test_invalid_options_name_the_flag(tmp_path, options, flag):
    with pytest.raises(ValueError, match=flag):
        generate(tmp_path / "bad", progress=False, **options)
    assert not (tmp_path / "bad").exists()


def test_existing_output_is_kept_without_overwrite(dataset):
    with pytest.raises(FileExistsError):
        generate(dataset, n_source=N_SOURCE, n_target=N_TARGET, size=SIZE, progress=False)


def test_preview_writes_a_png(tmp_path):
    path = preview(tmp_path / "preview.png", size=33, per_class=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000
