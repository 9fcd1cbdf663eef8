"""The target surveys galaxy-da knows: what each real survey and its label table are, with sources.

:data:`SURVEYS` maps a target name (``data.target``) to :class:`SurveyFacts`:
the survey's bands, pixel scale, median seeing and depth as published, and the
class counts of the original work's label table for it. The synthetic
benchmark (:mod:`galaxy_da.data.synth_params`) renders each survey from these
facts; ``galaxy-da ingest`` records them for real tables. Every dataset's
manifest carries them under ``targets``.

======  ====================  =====  ========  =======  ==========  ===============  =========================
name    survey                bands  "/px      seeing   5σ depth r  labelled sample  E / I / S (label table)
======  ====================  =====  ========  =======  ==========  ===============  =========================
sdss    SDSS, Galaxy Zoo 2    g r i  0.396     1.4"     22.7        r < 17.77        353 / 215 / 2000
desi    DESI Legacy Surveys,  g r z  0.262     1.25"    23.9        r < 19           5928 / 314 / 3758
        Galaxy Zoo DESI
======  ====================  =====  ========  =======  ==========  ===============  =========================

Sources:

- SDSS pixel scale 0.396"/px: the SDSS camera (Gunn et al. 1998, AJ 116, 3040).
  Median r-band seeing about 1.4" (SDSS DR7, Abazajian et al. 2009, ApJS 182, 543).
  Depth: York et al. (2000, AJ 120, 1579) give the 5σ point-source limit
  r' = 23.1 for 1" seeing; a background-limited point-source limit brightens by
  2.5 log10(FWHM ratio), 0.37 mag at 1.4", hence r ≈ 22.7.
  Sample: the main galaxy sample's r < 17.77 (Strauss et al. 2002, AJ 124, 1810);
  Galaxy Zoo 2 took its brightest part (Willett et al. 2013, MNRAS 435, 2835).
- DESI Legacy Imaging Surveys (Dey et al. 2019, AJ 157, 168): bands g, r, z;
  images and cutouts at 0.262"/px; median r-band seeing about 1.2-1.3" (1.25" here);
  5σ depth r = 23.9 for point sources (the survey's design depth r = 23.4 is for a
  0.45"-radius exponential galaxy; point sources reach about 0.5 mag deeper).
  Sample: Galaxy Zoo DESI (Walmsley et al. 2023, MNRAS 526, 4768) labels galaxies to about r < 19.
- Class counts: the label tables in ``../shared/data/galaxy-da-labels/`` (beside a clone, not in it)
  (``gz2_galaxy_labels.csv``, ``gz_desi_labels.csv``); ``tests/test_surveys.py``
  recounts them from the tables.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

# Approximate effective wavelengths (nm): SDSS g r i and DECam z (only the r-i-z spacing matters here).
BAND_WAVELENGTH_NM = {"g": 477.0, "r": 617.0, "i": 748.0, "z": 915.0}
MODEL_BANDS = ("g", "r", "i")  # the bands galaxy_da.data.synth_models gives each component's flux in


@dataclass(frozen=True)
class SurveyFacts:
    """One real target survey and the original work's label table for it (published values; see the module docstring)."""

    survey: str  # what it is, in words
    bands: tuple[str, str, str]  # blue to red; a colour composite shows them as (B, G, R) = bands
    pixel_scale_arcsec: float  # arcsec per pixel
    seeing_fwhm_arcsec: float  # median r-band PSF FWHM
    depth_r_5sigma: float  # AB magnitude of a 5σ point source in r, at the median seeing
    sample_r_limit: float  # the labelled galaxies' faint limit in r (AB)
    label_table: str  # file in ../shared/data/galaxy-da-labels/ (beside the clone)
    class_counts: tuple[int, int, int]  # elliptical, irregular, spiral rows of the label table

    def manifest_entry(self, class_counts: Sequence[int], class_names: Sequence[str], **extra: Any) -> dict[str, Any]:
        """What a dataset's manifest records about the survey: these facts, the class prior of
        ``class_counts`` (the rows the dataset holds, or the generator's prior) by class name, and ``extra``."""
        total = sum(class_counts)
        prior = {name: count / total if total else 0.0 for name, count in zip(class_names, class_counts)}
        return {**asdict(self), "class_prior": prior, **extra}


SURVEYS: dict[str, SurveyFacts] = {
    "sdss": SurveyFacts(
        survey="SDSS imaging, Galaxy Zoo 2 labels",
        bands=("g", "r", "i"),
        pixel_scale_arcsec=0.396,
        seeing_fwhm_arcsec=1.4,
        depth_r_5sigma=22.7,
        sample_r_limit=17.77,
        label_table="gz2_galaxy_labels.csv",
        class_counts=(353, 215, 2000),
    ),
    "desi": SurveyFacts(
        survey="DESI Legacy Imaging Surveys, Galaxy Zoo DESI labels",
        bands=("g", "r", "z"),
        pixel_scale_arcsec=0.262,
        seeing_fwhm_arcsec=1.25,
        depth_r_5sigma=23.9,
        sample_r_limit=19.0,
        label_table="gz_desi_labels.csv",
        class_counts=(5928, 314, 3758),
    ),
}


def band_fluxes(model_flux: np.ndarray, bands: tuple[str, ...]) -> np.ndarray:
    """A component's flux in ``bands`` from its flux in the model's g, r, i: (3,) -> (len(bands),).

    Between and beyond the model's bands the spectrum is a power law through the
    two nearest of them: ``ln f(λ) = ln f_a + (ln f_b - ln f_a) ln(λ/λ_a) / ln(λ_b/λ_a)``
    (g-r below r, r-i above), so z extrapolates the r-i colour. The model's own
    bands come back unchanged (no round trip through logarithms).
    """
    if tuple(bands) == MODEL_BANDS:
        return model_flux
    log_flux = np.log(np.maximum(model_flux, 1e-30))
    model_wavelength = np.log([BAND_WAVELENGTH_NM[b] for b in MODEL_BANDS])
    out = []
    for band in bands:
        x = np.log(BAND_WAVELENGTH_NM[band])
        a = 0 if x <= model_wavelength[1] else 1  # the segment: (g, r) or (r, i)
        slope = (log_flux[a + 1] - log_flux[a]) / (model_wavelength[a + 1] - model_wavelength[a])
        out.append(np.exp(log_flux[a] + slope * (x - model_wavelength[a])))
    return np.asarray(out)


def gaussian_effective_pixels(fwhm_pixels: float) -> float:
    """Noise-equivalent area of a Gaussian PSF, ``4π σ² = π FWHM² / (2 ln 2)``, in pixels."""
    return float(np.pi * fwhm_pixels**2 / (2.0 * np.log(2.0)))
