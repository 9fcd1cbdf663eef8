"""``galaxy-da synth``: the GalSim two-domain synthetic benchmark (the embedded default dataset).

Galaxies of three classes (:mod:`galaxy_da.data.synth_models`) are rendered in
g, r, i and stored as uint8 RGB stamps ``(3, size, size)`` with channels
``(i, r, g)``, as in SDSS colour composites:

========  ==================  =====================================================
domain    imitates            rendering
========  ==================  =====================================================
source    TNG50 renders       noiseless, no PSF (direct evaluation, no FFT),
                              per-image asinh stretch
target    SDSS gri cutouts    Kolmogorov PSF (FWHM 1.2-1.6 arcsec at 0.396 arcsec/px),
                              sky 90/150/230 e-/px, Poisson + read noise,
                              fixed-scale Lupton RGB (faint galaxies look faint)
========  ==================  =====================================================

Class counts follow the real label tables exactly (largest remainder), and the
domains differ in galaxy size and Sérsic index as well as in rendering. Every
galaxy is drawn from ``np.random.default_rng([seed, domain_id, index])``, so a
dataset is byte-identical for a given seed whatever the number of workers.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import galsim
import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from galaxy_da.data.schema import CLASS_NAMES, DOMAINS
from galaxy_da.data.splits import assign_splits
from galaxy_da.data.synth_models import CLASS_MODELS, Galaxy, GalaxyScale, MorphologyParams
from galaxy_da.data.writer import DatasetWriter

GENERATOR = "galaxy_da.synth"
MIN_SIZE = 16
TARGET_OVERSAMPLE = 2  # sub-pixels per axis: pixel integration before the PSF
CHUNK_ROWS = 64  # galaxies per worker task; the output does not depend on it


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
    """SDSS-like cutouts: smaller, fainter galaxies behind PSF and sky noise; one fixed Lupton scale."""

    class_counts: tuple[int, ...] = (353, 215, 2000)
    half_light_radius: tuple[float, float] = (0.045, 0.11)
    elliptical_sersic_n: tuple[float, float] = (3.0, 4.5)
    bulge_sersic_n: tuple[float, float] = (1.5, 3.5)
    psf_fwhm_arcsec: tuple[float, float] = (1.2, 1.6)
    sky_electrons: tuple[float, float, float] = (90.0, 150.0, 230.0)  # g, r, i per pixel
    read_noise_electrons: float = 5.0
    flux_electrons: tuple[float, float] = (30000.0, 600000.0)  # r-band total, log-uniform over 3.3 mag: bright enough for GZ2 (r < 17.8)
    band_weights: tuple[float, float, float] = (1.4, 1.0, 0.95)  # g, r, i before the Lupton stretch
    lupton_softening: float = 150.0  # electrons, about 12 sky sigmas in r: sky noise stays faint
    lupton_white: float = 15000.0  # electrons of mean-band intensity that map to full scale


@dataclass(frozen=True)
class SynthParams:
    """Every generator parameter; recorded in the manifest's provenance."""

    seed: int = 0
    n_source: int = 2000
    n_target: int = 1600
    size: int = 65
    pixel_scale: float = 0.396  # arcsec per pixel
    source: SourceParams = field(default_factory=SourceParams)
    target: TargetParams = field(default_factory=TargetParams)
    morphology: MorphologyParams = field(default_factory=MorphologyParams)

    def count(self, domain: str) -> int:
        return {"source": self.n_source, "target": self.n_target}[domain]

    def domain(self, domain: str) -> DomainParams:
        return {"source": self.source, "target": self.target}[domain]


def validate(params: SynthParams, workers: int = 1) -> None:
    """Reject impossible options, naming the CLI flag at fault."""
    problems = {
        "--size": (params.size >= MIN_SIZE, f"must be >= {MIN_SIZE}, got {params.size}"),
        "--n-source": (params.n_source >= len(CLASS_NAMES), f"must be >= {len(CLASS_NAMES)} (one per class), got {params.n_source}"),
        "--n-target": (params.n_target >= len(CLASS_NAMES), f"must be >= {len(CLASS_NAMES)} (one per class), got {params.n_target}"),
        "--workers": (workers >= 1, f"must be >= 1, got {workers}"),
    }
    failed = [f"{flag} {message}" for flag, (ok, message) in problems.items() if not ok]
    if failed:
        raise ValueError("; ".join(failed))


