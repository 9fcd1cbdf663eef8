r"""Feature-alignment losses between a source batch and a target batch.

Every entry of :data:`ALIGNMENT_METHODS` (declared by name in
:mod:`galaxy_da.registries`, imported on first use) is an ``nn.Module`` built as
``cls(cfg: AlignConfig, feature_dim)`` and called as
``loss(source, target, blur=..., grl_strength=..., source_masses=None)`` with
``source`` (n, d) and ``target`` (m, d) features, returning a scalar.
``source_masses`` (n,), non-negative and summing to 1, re-weights the source
measure :math:`\sum_i a_i \delta_{x_i}` (label-shift-aware alignment, see
:mod:`galaxy_da.label_shift`); None is the uniform :math:`a_i = 1/n`, and uniform
masses give exactly the unweighted loss. The target is always uniform. Its ``diagnostics`` dict of
detached scalar tensors is refreshed at each call (the trainer reads them once
per epoch, so no loss makes the host wait for the device inside a step). When ``cfg.normalize_features`` the features are
L2-normalised first (as in the reference), so squared distances lie in [0, 4].

GeomLoss caveats handled or documented here: a kernel blur far below the feature
scale gives exactly zero gradient (keep features normalised or tie the blur to
their scale); a batch collapsed to one point crashed GeomLoss's Sinkhorn (its
epsilon schedule starts at the data diameter, 0), so the diameter passed is at
least ``blur``. GeomLoss needs that diameter as a Python number: on normalised
features it is the unit sphere's, 2, known without looking at the data; only
Sinkhorn on raw features measures it, one device-to-host read per step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
from geomloss import SamplesLoss
from torch import nn

from galaxy_da.losses.features import masses_or_uniform, prepare_features, uniform_masses
from galaxy_da.losses.unbalanced import with_envelope_gradient
from galaxy_da.registries import ALIGNMENT_METHODS

if TYPE_CHECKING:
    from galaxy_da.config import AlignConfig


class NoAlignment(nn.Module):
    """No alignment: a constant 0 (a fresh zero tensor without graph; adding it is a no-op)."""

    def __init__(self, cfg: AlignConfig, feature_dim: int) -> None:
        super().__init__()
        self.diagnostics: dict[str, torch.Tensor] = {}

    def forward(
        self, source: torch.Tensor, target: torch.Tensor, *, blur: float, grl_strength: float, source_masses: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        return source.new_zeros(())


class GeomLossAlignment(nn.Module):
    r"""A GeomLoss ``SamplesLoss`` (``backend="tensorized"``) at the given ``blur``, called as ``loss(a, x, b, y)``.

    The source masses ``a`` are ``source_masses`` (uniform when None), the target
    masses ``b`` uniform; uniform ``a`` is built as GeomLoss builds its default,
    so the unweighted call is unchanged. ``cfg.reach`` (Sinkhorn only, checked by
    the config) relaxes the marginal constraints: unbalanced OT with a KL penalty
    of strength :math:`\rho = \mathrm{reach}^2`. Subclasses name the loss in
    ``geomloss_name``; ``grl_strength`` is unused. The blur is the epoch's
    ``schedule/blur``, logged once per epoch.
    """

    geomloss_name: str
    scaling = 0.9  # Sinkhorn epsilon-scaling ratio; coarser ratios gave negative divergences
    uses_diameter = False  # only Sinkhorn's epsilon schedule reads the data diameter

    def __init__(self, cfg: AlignConfig, feature_dim: int) -> None:
        super().__init__()
        self.normalize_features = cfg.normalize_features
        self.reach = cfg.reach
        self.diagnostics: dict[str, torch.Tensor] = {}

    def diameter(self, source: torch.Tensor, target: torch.Tensor, blur: float) -> float | None:
        """An upper bound of the data diameter, at least ``blur``; None for the kernel losses."""
        if not self.uses_diameter:
            return None
        if self.normalize_features:
            return max(2.0, blur)  # the unit sphere's diameter: no read from the device
        points = torch.cat([source, target]).detach()
        return max(float((points.max(0).values - points.min(0).values).norm()), blur)

    def samples_loss(self, blur: float, diameter: float | None, **options) -> SamplesLoss:
        return SamplesLoss(self.geomloss_name, p=2, blur=blur, reach=self.reach, scaling=self.scaling, diameter=diameter,
                           backend="tensorized", **options)

    def divergence(self, a: torch.Tensor, x: torch.Tensor, b: torch.Tensor, y: torch.Tensor, blur: float) -> torch.Tensor:
        """The loss of masses ``a`` (n,) on points ``x`` (n, d) against ``b`` (m,) on ``y`` (m, d), a scalar."""
        return self.samples_loss(blur, self.diameter(x, y, blur))(a, x, b, y)

    def forward(
        self, source: torch.Tensor, target: torch.Tensor, *, blur: float, grl_strength: float, source_masses: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        source, target = prepare_features(source, target, self.normalize_features)
        return self.divergence(masses_or_uniform(source, source_masses), source, uniform_masses(target), target, blur)


class SinkhornAlignment(GeomLossAlignment):
    r"""Debiased Sinkhorn divergence with cost :math:`\tfrac12\lVert x-y\rVert^2` and :math:`\varepsilon=\mathrm{blur}^2`.

    .. math:: S_\varepsilon(\alpha,\beta) = \mathrm{OT}_\varepsilon(\alpha,\beta)
              - \tfrac12\mathrm{OT}_\varepsilon(\alpha,\alpha) - \tfrac12\mathrm{OT}_\varepsilon(\beta,\beta),
              \qquad \alpha = \sum_i a_i\delta_{x_i},\ \beta = \tfrac1m\sum_j\delta_{y_j}

    with :math:`\mathrm{OT}_\varepsilon(\alpha,\beta) = \min_{P \in U(a, b)} \langle P, C\rangle
    + \varepsilon\,\mathrm{KL}(P \,|\, a \otimes b)` (its value, not POT's transport part).
    With ``cfg.reach`` the constraint :math:`P \in U(a, b)` becomes the penalty
    :math:`\rho\,\mathrm{KL}(P1|a) + \rho\,\mathrm{KL}(P^\top 1|b)`, :math:`\rho = \mathrm{reach}^2`.

    Small blur -> Wasserstein-2 (squared, halved); blur much larger than the data ->
    :math:`\tfrac12\lVert\mu_s-\mu_t\rVert^2` (mean matching only).

    With ``cfg.reach`` GeomLoss's gradient is not its value's (:mod:`galaxy_da.losses.unbalanced`): the value is
    GeomLoss's, the gradient the envelope gradient from its converged plans (three more potential solves).
    """

    geomloss_name = "sinkhorn"
    uses_diameter = True

    def divergence(self, a: torch.Tensor, x: torch.Tensor, b: torch.Tensor, y: torch.Tensor, blur: float) -> torch.Tensor:
        if self.reach is None:
            return super().divergence(a, x, b, y, blur)  # balanced: GeomLoss's gradient is the envelope gradient
        diameter = self.diameter(x, y, blur)
        with torch.no_grad():
            value = self.samples_loss(blur, diameter)(a, x.detach(), b, y.detach()).detach()
        solve = self.samples_loss(blur, diameter, debias=False, potentials=True)
        return with_envelope_gradient(value, solve, a, x, b, y, epsilon=blur**2)


class EnergyAlignment(GeomLossAlignment):
    r"""Half the energy distance, kernel :math:`k(x,y) = -\lVert x-y\rVert` (no blur).

    .. math:: \tfrac12\lVert\alpha-\beta\rVert_k^2 = \mathbb{E}\lVert x-y\rVert
              - \tfrac12\mathbb{E}\lVert x-x'\rVert - \tfrac12\mathbb{E}\lVert y-y'\rVert

    with :math:`x, x' \sim \alpha = \sum_i a_i\delta_{x_i}` and :math:`y, y'` uniform over the target.
    """

    geomloss_name = "energy"


class GaussianAlignment(GeomLossAlignment):
    r"""Half the (V-statistic) MMD², Gaussian kernel :math:`k(x,y)=\exp(-\lVert x-y\rVert^2/2\sigma^2)`, :math:`\sigma` = blur.

    .. math:: \tfrac12\sum_{ii'}a_i a_{i'}\,k(x_i,x_{i'}) + \tfrac12\sum_{jj'}\tfrac{k(y_j,y_{j'})}{m^2}
              - \sum_{ij}\tfrac{a_i\,k(x_i,y_j)}{m}

    with source masses :math:`a` (uniform: :math:`a_i = 1/n`).
    """

    geomloss_name = "gaussian"


class LaplacianAlignment(GeomLossAlignment):
    r"""Half the MMD², Laplacian kernel :math:`k(x,y)=\exp(-\lVert x-y\rVert/\sigma)`, :math:`\sigma` = blur.

    The reference's ``"euclidean"`` loss (from a GeomLoss fork); same formula as
    :class:`GaussianAlignment` with this kernel.
    """

    geomloss_name = "laplacian"


__all__ = ["ALIGNMENT_METHODS", "EnergyAlignment", "GaussianAlignment", "LaplacianAlignment", "NoAlignment", "SinkhornAlignment"]
