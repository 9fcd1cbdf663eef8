r"""OT top-k soft matching: entropic optimal transport between the two batches.

The reference's ``OTAlignmentLoss`` done right: the plan comes from a converged
log-domain Sinkhorn (POT's ``sinkhorn_log``) instead of a fixed number of
linear-domain iterations, the entropic scale can follow the data, the three
component weights come from the config, and the gradients are those of the
problem being solved (see :func:`topk_ot_loss`): the earlier version
differentiated the plan through one row update with the column potential
detached, which made the gradient of the transport cost negative on most
entries, i.e. it pushed unmatched pairs apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import nn

from galaxy_da.losses.features import prepare_features

if TYPE_CHECKING:
    from galaxy_da.config import AlignConfig

EPSILON_MODES: dict[str, Callable[[float, torch.Tensor], torch.Tensor]] = {
    # relative: a fraction of the median pairwise cost, so the plan's sharpness does not
    # depend on the feature scale; floored so a collapsed batch keeps eps > 0.
    "relative": lambda epsilon, cost: epsilon * cost.detach().median().clamp_min(torch.finfo(cost.dtype).eps),
    "absolute": lambda epsilon, cost: cost.new_tensor(epsilon),
}


def squared_distances(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    r""":math:`C_{ij} = \lVert x_i - y_j\rVert^2`. Shapes (n, d), (m, d) -> (n, m), clamped at 0."""
    cross = source @ target.T
    return (source.pow(2).sum(1)[:, None] + target.pow(2).sum(1)[None, :] - 2.0 * cross).clamp_min(0.0)


def entropic_plan(cost: torch.Tensor, epsilon: torch.Tensor, *, max_iter: int, tol: float) -> tuple[torch.Tensor, int]:
    r"""The converged entropic OT plan between uniform marginals (no graph: a constant).

    Solves :math:`\min_{P \in U(a, b)} \langle P, C\rangle - \varepsilon H(P)` with
    :math:`a = 1/n`, :math:`b = 1/m`, by POT's log-domain Sinkhorn (it stops when
    :math:`\lVert P^\top 1 - b\rVert_2 <` ``tol``, or after ``max_iter``
    iterations), then one more row half-step

    .. math:: P_{ij} = a_i\,\mathrm{softmax}_j\big(\log v_j - C_{ij}/\varepsilon\big),

    whose rows sum to :math:`a` exactly; the column error is the solver's. Every
    step is a softmax or logsumexp, so the plan is finite for any
    :math:`\varepsilon > 0`. The plan carries no graph: losses use it as a fixed
    weight (see :func:`topk_ot_loss` for why that gives the right gradients).

    Shapes: ``cost`` (n, m), ``epsilon`` scalar -> (plan (n, m), iterations run).
    """
    import ot  # POT takes ~3 s to import; keep it out of config validation

    n, m = cost.shape
    with torch.no_grad():
        cost = cost.detach()
        a = cost.new_full((n,), 1.0 / n)
        b = cost.new_full((m,), 1.0 / m)
        _, log = ot.sinkhorn(a, b, cost, float(epsilon), method="sinkhorn_log", numItermax=max_iter, stopThr=tol, log=True, warn=False)
        plan = F.softmax(log["log_v"][None, :] - cost / epsilon, dim=1) / n
    return plan, int(log["niter"])


def marginal_error(plan: torch.Tensor) -> float:
    """Largest relative deviation of the plan's row and column sums from uniform."""
    n, m = plan.shape
    rows = (plan.sum(1) * n - 1.0).abs().max()
    cols = (plan.sum(0) * m - 1.0).abs().max()
    return float(torch.maximum(rows, cols))