# ---------------------------------------------------------------------- labels
def class_counts(n: int, prior_counts: tuple[int, ...]) -> np.ndarray:
    """Split ``n`` into classes in the exact proportions of ``prior_counts``.

    Largest remainder: ``floor(n p_c)`` each, then one more to the largest
    fractional parts; every class keeps at least one galaxy when ``n >= C``.
    """
    prior = np.asarray(prior_counts, dtype=float) / sum(prior_counts)
    counts = np.floor(n * prior).astype(int)
    counts[np.argsort(-(n * prior - counts), kind="stable")[: n - counts.sum()]] += 1
    for empty in np.flatnonzero(counts == 0):
        counts[np.argmax(counts)] -= 1
        counts[empty] = 1
    return counts


def domain_labels(domain: str, params: SynthParams) -> np.ndarray:
    """Labels (N,) int64 in exact prior proportions, in a seeded order."""
    counts = class_counts(params.count(domain), params.domain(domain).class_counts)
    rng = np.random.default_rng([params.seed, DOMAINS.index(domain)])
    return rng.permutation(np.repeat(np.arange(len(CLASS_NAMES)), counts))


# ---------------------------------------------------------------------- rendering
def asinh_rgb(bands: np.ndarray, softening: float, white: float) -> np.ndarray:
    """Lupton et al. (2004) colour-preserving asinh stretch.

    ``bands`` (3, H, W) g, r, i; ``I`` = their mean. Returns RGB = (i, r, g) ·
    asinh(I/softening) / (I · asinh(white/softening)) as uint8 (3, H, W); a
    pixel whose brightest channel exceeds 1 is divided by it (hue kept).
    """
    intensity = np.maximum(bands.mean(axis=0), 1e-12 * white)
    gain = np.arcsinh(intensity / softening) / (intensity * np.arcsinh(white / softening))
    rgb = np.clip(bands[::-1] * gain, 0.0, None)
    rgb /= np.maximum(rgb.max(axis=0), 1.0)
    return np.round(rgb * 255.0).astype(np.uint8)


def _mix_bands(galaxy: Galaxy, draw: Callable[[galsim.GSObject], np.ndarray]) -> np.ndarray:
    """``band_b = sum_c flux[c, b] · draw(profile_c)`` -> (3, H, W)."""
    return sum(component.flux[:, None, None] * draw(component.profile)[None] for component in galaxy.components)


def _draw(profile: galsim.GSObject, size: int, offset: np.ndarray, oversample: int = 1) -> np.ndarray:
    """Point-sample ``profile`` (pixel units) on an ``oversample``-times finer grid, summed back to (size, size)."""
    fine = size * oversample
    image = profile.drawImage(nx=fine, ny=fine, scale=1.0 / oversample, offset=tuple(offset * oversample), method="no_pixel")
    return image.array.astype(np.float64).reshape(size, oversample, size, oversample).sum(axis=(1, 3))


def _fft_length(n: int) -> int:
    """Smallest 5-smooth integer >= n (fast FFT sizes)."""
    while True:
        rest = n
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return n
        n += 1


