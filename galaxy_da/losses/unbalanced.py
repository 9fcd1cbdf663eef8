r"""The true gradient of GeomLoss's unbalanced Sinkhorn divergence.

GeomLoss differentiates its last Sinkhorn extrapolation step. For balanced OT
that step's gradient is the envelope gradient (tested against POT's plans), but
with a finite ``reach`` the damped update is not, and GeomLoss 0.3.1's gradient
misses the derivative of its own value by a relative error of about
:math:`\varepsilon/\rho` (15 % of the largest entry at blur 0.3, reach 0.5; 4 %
at reach 1; tests/test_weighted_alignment.py). By the envelope theorem the
derivative of the unbalanced entropic OT value with respect to the points is
the optimal plan's:

.. math:: \nabla_{x_i}\,\mathrm{OT}_{\varepsilon,\rho}(\alpha,\beta) = \sum_j P_{ij}\,(x_i - y_j),
          \qquad P_{ij} = a_i b_j \exp\big((f_i + g_j - C_{ij})/\varepsilon\big),

with :math:`C_{ij} = \tfrac12\lVert x_i - y_j\rVert^2` and :math:`(f, g)` the
converged dual potentials, which GeomLoss returns (``potentials=True``). The
debiased divergence :math:`S = \mathrm{OT}(\alpha,\beta) - \tfrac12\mathrm{OT}(\alpha,\alpha)
- \tfrac12\mathrm{OT}(\beta,\beta) + \tfrac\varepsilon2(m(\alpha) - m(\beta))^2` then has
the gradient of the surrogate
:math:`T = \langle P, C(x, y)\rangle - \tfrac12\langle Q, C(x, x)\rangle - \tfrac12\langle R, C(y, y)\rangle`
with the three plans held fixed; :func:`with_envelope_gradient` returns
GeomLoss's value with that gradient. The masses are constants (label-shift
weights are fixed buffers).
"""

from __future__ import annotations

from typing import Callable

import torch

PotentialSolver = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def half_squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r""":math:`\tfrac12\lVert x_i - y_j\rVert^2`, (n, d) x (m, d) -> (n, m) (GeomLoss's cost for ``p=2``)."""
    return 0.5 * (x[:, None, :] - y[None, :, :]).pow(2).sum(-1)


def entropic_plan(solve: PotentialSolver, a: torch.Tensor, x: torch.Tensor, b: torch.Tensor, y: torch.Tensor, epsilon: float) -> torch.Tensor:
    r"""The optimal plan :math:`P_{ij} = a_i b_j \exp((f_i + g_j - C_{ij})/\varepsilon)`, (n, m), detached.

    ``solve(a, x, b, y)`` returns the potentials ``(f, g)`` ((n,) and (m,), any leading 1s). GeomLoss switches
    autograd back on inside its solver, even under ``torch.no_grad()``, hence the explicit detach.
    """
    with torch.no_grad():
        f, g = (potential.detach().reshape(-1) for potential in solve(a, x.detach(), b, y.detach()))
        log_plan = a.log()[:, None] + b.log()[None, :] + (f[:, None] + g[None, :] - half_squared_distances(x.detach(), y.detach())) / epsilon
        return log_plan.exp().detach()


def with_envelope_gradient(value: torch.Tensor, solve: PotentialSolver, a: torch.Tensor, x: torch.Tensor, b: torch.Tensor,
                           y: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``value`` (GeomLoss's unbalanced divergence of ``(a, x)`` and ``(b, y)``, a scalar) with the gradient of the
    surrogate :math:`T` of the module docstring with respect to ``x`` (n, d) and ``y`` (m, d)."""
    transport = (entropic_plan(solve, a, x, b, y, epsilon) * half_squared_distances(x, y)).sum()
    transport = transport - 0.5 * (entropic_plan(solve, a, x, a, x, epsilon) * half_squared_distances(x, x)).sum()
    transport = transport - 0.5 * (entropic_plan(solve, b, y, b, y, epsilon) * half_squared_distances(y, y)).sum()
    return value.detach() + (transport - transport.detach())
