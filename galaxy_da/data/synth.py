"""``galaxy-da synth``: the GalSim synthetic benchmark, one source and one or more target surveys.

Galaxies of three classes (:mod:`galaxy_da.data.synth_models`) are rendered in
three bands and stored as uint8 RGB stamps ``(3, size, size)`` with channels
reddest first (``(i, r, g)``, ``(z, r, g)``), as in survey colour composites:

===========  =======================  ===================================================
domain       imitates                 rendering
===========  =======================  ===================================================
source       TNG50 renders            noiseless, no PSF (direct evaluation, no FFT),
                                      per-image asinh stretch
target sdss  SDSS gri cutouts         Kolmogorov PSF (FWHM 1.2-1.6" at 0.396"/px),
                                      sky 90/150/230 e-/px, Poisson + read noise,
                                      fixed-scale Lupton RGB (faint galaxies look faint)
target desi  DESI Legacy Surveys grz  the same at 0.262"/px, FWHM 1.0-1.5", sky 35/59/150
                                      e-/px, z fluxes from each population's r-i colour
===========  =======================  ===================================================

Each target survey's values and their sources: :mod:`galaxy_da.data.synth_params`
and :mod:`galaxy_da.data.surveys`; the manifest records them under ``targets``.
Class counts follow the real label tables exactly (largest remainder), and the
domains differ in galaxy size and Sérsic index as well as in rendering. Every
galaxy is drawn from ``np.random.default_rng([seed, stream, index])`` (stream 0
for the source, a fixed one per target survey), so a dataset is byte-identical
for a given seed whatever the number of workers, and a survey's galaxies do not
depend on which other surveys are rendered.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import galsim
import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from galaxy_da.data.schema import CLASS_NAMES, DEFAULT_TARGET
from galaxy_da.data.splits import assign_splits
from galaxy_da.data.surveys import band_fluxes
from galaxy_da.data.synth_models import CLASS_MODELS, Galaxy
from galaxy_da.data.synth_params import MIN_SIZE, DomainParams, SourceParams, SynthParams, TargetParams, validate
from galaxy_da.data.writer import DatasetWriter

__all__ = ["MIN_SIZE", "SynthParams", "class_counts", "generate", "preview", "render_domain", "render_galaxy", "validate"]

GENERATOR = "galaxy_da.synth"
TARGET_OVERSAMPLE = 2  # sub-pixels per axis: pixel integration before the PSF
CHUNK_ROWS = 64  # galaxies per worker task; the output does not depend on it


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


def domain_labels(domain: str, params: SynthParams, target: str | None = None) -> np.ndarray:
    """Labels (N,) int64 of the source or target survey ``target``, in exact prior proportions, in a seeded order."""
    counts = class_counts(params.count(domain), params.part(domain, target).class_counts)
    rng = np.random.default_rng([params.seed, params.stream(domain, target)])
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


def _mix_bands(galaxy: Galaxy, draw: Callable[[galsim.GSObject], np.ndarray], bands: tuple[str, ...] = ("g", "r", "i")) -> np.ndarray:
    """``band_b = sum_c flux[c, b] · draw(profile_c)`` -> (3, H, W), each component's flux taken to ``bands``."""
    return sum(band_fluxes(component.flux, bands)[:, None, None] * draw(component.profile)[None] for component in galaxy.components)


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


def render_source(galaxy: Galaxy, rng: np.random.Generator, source: SourceParams, size: int) -> tuple[np.ndarray, dict[str, float]]:
    """TNG-like: noiseless, PSF-free direct evaluation at pixel centres, per-image asinh stretch."""
    offset = rng.uniform(-0.5, 0.5, size=2)
    bands = _mix_bands(galaxy, lambda profile: _draw(profile, size, offset))
    peak = float(bands.mean(axis=0).max())
    return asinh_rgb(bands, softening=source.asinh_softening * peak, white=peak), {}


def render_target(galaxy: Galaxy, rng: np.random.Generator, survey: TargetParams, size: int) -> tuple[np.ndarray, dict[str, float]]:
    """A survey's cutout: pixel-integrated (2x2 sub-samples) in its bands, Kolmogorov PSF at its pixel scale,
    sky + Poisson + read noise, sky-subtracted, fixed Lupton scale. The PSF is applied per band as one FFT convolution."""
    offset = rng.uniform(-0.5, 0.5, size=2)
    fwhm = float(rng.uniform(*survey.psf_fwhm_arcsec))
    flux = float(np.exp(rng.uniform(*np.log(survey.flux_electrons))))
    bands = flux * _mix_bands(galaxy, lambda profile: _draw(profile, size, offset, TARGET_OVERSAMPLE), survey.facts.bands)
    kernel = psf_kernel(fwhm / survey.facts.pixel_scale_arcsec, galaxy.components[0].profile.gsparams)
    bands = np.clip(convolve_same(bands, kernel), 0.0, None)
    sky = np.asarray(survey.sky_electrons)[:, None, None]
    counts = rng.poisson(bands + sky) + rng.normal(0.0, survey.read_noise_electrons, bands.shape) - sky
    weighted = counts * np.asarray(survey.band_weights)[:, None, None]
    image = asinh_rgb(weighted, softening=survey.lupton_softening, white=survey.lupton_white)
    return image, {"flux": flux, "psf_fwhm": fwhm}


DomainRenderer = Callable[[Galaxy, np.random.Generator, DomainParams, int], tuple[np.ndarray, dict[str, float]]]
DOMAIN_RENDERERS: dict[str, DomainRenderer] = {"source": render_source, "target": render_target}