def convolve_same(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Linear 2-D convolution of (..., H, W) images with an odd (K, K) kernel, cropped to (..., H, W)."""
    height, width = images.shape[-2:]
    shape = (_fft_length(height + kernel.shape[0] - 1), _fft_length(width + kernel.shape[1] - 1))
    full = np.fft.irfft2(np.fft.rfft2(images, shape) * np.fft.rfft2(kernel, shape), shape)
    top, left = kernel.shape[0] // 2, kernel.shape[1] // 2
    return full[..., top : top + height, left : left + width]


def psf_kernel(fwhm_pixels: float, gsparams: galsim.GSParams) -> np.ndarray:
    """Kolmogorov PSF sampled on an odd grid of about ±3 FWHM, normalised to unit sum: (K, K)."""
    half = int(np.ceil(3.0 * fwhm_pixels))
    kernel = galsim.Kolmogorov(fwhm=fwhm_pixels, gsparams=gsparams).drawImage(
        nx=2 * half + 1, ny=2 * half + 1, scale=1.0, method="no_pixel"
    ).array.astype(np.float64)
    return kernel / kernel.sum()


def render_source(galaxy: Galaxy, rng: np.random.Generator, params: SynthParams) -> tuple[np.ndarray, dict[str, float]]:
    """TNG-like: noiseless, PSF-free direct evaluation at pixel centres, per-image asinh stretch."""
    offset = rng.uniform(-0.5, 0.5, size=2)
    bands = _mix_bands(galaxy, lambda profile: _draw(profile, params.size, offset))
    peak = float(bands.mean(axis=0).max())
    return asinh_rgb(bands, softening=params.source.asinh_softening * peak, white=peak), {}


def render_target(galaxy: Galaxy, rng: np.random.Generator, params: SynthParams) -> tuple[np.ndarray, dict[str, float]]:
    """SDSS-like: pixel-integrated (2x2 sub-samples), Kolmogorov PSF, sky + Poisson + read noise,
    sky-subtracted, fixed Lupton scale. The PSF is applied per band as one FFT convolution."""
    survey = params.target
    offset = rng.uniform(-0.5, 0.5, size=2)
    fwhm = float(rng.uniform(*survey.psf_fwhm_arcsec))
    flux = float(np.exp(rng.uniform(*np.log(survey.flux_electrons))))
    bands = flux * _mix_bands(galaxy, lambda profile: _draw(profile, params.size, offset, TARGET_OVERSAMPLE))
    kernel = psf_kernel(fwhm / params.pixel_scale, galaxy.components[0].profile.gsparams)
    bands = np.clip(convolve_same(bands, kernel), 0.0, None)
    sky = np.asarray(survey.sky_electrons)[:, None, None]
    counts = rng.poisson(bands + sky) + rng.normal(0.0, survey.read_noise_electrons, bands.shape) - sky
    weighted = counts * np.asarray(survey.band_weights)[:, None, None]
    image = asinh_rgb(weighted, softening=survey.lupton_softening, white=survey.lupton_white)
    return image, {"flux": flux, "psf_fwhm": fwhm}


DomainRenderer = Callable[[Galaxy, np.random.Generator, SynthParams], tuple[np.ndarray, dict[str, float]]]
DOMAIN_RENDERERS: dict[str, DomainRenderer] = {"source": render_source, "target": render_target}


def render_galaxy(domain: str, index: int, label: int, params: SynthParams) -> tuple[np.ndarray, dict[str, float]]:
    """One stamp: uint8 (3, size, size) and its metadata, seeded by ``(seed, domain, index)``."""
    rng = np.random.default_rng([params.seed, DOMAINS.index(domain), index])
    model = CLASS_MODELS[CLASS_NAMES[label]]
    galaxy = model(rng, params.domain(domain).galaxy_scale(params.size), params.morphology)
    image, extra = DOMAIN_RENDERERS[domain](galaxy, rng, params)
    return image, {
        "half_light_radius": galaxy.half_light_radius,
        "sersic_n": galaxy.sersic_n,
        "axis_ratio": galaxy.axis_ratio,
        **extra,
    }


def _render_chunk(task: tuple[str, int, np.ndarray, SynthParams]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    domain, start, labels, params = task
    rendered = [render_galaxy(domain, start + offset, int(label), params) for offset, label in enumerate(labels)]
    images = np.stack([image for image, _ in rendered])
    metadata = {key: np.array([meta[key] for _, meta in rendered], dtype=np.float32) for key in rendered[0][1]}
    return images, metadata


def render_domain(
    domain: str, params: SynthParams, workers: int = 1, progress: bool = True
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Render one domain: images uint8 (N, 3, H, W), labels int64 (N,), metadata {column: float32 (N,)}.

    Chunks of :data:`CHUNK_ROWS` galaxies go to ``workers`` processes and come
    back in order; each galaxy is seeded on its own, so the result does not
    depend on ``workers``.
    """
    validate(params, workers)
    labels = domain_labels(domain, params)
    tasks = [(domain, start, labels[start : start + CHUNK_ROWS], params) for start in range(0, labels.size, CHUNK_ROWS)]
    bar = tqdm(total=labels.size, desc=f"synth {domain}", unit="galaxy", disable=not progress)
    with bar, _task_map(workers) as mapper:
        chunks = []
        for chunk in mapper(_render_chunk, tasks):
            chunks.append(chunk)
            bar.update(len(chunk[0]))
    images = np.concatenate([images for images, _ in chunks])
    metadata = {key: np.concatenate([meta[key] for _, meta in chunks]) for key in chunks[0][1]}
    return images, labels, metadata


class _task_map:
    """Context manager yielding an ordered ``map``: in-process for one worker, a spawn pool otherwise."""

    def __init__(self, workers: int):
        self.pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None

    def __enter__(self) -> Callable:
        return self.pool.imap if self.pool else map

    def __exit__(self, *exc) -> None:
        if self.pool:
            self.pool.terminate()
            self.pool.join()


# ---------------------------------------------------------------------- dataset
def generate(
    out: str | Path,
    seed: int = 0,
    n_source: int = SynthParams.n_source,
    n_target: int = SynthParams.n_target,
    size: int = SynthParams.size,
    workers: int = 1,
    shard_rows: int = 1024,
    overwrite: bool = False,
    progress: bool = True,
    params: SynthParams | None = None,
) -> Path:
    """Render both domains, assign stratified seeded splits and write the dataset; returns its path.

    ``params`` overrides the defaults of every generator parameter; ``seed``,
    ``n_source``, ``n_target`` and ``size`` are then applied on top of it.
    """
    params = replace(params or SynthParams(), seed=seed, n_source=n_source, n_target=n_target, size=size)
    validate(params, workers)
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    rendered = {domain: render_domain(domain, params, workers, progress) for domain in DOMAINS}
    provenance = {**asdict(params), "generator": GENERATOR, "galsim_version": galsim.__version__}
    metadata_types = {domain: {key: pa.float32() for key in meta} for domain, (_, _, meta) in rendered.items()}
    with DatasetWriter(
        out, (3, params.size, params.size), shard_rows=shard_rows, provenance=provenance,
        metadata=metadata_types, overwrite=overwrite,
    ) as writer:
        for domain, (images, labels, meta) in rendered.items():
            object_ids = [f"synth-{domain}-{index:06d}" for index in range(labels.size)]
            splits = assign_splits(labels, domain, params.seed)
            writer.add_batch(domain, object_ids, splits, labels, images, metadata=meta)
    return out


def preview(out_png: str | Path, seed: int = 0, size: int = SynthParams.size, per_class: int = 6) -> Path:
    """Save a PNG grid: one row per (class, domain), ``per_class`` examples per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = SynthParams(seed=seed, size=size)
    validate(params)
    rows = [(name, domain) for name in CLASS_NAMES for domain in DOMAINS]
    fig, axes = plt.subplots(len(rows), per_class, figsize=(1.5 * per_class, 1.6 * len(rows)), squeeze=False)
    for row, (name, domain) in enumerate(rows):
        for col in range(per_class):
            image, meta = render_galaxy(domain, col, CLASS_NAMES.index(name), params)
            axis = axes[row, col]
            axis.imshow(image.transpose(1, 2, 0), interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(f"r={meta['half_light_radius']:.1f} n={meta['sersic_n']:.1f}", fontsize=6)
        axes[row, 0].set_ylabel(f"{domain}\n{name}", fontsize=8)
    fig.suptitle(f"galaxy-da synth (seed {seed}, {size}x{size}): source = TNG-like, target = SDSS-like", fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
