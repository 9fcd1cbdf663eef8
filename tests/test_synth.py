"""The GalSim two-domain synthetic benchmark: determinism, priors, format, image statistics."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest

from galaxy_da.data.schema import CLASS_NAMES, DOMAINS, MANIFEST_NAME
from galaxy_da.data.synth import SynthParams, class_counts, generate, preview, render_domain

N_SOURCE, N_TARGET, SIZE = 60, 50, 33


def _manifest(path):
    return json.loads((path / MANIFEST_NAME).read_text())


def _shard_hashes(path):
    return [(shard["path"], shard["sha256"]) for shard in _manifest(path)["shards"]]


def _rows(path):
    return {domain: pq.read_table(path / domain) for domain in DOMAINS}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "seed0"
    return generate(out, seed=0, n_source=N_SOURCE, n_target=N_TARGET, size=SIZE, shard_rows=32, progress=False)


def test_same_seed_is_byte_identical_whatever_the_workers(dataset, tmp_path):
    again = generate(tmp_path / "again", seed=0, n_source=N_SOURCE, n_target=N_TARGET, size=SIZE, shard_rows=32,
                     workers=2, progress=False)
    assert _shard_hashes(again) == _shard_hashes(dataset)
    assert len(_shard_hashes(dataset)) == 4  # 60 -> 32 + 28, 50 -> 32 + 18


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


def test_class_counts_follow_the_priors(dataset):
    manifest = _manifest(dataset)
    params = SynthParams()
    for domain, n, prior in [("source", N_SOURCE, params.source.class_counts), ("target", N_TARGET, params.target.class_counts)]:
        per_class = {name: sum(split[name] for split in manifest["counts"][domain].values()) for name in CLASS_NAMES}
        expected = n * np.asarray(prior) / sum(prior)
        assert sum(per_class.values()) == n
        assert np.all(np.abs(np.array([per_class[name] for name in CLASS_NAMES]) - expected) <= 1), (domain, per_class)


def test_manifest_counts_match_the_rows(dataset):
    manifest = _manifest(dataset)
    for domain, table in _rows(dataset).items():
        rows = Counter(zip(table["split"].to_pylist(), table["label_name"].to_pylist()))
        declared = {(split, name): count for split, names in manifest["counts"][domain].items() for name, count in names.items() if count}
        assert dict(rows) == declared
    assert manifest["provenance"]["generator"] == "galaxy_da.synth"
    assert manifest["provenance"]["size"] == SIZE
    assert manifest["provenance"]["target"]["sky_electrons"] == [90.0, 150.0, 230.0]
    assert set(manifest["metadata_columns"]["target"]) == {"half_light_radius", "sersic_n", "axis_ratio", "flux", "psf_fwhm"}


def _images(dataset, domain):
    table = _rows(dataset)[domain]
    raw = np.frombuffer(b"".join(table["image"].to_pylist()), dtype=np.uint8)
    return raw.reshape(table.num_rows, 3, SIZE, SIZE)


def test_odd_stamps_have_a_sensible_dynamic_range(dataset):
    assert _manifest(dataset)["image_shape"] == [3, SIZE, SIZE]
    for domain in DOMAINS:
        images = _images(dataset, domain)
        peaks = images.reshape(len(images), -1).max(axis=1)
        assert np.all(peaks >= 40), f"{domain}: a blank stamp"
        assert np.mean(images == 255) < 0.01, f"{domain}: saturated"
        assert np.mean(images == 0) < 0.9


def _background_high_frequency_energy(images: np.ndarray, rows: int = 6) -> float:
    """Mean squared discrete Laplacian over the top and bottom ``rows`` (away from the galaxy's
    sharp core, so pixel noise dominates it)."""
    x = images.astype(np.float64)
    laplacian = 4 * x[..., 1:-1, 1:-1] - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2] - x[..., 1:-1, 2:]
    return float(np.mean(np.concatenate([laplacian[..., :rows, :], laplacian[..., -rows:, :]])))


def test_target_is_noisier_than_source(dataset):
    target, source = (_background_high_frequency_energy(_images(dataset, domain)) for domain in ("target", "source"))
    assert target > 5 * source


def test_source_background_is_clean_and_target_background_is_sky_noise(dataset):
    corner = (slice(None), slice(None), slice(0, 4), slice(0, 4))
    assert np.mean(_images(dataset, "source")[corner] <= 2) > 0.8
    target_corners = _images(dataset, "target")[corner].astype(float)
    assert target_corners.std() > 3


def test_target_galaxies_are_smaller_than_source_ones(dataset):
    tables = _rows(dataset)
    source_size = np.median(tables["source"]["half_light_radius"].to_numpy())
    target_size = np.median(tables["target"]["half_light_radius"].to_numpy())
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
    [({"size": 8}, "--size"), ({"n_source": 2}, "--n-source"), ({"n_target": 0}, "--n-target"), ({"workers": 0}, "--workers")],
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