def render_galaxy(domain: str, index: int, label: int, params: SynthParams, target: str | None = None) -> tuple[np.ndarray, dict[str, float]]:
    """One stamp of the source or target survey ``target``: uint8 (3, size, size) and its metadata, seeded by ``(seed, stream, index)``."""
    rng = np.random.default_rng([params.seed, params.stream(domain, target), index])
    model = CLASS_MODELS[CLASS_NAMES[label]]
    part = params.part(domain, target)
    galaxy = model(rng, part.galaxy_scale(params.size), params.morphology)
    image, extra = DOMAIN_RENDERERS[domain](galaxy, rng, part, params.size)
    return image, {
        "half_light_radius": galaxy.half_light_radius,
        "sersic_n": galaxy.sersic_n,
        "axis_ratio": galaxy.axis_ratio,
        **extra,
    }


def _render_chunk(task: tuple[str, str | None, int, np.ndarray, SynthParams]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    domain, target, start, labels, params = task
    rendered = [render_galaxy(domain, start + offset, int(label), params, target) for offset, label in enumerate(labels)]
    images = np.stack([image for image, _ in rendered])
    metadata = {key: np.array([meta[key] for _, meta in rendered], dtype=np.float32) for key in rendered[0][1]}
    return images, metadata


def render_domain(
    domain: str, params: SynthParams, workers: int = 1, progress: bool = True, target: str = DEFAULT_TARGET
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Render the source, or target survey ``target``: images uint8 (N, 3, H, W), labels int64 (N,), metadata {column: float32 (N,)}.

    Chunks of :data:`CHUNK_ROWS` galaxies go to ``workers`` processes and come
    back in order; each galaxy is seeded on its own, so the result does not
    depend on ``workers``.
    """
    validate(params, workers)
    target = None if domain == "source" else target
    labels = domain_labels(domain, params, target)
    tasks = [(domain, target, start, labels[start : start + CHUNK_ROWS], params) for start in range(0, labels.size, CHUNK_ROWS)]
    bar = tqdm(total=labels.size, desc=f"synth {target or domain}", unit="galaxy", disable=not progress)
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
    targets: tuple[str, ...] | list[str] | None = None,
) -> Path:
    """Render the source and each target survey, assign stratified seeded splits and write the dataset; returns its path.

    ``params`` overrides the defaults of every generator parameter; ``seed``,
    ``n_source``, ``n_target`` (galaxies per target survey) and ``size`` are then
    applied on top of it. ``targets`` names the surveys to render (default: every
    survey of ``params``, i.e. ``sdss`` and ``desi``). The manifest's ``targets``
    records each survey's facts, class prior and rendering conditions.
    """
    params = replace(params or SynthParams(), seed=seed, n_source=n_source, n_target=n_target, size=size)
    params = params.with_targets(list(params.targets) if targets is None else targets)
    validate(params, workers, shard_rows)
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    parts = [("source", None)] + [("target", name) for name in params.targets]
    rendered = {part: render_domain(part[0], params, workers, progress, part[1]) for part in parts}
    provenance = {**asdict(params), "generator": GENERATOR, "galsim_version": galsim.__version__}
    metadata_types = {domain: {key: pa.float32() for key in meta} for (domain, _), (_, _, meta) in rendered.items()}
    with DatasetWriter(
        out, (3, params.size, params.size), shard_rows=shard_rows, provenance=provenance,
        metadata=metadata_types, overwrite=overwrite, targets={name: _target_entry(survey) for name, survey in params.targets.items()},
    ) as writer:
        for (domain, target), (images, labels, meta) in rendered.items():
            object_ids = [f"synth-{target or domain}-{index:06d}" for index in range(labels.size)]
            splits = assign_splits(labels, domain, params.seed)
            writer.add_batch(domain, object_ids, splits, labels, images, metadata=meta, target=target)
    return out


def _target_entry(survey: TargetParams) -> dict:
    """The manifest's record of a rendered survey: its published facts, the prior it was rendered with, its rendering."""
    return survey.facts.manifest_entry(
        survey.class_counts, CLASS_NAMES, rendering=asdict(survey), implied_depth_r=round(survey.implied_depth_r(), 3)
    )


def preview(out_png: str | Path, seed: int = 0, size: int = SynthParams.size, per_class: int = 6) -> Path:
    """Save a PNG grid: one row per class and domain (source, then each target survey), ``per_class`` examples per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = SynthParams(seed=seed, size=size)
    validate(params)
    parts = [("source", None)] + [("target", target) for target in params.targets]
    rows = [(name, domain, target) for name in CLASS_NAMES for domain, target in parts]
    fig, axes = plt.subplots(len(rows), per_class, figsize=(1.5 * per_class, 1.6 * len(rows)), squeeze=False)
    for row, (name, domain, target) in enumerate(rows):
        for col in range(per_class):
            image, meta = render_galaxy(domain, col, CLASS_NAMES.index(name), params, target)
            axis = axes[row, col]
            axis.imshow(image.transpose(1, 2, 0), interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(f"r={meta['half_light_radius']:.1f} n={meta['sersic_n']:.1f}", fontsize=6)
        axes[row, 0].set_ylabel(f"{target or domain}\n{name}", fontsize=8)
    fig.suptitle(f"galaxy-da synth (seed {seed}, {size}x{size}): source = TNG-like; targets sdss = SDSS-like, desi = DESI-like", fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
