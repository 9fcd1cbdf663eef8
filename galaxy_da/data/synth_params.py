"""Every parameter of the synthetic benchmark: the source, each target survey, and the run.

A target survey's rendering (:class:`TargetParams`) starts from its published
facts (:data:`galaxy_da.data.surveys.SURVEYS`: bands, pixel scale, seeing, depth,
class counts) and adds what the renderer needs in its own units: a PSF FWHM
range around the median seeing, sky and read noise in electrons per pixel, the
galaxies' total r-band electrons, and the display stretch. Electrons are tied
to magnitudes by the faintest galaxy: ``flux_electrons[0]`` is a galaxy at the
sample's faint limit ``sample_r_limit``. The sky is then set so that a 5σ point
source at the median seeing has the survey's published depth
(:meth:`TargetParams.implied_depth_r`)::

    F_5σ = 5 sqrt((sky_r + read_noise²) · N_eff),   N_eff = π FWHM² / (2 ln 2)  (pixels; Gaussian PSF)
    depth = sample_r_limit + 2.5 log10(flux_electrons[0] / F_5σ)

========  ==========================================================================
target    rendering (``galaxy_da.data.synth``)
========  ==========================================================================
sdss      g r i at 0.396"/px, Kolmogorov PSF 1.2-1.6", sky 90/150/230 e-/px,
          galaxies 3.3 mag from r = 17.77, E / I / S = 13.7 / 8.4 / 77.9 %
desi      g r z at 0.262"/px, Kolmogorov PSF 1.0-1.5", sky 35/59/150 e-/px,
          galaxies 3.5 mag from r = 19.0, E / I / S = 59.3 / 3.1 / 37.6 %
========  ==========================================================================

Both samples' faint limits lie 4.9 mag above their depths, so the faintest
galaxy has about the same signal-to-noise in both; the DESI-like stamps differ in
finer pixels, better seeing, the z band (redder old populations), lower sky per
pixel, so galaxies of the same angular size span 1.5 times as many pixels, and,
most, in their class prior (a label shift).
These are chosen, not fitted: the DESI-like target is not yet calibrated with
``bench/calibrate_synth.py --target desi``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from galaxy_da.data.schema import CLASS_NAMES, DEFAULT_TARGET
from galaxy_da.data.surveys import SURVEYS, SurveyFacts, gaussian_effective_pixels
from galaxy_da.data.synth_models import GalaxyScale, MorphologyParams

MIN_SIZE = 16
SOURCE_STREAM = 0  # random-stream id of the source; each target survey has its own (TargetParams.stream)


@dataclass(frozen=True)
class DomainParams:
    """What differs between domains in the galaxies themselves."""

    class_counts: tuple[int, ...]  # the real label table's counts, E / I / S: the class prior
    half_light_radius: tuple[float, float]  # log-uniform, as a fraction of the stamp size
    elliptical_sersic_n: tuple[float, float]
    bulge_sersic_n: tuple[float, float]

    def galaxy_scale(self, size: int) -> GalaxyScale:
        return GalaxyScale(
            half_light_radius=(self.half_light_radius[0] * size, self.half_light_radius[1] * size),
            elliptical_sersic_n=self.elliptical_sersic_n,
            bulge_sersic_n=self.bulge_sersic_n,
        )


@dataclass(frozen=True)
class SourceParams(DomainParams):
    """TNG50-like renders: larger, more concentrated galaxies; per-image asinh stretch."""

    class_counts: tuple[int, ...] = (719, 208, 2305)
    half_light_radius: tuple[float, float] = (0.05, 0.13)
    elliptical_sersic_n: tuple[float, float] = (3.5, 5.5)
    bulge_sersic_n: tuple[float, float] = (2.0, 4.0)
    asinh_softening: float = 0.01  # softening as a fraction of the image's peak intensity


@dataclass(frozen=True)
class TargetParams(DomainParams):
    """A target survey's galaxies behind its PSF and sky noise, on one fixed Lupton scale (SDSS-like defaults)."""

    survey: str = DEFAULT_TARGET  # key of galaxy_da.data.surveys.SURVEYS: bands, pixel scale, depth
    stream: int = 1  # random-stream id: fixed per survey, so adding a survey never changes another's galaxies
    class_counts: tuple[int, ...] = SURVEYS["sdss"].class_counts
    half_light_radius: tuple[float, float] = (0.045, 0.11)
    elliptical_sersic_n: tuple[float, float] = (3.0, 4.5)
    bulge_sersic_n: tuple[float, float] = (1.5, 3.5)
    psf_fwhm_arcsec: tuple[float, float] = (1.2, 1.6)  # uniform; median 1.4" (SDSS r)
    sky_electrons: tuple[float, float, float] = (90.0, 150.0, 230.0)  # per pixel, in the survey's three bands
    read_noise_electrons: float = 5.0
    flux_electrons: tuple[float, float] = (30000.0, 600000.0)  # r-band total, log-uniform: r = 17.77 to 14.5
    band_weights: tuple[float, float, float] = (1.4, 1.0, 0.95)  # per band before the Lupton stretch
    lupton_softening: float = 150.0  # electrons, about 12 sky sigmas in r: sky noise stays faint
    lupton_white: float = 15000.0  # electrons of mean-band intensity that map to full scale

    @property
    def facts(self) -> SurveyFacts:
        return SURVEYS[self.survey]

    def implied_depth_r(self) -> float:
        """r-band 5σ point-source depth these electrons imply (module docstring); compare ``facts.depth_r_5sigma``."""
        median_fwhm_pixels = float(np.mean(self.psf_fwhm_arcsec)) / self.facts.pixel_scale_arcsec
        noise_variance = self.sky_electrons[1] + self.read_noise_electrons**2
        five_sigma = 5.0 * np.sqrt(noise_variance * gaussian_effective_pixels(median_fwhm_pixels))
        return float(self.facts.sample_r_limit + 2.5 * np.log10(self.flux_electrons[0] / five_sigma))


