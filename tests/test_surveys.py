"""The target surveys' published facts: class counts recounted from the real label tables, depths implied by the rendering."""

from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest

from galaxy_da.data.schema import CLASS_NAMES
from galaxy_da.data.surveys import SURVEYS, band_fluxes
from galaxy_da.data.synth_params import TARGET_SURVEYS


@pytest.mark.parametrize("survey", sorted(SURVEYS))
def test_class_counts_are_those_of_the_real_label_table(labels_dir, survey):
    facts = SURVEYS[survey]
    with open(labels_dir / facts.label_table, newline="") as handle:
        counted = Counter(row["classification"] for row in csv.DictReader(handle))
    assert tuple(counted[name] for name in CLASS_NAMES) == facts.class_counts


def test_the_desi_table_is_a_label_shift_from_sdss():
    """59.3 / 3.1 / 37.6 % against 13.7 / 8.4 / 77.9 %: ellipticals from a seventh to three fifths."""
    shares = {name: np.asarray(SURVEYS[name].class_counts) / sum(SURVEYS[name].class_counts) for name in ("sdss", "desi")}
    assert np.round(100 * shares["desi"], 1).tolist() == [59.3, 3.1, 37.6]
    assert np.round(100 * shares["sdss"], 1).tolist() == [13.7, 8.4, 77.9]


@pytest.mark.parametrize("survey", sorted(TARGET_SURVEYS))
def test_rendering_implies_the_published_depth_and_seeing(survey):
    rendering = TARGET_SURVEYS[survey]
    assert rendering.implied_depth_r() == pytest.approx(rendering.facts.depth_r_5sigma, abs=0.15)
    assert np.mean(rendering.psf_fwhm_arcsec) == pytest.approx(rendering.facts.seeing_fwhm_arcsec, abs=0.05)
    assert rendering.survey == survey and rendering.class_counts == rendering.facts.class_counts


def test_streams_are_distinct():
    streams = [0] + [rendering.stream for rendering in TARGET_SURVEYS.values()]
    assert len(set(streams)) == len(streams)


def test_band_fluxes_keep_gri_and_extrapolate_z_along_the_r_i_colour():
    flux = np.array([0.45, 1.0, 1.30])
    assert band_fluxes(flux, ("g", "r", "i")) is flux
    g, r, z = band_fluxes(flux, ("g", "r", "z"))
    assert (g, r) == pytest.approx((0.45, 1.0))
    slope = np.log(1.30) / np.log(748.0 / 617.0)  # d ln f / d ln λ between r and i
    assert z == pytest.approx(np.exp(slope * np.log(915.0 / 617.0)))
    assert z > 1.30  # a red population is brighter still in z
