"""Galaxy morphologies of the synthetic benchmark, as GalSim profiles in pixel units.

A galaxy is a list of :class:`Component` s: a unit-flux GalSim profile and its
flux in the g, r, i bands (relative to the galaxy's total r-band flux). Keeping
components apart lets a renderer draw each shape once and mix the bands
linearly: ``band_b = sum_c flux[c, b] * draw(profile_c)``.

Each class model draws its parameters from a ``numpy.random.Generator`` and a
:class:`GalaxyScale` (the domain's size and Sérsic-index ranges). The classes
overlap on purpose, as real ones do: spirals can be weak-armed, bulge-heavy or
edge-on (the arms then vanish); ellipticals can carry a disk; spirals can be
mildly disturbed and irregulars can show a faint arm pattern.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import galsim
import numpy as np

GSPARAMS = galsim.GSParams(folding_threshold=1e-2, maxk_threshold=2e-3)
SERSIC_N_STEP = 0.5  # GalSim reuses its Sérsic tables when n repeats
SERSIC_TRUNCATION = 8.0  # truncation radius in half-light radii: ~5x faster FFTs
EXPONENTIAL_HLR_PER_SCALE = 1.6783469900166605  # hlr / scale radius of exp(-r/h)
MIN_KNOT_SIGMA = 0.35  # pixels
ARM_GRID = 64  # pixels of the numpy arm pattern wrapped in an InterpolatedImage

# Flux in g, r, i relative to r for each stellar population.
OLD_RED = np.array([0.45, 1.0, 1.30])
DISK = np.array([0.70, 1.0, 1.15])
YOUNG_BLUE = np.array([1.45, 1.0, 0.80])


@dataclass(frozen=True)
class MorphologyParams:
    """Class-model knobs, shared by both domains (fractions are probabilities or flux shares)."""

    disky_elliptical_fraction: float = 0.5
    elliptical_disk_share: tuple[float, float] = (0.15, 0.6)
    elliptical_axis_ratio: tuple[float, float] = (0.35, 1.0)
    spiral_bulge_share: tuple[float, float] = (0.05, 0.7)
    spiral_arm_share: tuple[float, float] = (0.25, 0.7)
    weak_arm_fraction: float = 0.45
    weak_arm_share: tuple[float, float] = (0.0, 0.1)
    spiral_pitch_deg: tuple[float, float] = (10.0, 30.0)
    disk_intrinsic_thickness: float = 0.12
    disturbed_spiral_fraction: float = 0.2
    irregular_shear: tuple[float, float] = (0.05, 0.45)
    irregular_knots: tuple[int, int] = (8, 30)
    irregular_knot_share: tuple[float, float] = (0.1, 0.45)
    irregular_clumps: tuple[int, int] = (1, 3)
    irregular_clump_share: tuple[float, float] = (0.05, 0.2)
    armed_irregular_fraction: float = 0.25
    colour_jitter: float = 0.2  # lognormal sigma of each band's flux


@dataclass(frozen=True)
class GalaxyScale:
    """Domain-dependent size and concentration ranges, in pixels for a given stamp."""

    half_light_radius: tuple[float, float]  # log-uniform, pixels
    elliptical_sersic_n: tuple[float, float]
    bulge_sersic_n: tuple[float, float]


@dataclass(frozen=True)
class Component:
    profile: galsim.GSObject  # unit flux, pixel units, centred on the galaxy
    flux: np.ndarray  # (3,) g, r, i flux as a share of the galaxy's r-band flux


@dataclass(frozen=True)
class Galaxy:
    components: list[Component]
    half_light_radius: float  # pixels, of the dominant component
    sersic_n: float  # of the dominant spheroid (1 for pure disks)
    axis_ratio: float


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]))))


def _sersic_n(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(np.round(rng.uniform(*bounds) / SERSIC_N_STEP) * SERSIC_N_STEP)


def _colour(rng: np.random.Generator, population: np.ndarray, share: float, jitter: float) -> np.ndarray:
    return share * population * np.exp(rng.normal(0.0, jitter, size=3))


def _sersic(n: float, hlr: float) -> galsim.GSObject:
    return galsim.Sersic(n=n, half_light_radius=hlr, trunc=SERSIC_TRUNCATION * hlr, gsparams=GSPARAMS)


def _exponential(hlr: float) -> galsim.GSObject:
    return galsim.Exponential(half_light_radius=hlr, gsparams=GSPARAMS)


def _knots(positions: np.ndarray, sigmas: np.ndarray, weights: np.ndarray) -> galsim.GSObject:
    """Sum of Gaussians: ``positions`` (K, 2) pixels, ``sigmas`` (K,), ``weights`` (K,) summing to 1."""
    return galsim.Sum(
        [
            galsim.Gaussian(sigma=float(s), flux=float(w), gsparams=GSPARAMS).shift(float(x), float(y))
            for (x, y), s, w in zip(positions, sigmas, weights)
        ]
    )


def _inclined_axis_ratio(rng: np.random.Generator, thickness: float) -> float:
    """Projected axis ratio of a thin disk at isotropic inclination: cos i ~ U(0, 1)."""
    cos_i = rng.uniform(0.0, 1.0)
    return float(np.sqrt((1.0 - thickness**2) * cos_i**2 + thickness**2))


def _arm_pattern(rng: np.random.Generator, disk_hlr: float, arms: int, pitch_deg: float, phase: float) -> galsim.GSObject:
    """Face-on log-spiral arms, unit flux.

    ``I(r, θ) ∝ exp(-r/h) (1 - exp(-(2r/h)²)) [(1 + cos(m(θ - ln(r/h)/tan p) + φ)) / 2]^k``
    on an ``ARM_GRID²`` numpy grid spanning ±5h, wrapped in ``galsim.InterpolatedImage``.
    """
    scale_radius = disk_hlr / EXPONENTIAL_HLR_PER_SCALE
    extent = 5.0 * scale_radius
    axis = (np.arange(ARM_GRID) - (ARM_GRID - 1) / 2) * (2 * extent / ARM_GRID)
    x, y = np.meshgrid(axis, axis)
    r = np.hypot(x, y) + 1e-6
    theta = np.arctan2(y, x)
    winding = np.log(r / scale_radius) / np.tan(np.radians(pitch_deg))
    sharpness = rng.uniform(2.0, 6.0)
    ridge = (0.5 * (1.0 + np.cos(arms * (theta - winding) + phase))) ** sharpness
    pattern = np.exp(-r / scale_radius) * (1.0 - np.exp(-((2.0 * r / scale_radius) ** 2))) * ridge
    return galsim.InterpolatedImage(
        galsim.Image(pattern, scale=2 * extent / ARM_GRID),
        x_interpolant="linear",
        flux=1.0,
        calculate_stepk=False,
        calculate_maxk=False,
        gsparams=GSPARAMS,
    )


def _arm_knots(rng: np.random.Generator, disk_hlr: float, arms: int, pitch_deg: float, phase: float) -> galsim.GSObject:
    """Blue star-forming knots on the arm ridges ``θ = (2πj - φ)/m + ln(r/h)/tan p``."""
    count = int(rng.integers(4, 16))
    scale_radius = disk_hlr / EXPONENTIAL_HLR_PER_SCALE
    r = scale_radius * rng.uniform(0.7, 3.0, size=count)
    arm = rng.integers(0, arms, size=count)
    theta = (2 * np.pi * arm - phase) / arms + np.log(r / scale_radius) / np.tan(np.radians(pitch_deg))
    positions = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    weights = rng.dirichlet(np.ones(count))
    return _knots(positions, np.maximum(disk_hlr * rng.uniform(0.04, 0.1, size=count), MIN_KNOT_SIGMA), weights)


def _clumps(rng: np.random.Generator, hlr: float, count: int) -> galsim.GSObject:
    """Off-centre clumps at 0.8-2.2 half-light radii, each a small exponential."""
    radius = hlr * rng.uniform(0.8, 2.2, size=count)
    angle = rng.uniform(0, 2 * np.pi, size=count)
    weights = rng.dirichlet(np.ones(count))
    return galsim.Sum(
        [
            _exponential(hlr * rng.uniform(0.15, 0.35)).withFlux(float(w)).shift(float(r * np.cos(a)), float(r * np.sin(a)))
            for r, a, w in zip(radius, angle, weights)
        ]
    )


def _orient(profile: galsim.GSObject, axis_ratio: float, angle: float) -> galsim.GSObject:
    return profile.shear(q=axis_ratio, beta=angle * galsim.radians)


def _spiral_arms(rng: np.random.Generator, disk_hlr: float, arm_share: float, p: MorphologyParams) -> list[tuple[galsim.GSObject, np.ndarray]]:
    arms = int(rng.choice([2, 3, 4], p=[0.65, 0.2, 0.15]))
    pitch = _uniform(rng, p.spiral_pitch_deg)
    phase = rng.uniform(0, 2 * np.pi)
    knot_share = arm_share * rng.uniform(0.0, 0.35)
    return [
        (_arm_pattern(rng, disk_hlr, arms, pitch, phase), _colour(rng, YOUNG_BLUE, arm_share - knot_share, p.colour_jitter)),
        (_arm_knots(rng, disk_hlr, arms, pitch, phase), _colour(rng, YOUNG_BLUE, knot_share, p.colour_jitter)),
    ]


def elliptical(rng: np.random.Generator, scale: GalaxyScale, p: MorphologyParams) -> Galaxy:
    """Sérsic spheroid (old, red); a ``disky_elliptical_fraction`` also carries a flattened exponential disk."""
    n = _sersic_n(rng, scale.elliptical_sersic_n)
    hlr = _log_uniform(rng, scale.half_light_radius)
    q = _uniform(rng, p.elliptical_axis_ratio)
    angle = rng.uniform(0, np.pi)
    disk_share = _uniform(rng, p.elliptical_disk_share) if rng.uniform() < p.disky_elliptical_fraction else 0.0
    parts = [(_orient(_sersic(n, hlr), q, angle), _colour(rng, OLD_RED, 1.0 - disk_share, p.colour_jitter))]
    if disk_share:
        disk = _orient(_exponential(hlr * rng.uniform(1.0, 1.6)), rng.uniform(0.2, 0.6), angle)
        parts.append((disk, _colour(rng, 0.5 * (OLD_RED + DISK), disk_share, p.colour_jitter)))
    return Galaxy([Component(prof, flux) for prof, flux in parts], hlr, n, q)


def spiral(rng: np.random.Generator, scale: GalaxyScale, p: MorphologyParams) -> Galaxy:
    """Sérsic bulge + inclined exponential disk + log-spiral arms and arm knots (some weak, some disturbed)."""
    hlr = _log_uniform(rng, scale.half_light_radius)
    bulge_n = _sersic_n(rng, scale.bulge_sersic_n)
    bulge_share = _uniform(rng, p.spiral_bulge_share)
    weak = rng.uniform() < p.weak_arm_fraction
    arm_share = (1.0 - bulge_share) * _uniform(rng, p.weak_arm_share if weak else p.spiral_arm_share)
    disturbed = rng.uniform() < p.disturbed_spiral_fraction
    disturbed_share = (1.0 - bulge_share) * _uniform(rng, p.irregular_clump_share) if disturbed else 0.0
    disk_share = 1.0 - bulge_share - arm_share - disturbed_share
    q = _inclined_axis_ratio(rng, p.disk_intrinsic_thickness)
    angle = rng.uniform(0, np.pi)
    disk_plane = [
        (_sersic(bulge_n, hlr * rng.uniform(0.12, 0.3)), _colour(rng, OLD_RED, bulge_share, p.colour_jitter)),
        (_exponential(hlr), _colour(rng, DISK, disk_share, p.colour_jitter)),
        *_spiral_arms(rng, hlr, arm_share, p),
    ]
    if disturbed_share:
        disk_plane.append((_clumps(rng, hlr, int(rng.integers(1, 3))), _colour(rng, YOUNG_BLUE, disturbed_share, p.colour_jitter)))
    components = [Component(_orient(prof, q, angle), flux) for prof, flux in disk_plane if flux[1] > 0]
    return Galaxy(components, hlr, bulge_n, q)


def irregular(rng: np.random.Generator, scale: GalaxyScale, p: MorphologyParams) -> Galaxy:
    """Sheared exponential base + 8-30 blue star-forming knots + 1-3 off-centre clumps (some with faint arms)."""
    hlr = _log_uniform(rng, scale.half_light_radius)
    shear = galsim.Shear(g=_uniform(rng, p.irregular_shear), beta=rng.uniform(0, np.pi) * galsim.radians)
    knot_count = int(rng.integers(p.irregular_knots[0], p.irregular_knots[1] + 1))
    knot_share = _uniform(rng, p.irregular_knot_share)
    clump_count = int(rng.integers(p.irregular_clumps[0], p.irregular_clumps[1] + 1))
    clump_share = _uniform(rng, p.irregular_clump_share)
    arm_share = _uniform(rng, p.weak_arm_share) if rng.uniform() < p.armed_irregular_fraction else 0.0
    base_share = 1.0 - knot_share - clump_share - arm_share
    knot_spread = hlr * rng.uniform(0.5, 1.1)
    knot_centre = rng.normal(0.0, 0.3 * hlr, size=2)
    knots = _knots(
        knot_centre + rng.normal(0.0, knot_spread, size=(knot_count, 2)),
        np.maximum(hlr * rng.uniform(0.06, 0.2, size=knot_count), MIN_KNOT_SIGMA),
        rng.dirichlet(np.full(knot_count, 0.7)),
    )
    parts = [
        (_exponential(hlr).shear(shear), _colour(rng, 0.5 * (DISK + YOUNG_BLUE), base_share, p.colour_jitter)),
        (knots, _colour(rng, YOUNG_BLUE, knot_share, p.colour_jitter)),
        (_clumps(rng, hlr, clump_count), _colour(rng, 0.5 * (DISK + YOUNG_BLUE), clump_share, p.colour_jitter)),
    ]
    if arm_share:
        parts += [(prof.shear(shear), flux) for prof, flux in _spiral_arms(rng, hlr, arm_share, p)]
    return Galaxy([Component(prof, flux) for prof, flux in parts], hlr, 1.0, (1.0 - shear.g) / (1.0 + shear.g))


ClassModel = Callable[[np.random.Generator, GalaxyScale, MorphologyParams], Galaxy]
CLASS_MODELS: dict[str, ClassModel] = {"elliptical": elliptical, "irregular": irregular, "spiral": spiral}