DESI_LIKE = TargetParams(
    survey="desi",
    stream=2,
    class_counts=SURVEYS["desi"].class_counts,
    # the SDSS-like galaxies' angular sizes on finer pixels: (0.045, 0.11) x 0.396 / 0.262
    half_light_radius=(0.068, 0.166),
    psf_fwhm_arcsec=(1.0, 1.5),  # median 1.25" (Legacy Surveys r)
    sky_electrons=(35.0, 59.0, 150.0),  # g, r, z: r set by the depth r = 23.9; z sky brightest
    flux_electrons=(30000.0, 750000.0),  # r = 19.0 to 15.5
    band_weights=(1.4, 1.0, 0.72),  # z weight: an old red population shows the colour it has in the SDSS-like composite
    lupton_softening=110.0,  # about 12 sky sigmas in r
)
TARGET_SURVEYS: dict[str, TargetParams] = {"sdss": TargetParams(), "desi": DESI_LIKE}


@dataclass(frozen=True)
class SynthParams:
    """Every generator parameter; recorded in the manifest's provenance."""

    seed: int = 0
    n_source: int = 2000
    n_target: int = 1600  # per target survey
    size: int = 65
    source: SourceParams = field(default_factory=SourceParams)
    targets: dict[str, TargetParams] = field(default_factory=lambda: dict(TARGET_SURVEYS))  # the surveys rendered
    morphology: MorphologyParams = field(default_factory=MorphologyParams)

    def count(self, domain: str) -> int:
        return {"source": self.n_source, "target": self.n_target}[domain]

    def part(self, domain: str, target: str | None) -> DomainParams:
        """The source's parameters, or target survey ``target``'s."""
        return self.source if domain == "source" else self.targets[target]

    def stream(self, domain: str, target: str | None) -> int:
        return SOURCE_STREAM if domain == "source" else self.targets[target].stream

    def with_targets(self, names: tuple[str, ...] | list[str]) -> "SynthParams":
        """These parameters rendering only the target surveys ``names`` (``--targets``), in that order."""
        unknown = [name for name in names if name not in self.targets]
        if unknown:
            raise ValueError(f"--targets: unknown target survey(s) {', '.join(unknown)}; choose from {', '.join(self.targets)}")
        return replace(self, targets={name: self.targets[name] for name in names})


def validate(params: SynthParams, workers: int = 1, shard_rows: int = 1) -> None:
    """Reject impossible options, naming the CLI flag at fault, before anything is rendered."""
    problems = {
        "--size": (params.size >= MIN_SIZE, f"must be >= {MIN_SIZE}, got {params.size}"),
        "--n-source": (params.n_source >= len(CLASS_NAMES), f"must be >= {len(CLASS_NAMES)} (one per class), got {params.n_source}"),
        "--n-target": (params.n_target >= len(CLASS_NAMES), f"must be >= {len(CLASS_NAMES)} (one per class), got {params.n_target}"),
        "--workers": (workers >= 1, f"must be >= 1, got {workers}"),
        "--shard-rows": (shard_rows >= 1, f"must be >= 1, got {shard_rows}"),
        "--targets": (bool(params.targets), f"must name at least one of {', '.join(TARGET_SURVEYS)}"),
    }
    failed = [f"{flag} {message}" for flag, (ok, message) in problems.items() if not ok]
    if failed:
        raise ValueError("; ".join(failed))