def topk_ot_loss(
    source: torch.Tensor,
    target: torch.Tensor,
    *,
    k: int = 5,
    epsilon: float = 0.05,
    epsilon_mode: str = "relative",
    max_iter: int = 1000,
    tol: float = 1e-9,
    cost_weight: float = 0.25,
    match_weight: float = 0.5,
    topk_weight: float = 0.05,
) -> tuple[torch.Tensor, dict[str, float]]:
    r"""OT cost + soft-matching error + worst nearest-neighbour distances.

    With :math:`C_{ij}=\lVert x_i-y_j\rVert^2` and the converged entropic plan
    :math:`P^\star` (see :func:`entropic_plan`; :math:`\varepsilon` = ``epsilon`` x
    median(C) when ``epsilon_mode="relative"``, else ``epsilon``; either way a
    constant for the gradient):

    .. math::
        \mathcal{L} = w_c \langle P^\star, C\rangle
            + w_m \tfrac{1}{nd}\lVert X - nP^\star Y\rVert_F^2
            + w_k \tfrac{1}{k}\,\mathrm{topk}_k\big(\min_j C_{ij}\big)_i

    Gradients (the plan is a constant in all three terms):

    - **cost term**: :math:`\partial\mathcal{L}_c/\partial C = P^\star`, the envelope
      gradient of entropic OT :math:`W_\varepsilon(C) = \min_P \langle P,C\rangle -
      \varepsilon H(P)`, so :math:`\partial/\partial x_i = 2\sum_j P^\star_{ij}(x_i - y_j)`:
      every pair is pulled together in proportion to its transported mass, none
      is pushed apart. Its value is the transport part :math:`\langle P^\star, C\rangle`.
    - **match term**: the plan is a fixed soft assignment, as in DeepJDOT's
      alternating scheme (Damodaran et al. 2018): with residual
      :math:`R = X - nP^\star Y`, :math:`\partial/\partial X = \tfrac{2}{nd}R` and
      :math:`\partial/\partial Y = -\tfrac{2}{d}P^{\star\top}R`. Each source point moves
      toward its barycentric image and the targets toward the sources they
      receive. Differentiating the plan too would reward reshaping the
      assignment instead of closing the residual, and :math:`\partial P/\partial C`
      grows like :math:`1/\varepsilon`.
    - **top-k term**: a subgradient through each selected nearest pair.

    The top-k term is the mean of the k (clamped to n) largest source-to-nearest-
    target squared distances. Computed in float64; the loss is returned in the
    input dtype.

    Shapes: ``source`` (n, d), ``target`` (m, d) -> (scalar loss, diagnostics) with
    diagnostics ``ot_cost``, ``match_mse``, ``topk``, ``marginal_error``,
    ``epsilon`` and ``iterations``.
    """
    x, y = source.double(), target.double()
    cost = squared_distances(x, y)
    eps = EPSILON_MODES[epsilon_mode](epsilon, cost)
    plan, iterations = entropic_plan(cost, eps, max_iter=max_iter, tol=tol)
    ot_cost = (plan * cost).sum()
    match_mse = F.mse_loss(x, len(x) * plan @ y)
    topk = cost.min(dim=1).values.topk(min(k, len(x))).values.mean()
    loss = cost_weight * ot_cost + match_weight * match_mse + topk_weight * topk
    diagnostics = {
        "ot_cost": ot_cost.item(),
        "match_mse": match_mse.item(),
        "topk": topk.item(),
        "marginal_error": marginal_error(plan.detach()),
        "epsilon": float(eps),
        "iterations": float(iterations),
    }
    return loss.to(source.dtype), diagnostics


class TopKOTLoss(nn.Module):
    """:func:`topk_ot_loss` with its settings from ``cfg`` (``cfg.topk``, ``cfg.ot.*``).

    Registered as alignment method ``"topk_ot"``; the trainer also adds it on top
    of another method when ``cfg.ot.weight > 0``. ``blur`` and ``grl_strength`` are
    accepted for the common interface and unused. Features are L2-normalised first
    when ``cfg.normalize_features``. Shapes: (n, d), (m, d) -> scalar.
    """

    def __init__(self, cfg: AlignConfig, feature_dim: int) -> None:
        super().__init__()
        self.normalize_features = cfg.normalize_features
        self.options = dict(
            k=cfg.topk,
            epsilon=cfg.ot.epsilon,
            epsilon_mode=cfg.ot.epsilon_mode,
            max_iter=cfg.ot.max_iter,
            tol=cfg.ot.tol,
            cost_weight=cfg.ot.cost_weight,
            match_weight=cfg.ot.match_weight,
            topk_weight=cfg.ot.topk_weight,
        )
        self.diagnostics: dict[str, float] = {}

    def forward(self, source: torch.Tensor, target: torch.Tensor, *, blur: float, grl_strength: float) -> torch.Tensor:
        source, target = prepare_features(source, target, self.normalize_features)
        loss, self.diagnostics = topk_ot_loss(source, target, **self.options)
        return loss
