"""Class-ratio weighted alignment: every loss in the registry takes source masses, and they mean what they say.

Toy tensors, seeded. Independent values come from POT (``ot.sinkhorn``, log
domain, float64, to convergence); gradients are checked by ``gradcheck`` or by
finite differences of the independent value.
"""

import pytest
import torch
import torch.nn.functional as F
from geomloss import SamplesLoss

from galaxy_da.config import AdversarialConfig, AlignConfig
from galaxy_da.label_shift.weights import sample_masses
from galaxy_da.losses import ALIGNMENT_METHODS
from galaxy_da.losses.features import uniform_masses
from galaxy_da.losses.topk_ot import squared_distances, topk_ot_loss
from tests.test_losses import finite_difference

torch.set_num_threads(1)
DIM = 4
RATIOS = torch.tensor([2.7, 0.5, 0.53], dtype=torch.float64)  # TNG50 -> DESI-like: q/p for elliptical, irregular, spiral
VARIANTS = {name: {"method": name} for name in ALIGNMENT_METHODS} | {"sinkhorn_unbalanced": {"method": "sinkhorn", "reach": 0.5}}


def points(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, DIM, generator=generator, dtype=torch.float64) + shift, dim=1)


def labels(n: int) -> torch.Tensor:
    return torch.arange(n) % 3


def build(variant: str, **extra) -> torch.nn.Module:
    cfg = AlignConfig(**VARIANTS[variant], adversarial=AdversarialConfig(dropout=0.0), **extra)
    return ALIGNMENT_METHODS[cfg.method](cfg, DIM).double()


def value_and_gradient(loss: torch.nn.Module, source: torch.Tensor, target: torch.Tensor, masses=None):
    source = source.clone().requires_grad_()
    torch.manual_seed(0)  # the DANN discriminator's initialisation is already fixed; dropout is 0
    value = loss(source, target, blur=0.3, grl_strength=1.0, source_masses=masses)
    if not value.requires_grad:  # "none": a constant
        return value, None
    (gradient,) = torch.autograd.grad(value, source)
    return value.detach(), gradient


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_uniform_class_ratios_give_exactly_the_unweighted_loss(variant):
    """w = 1 for every class: the masses are 1/n and value and gradient equal the unweighted call's."""
    source, target = points(12, seed=0), points(10, seed=1, shift=0.5)
    masses = sample_masses(torch.ones(3, dtype=torch.float64), labels(12))
    assert torch.equal(masses, uniform_masses(source))
    loss = build(variant)
    plain, plain_grad = value_and_gradient(loss, source, target)
    weighted, weighted_grad = value_and_gradient(loss, source, target, masses)
    torch.testing.assert_close(weighted, plain, rtol=1e-12, atol=1e-14)
    if plain_grad is not None:
        torch.testing.assert_close(weighted_grad, plain_grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("variant", sorted(set(VARIANTS) - {"none"}))
def test_class_ratios_change_every_alignment_loss(variant):
    """The weights reach the loss: a non-uniform class ratio changes its value (the test above cannot pass by ignoring masses)."""
    source, target = points(12, seed=0), points(10, seed=1, shift=0.5)
    loss = build(variant)
    plain, _ = value_and_gradient(loss, source, target)
    weighted, _ = value_and_gradient(loss, source, target, sample_masses(RATIOS, labels(12)))
    assert abs(weighted.item() - plain.item()) > 1e-6


def entropic_ot(a: torch.Tensor, x: torch.Tensor, b: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """OT_eps(a, b) = <P, C> + eps KL(P | a x b), C = |x - y|^2 / 2, by POT (GeomLoss's convention, not POT's transport part)."""
    import ot

    cost = 0.5 * torch.cdist(x, y) ** 2
    plan = ot.sinkhorn(a, b, cost, eps, method="sinkhorn_log", numItermax=20000, stopThr=1e-12)
    return (plan * cost).sum() + eps * (plan * (plan / (a[:, None] * b[None, :])).log()).sum()


def pot_sinkhorn_divergence(a, x, y, eps: float) -> torch.Tensor:
    b = uniform_masses(y)
    return entropic_ot(a, x, b, y, eps) - 0.5 * entropic_ot(a, x, a, x, eps) - 0.5 * entropic_ot(b, y, b, y, eps)


@pytest.mark.parametrize("scaling, rel", [(0.999, 1e-5), (0.9, 1e-2)], ids=["annealed finely", "as trained"])
def test_weighted_sinkhorn_equals_pots_with_the_same_marginals(scaling, rel):
    """Debiased Sinkhorn with source marginal a = class-ratio masses, against the same divergence composed from POT's plans.

    GeomLoss anneals epsilon down to blur^2 (ratio ``scaling`` per step): at 0.999 the
    two agree to 1e-5; at the trainer's 0.9 to 1 %.
    """
    source, target = points(12, seed=0), points(10, seed=1, shift=0.5)
    masses = sample_masses(RATIOS, labels(12))
    loss = build("sinkhorn", normalize_features=False)
    loss.scaling = scaling
    value = loss(source, target, blur=0.3, grl_strength=0.0, source_masses=masses)
    expected = pot_sinkhorn_divergence(masses, source, target, 0.3**2)
    assert value.item() == pytest.approx(expected.item(), rel=rel)
    unweighted = pot_sinkhorn_divergence(uniform_masses(source), source, target, 0.3**2)
    assert abs(value.item() - unweighted.item()) > 3 * abs(value.item() - expected.item())  # the masses matter at this tolerance


def pot_plan_of(a: torch.Tensor, x: torch.Tensor, b: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    import ot

    return ot.sinkhorn(a, b, 0.5 * torch.cdist(x, y) ** 2, eps, method="sinkhorn_log", numItermax=20000, stopThr=1e-10)


def test_weighted_sinkhorn_gradient_is_the_envelope_gradient_from_pots_plans():
    r"""dS/dx_i = sum_j P_ij (x_i - y_j) - sum_k Q_ik (x_i - x_k), P the (a, b) plan and Q the (a, a) plan, from POT.

    GeomLoss's gradient converges to it as its annealing gets finer (error 1.6e-2, 3.1e-3,
    3.5e-4 at scaling 0.9, 0.99, 0.999 for a largest entry of 0.24 here): checked at 0.999.
    """
    source, target = points(6, seed=2), points(5, seed=3, shift=0.4)
    masses = sample_masses(RATIOS, labels(6))
    loss = build("sinkhorn", normalize_features=False)
    loss.scaling = 0.999
    _, gradient = value_and_gradient(loss, source, target, masses)
    transport = pot_plan_of(masses, source, uniform_masses(target), target, 0.3**2)
    self_transport = pot_plan_of(masses, source, masses, source, 0.3**2)
    expected = (transport.sum(1, keepdim=True) * source - transport @ target) - (self_transport.sum(1, keepdim=True) * source - self_transport @ source)
    torch.testing.assert_close(gradient, expected, rtol=0, atol=1e-3)
    uniform = pot_plan_of(uniform_masses(source), source, uniform_masses(target), target, 0.3**2)
    assert (transport - uniform).abs().max() > 0.05  # the class ratios move the plan far beyond that tolerance


def pot_unbalanced_plan_of(a: torch.Tensor, x: torch.Tensor, b: torch.Tensor, y: torch.Tensor, eps: float, rho: float) -> torch.Tensor:
    import ot

    return ot.unbalanced.sinkhorn_unbalanced(a, b, 0.5 * torch.cdist(x, y) ** 2, eps, rho, method="sinkhorn_stabilized",
                                             numItermax=100000, stopThr=1e-13)


@pytest.mark.parametrize("reach", [0.5, 1.0])
def test_unbalanced_sinkhorn_gradient_is_the_envelope_gradient_from_pots_plans_where_geomlosss_own_is_not(reach):
    r"""dS/dx_i = sum_j P_ij (x_i - y_j) - sum_k Q_ik (x_i - x_k) and dS/dy_j = sum_i P_ij (y_j - x_i) - sum_l R_jl (y_j - y_l),
    P, Q, R POT's unbalanced plans (KL marginal penalty rho = reach^2). GeomLoss differentiates its damped last step,
    which misses this by about eps/rho relative; the loss gives the envelope gradient from GeomLoss's potentials."""
    source, target = points(6, seed=2), points(5, seed=3, shift=0.4)
    masses, uniform = sample_masses(RATIOS, labels(6)), uniform_masses(target)
    loss = build("sinkhorn", reach=reach, normalize_features=False)
    loss.scaling = 0.99
    x, y = source.clone().requires_grad_(), target.clone().requires_grad_()
    value = loss(x, y, blur=0.3, grl_strength=0.0, source_masses=masses)
    gradient_x, gradient_y = torch.autograd.grad(value, (x, y))
    eps, rho = 0.3**2, reach**2
    transport = pot_unbalanced_plan_of(masses, source, uniform, target, eps, rho)
    source_self = pot_unbalanced_plan_of(masses, source, masses, source, eps, rho)
    target_self = pot_unbalanced_plan_of(uniform, target, uniform, target, eps, rho)
    expected_x = (transport.sum(1, keepdim=True) * source - transport @ target) - (source_self.sum(1, keepdim=True) * source - source_self @ source)
    expected_y = (transport.sum(0)[:, None] * target - transport.T @ source) - (target_self.sum(1, keepdim=True) * target - target_self @ target)
    torch.testing.assert_close(gradient_x, expected_x, rtol=0, atol=1e-3)
    torch.testing.assert_close(gradient_y, expected_y, rtol=0, atol=1e-3)
    raw = SamplesLoss("sinkhorn", p=2, blur=0.3, reach=reach, scaling=0.99, diameter=loss.diameter(source, target, 0.3), backend="tensorized")
    x = source.clone().requires_grad_()
    (geomloss_x,) = torch.autograd.grad(raw(masses, x, uniform, target), x)
    assert value.item() == pytest.approx(raw(masses, source, uniform, target).item(), rel=1e-12)  # the value is GeomLoss's
    assert (geomloss_x - expected_x).abs().max() > 5e-3  # and GeomLoss's own gradient misses by more than 5x the tolerance


@pytest.mark.parametrize("variant", ["energy", "gaussian", "laplacian", "dann"])
def test_weighted_loss_gradients_pass_gradcheck(variant):
    """float64, 5 source and 4 target points, masses from class ratios; d/d(source) and d/d(target).

    DANN runs at ``grl_strength=-1``: the reversal layer then passes the true
    gradient (at +1 it hands back its negative, by design).
    """
    loss = build(variant)
    masses = sample_masses(RATIOS, labels(5))
    source, target = points(5, seed=4).requires_grad_(), points(4, seed=5, shift=0.3).requires_grad_()
    assert torch.autograd.gradcheck(lambda s, t: loss(s, t, blur=0.5, grl_strength=-1.0, source_masses=masses), (source, target))


def test_unbalanced_sinkhorn_tends_to_the_balanced_one_as_reach_grows_and_forgives_a_mass_mismatch():
    source = torch.cat([points(8, seed=6), points(8, seed=7, shift=3.0)])  # two clusters, half and half
    target = torch.cat([points(4, seed=8), points(12, seed=9, shift=3.0)])  # the same clusters, 1/4 and 3/4
    values = {reach: build("sinkhorn", reach=reach, normalize_features=False)(source, target, blur=0.1, grl_strength=0.0)
              for reach in (None, 0.3, 1e3)}
    assert values[1e3].item() == pytest.approx(values[None].item(), rel=1e-3)
    assert values[0.3].item() < 0.5 * values[None].item()


def pot_plan(cost: torch.Tensor, a: torch.Tensor, eps: float) -> torch.Tensor:
    import ot

    return ot.sinkhorn(a, uniform_masses(cost.T), cost, eps, method="sinkhorn_log", numItermax=20000, stopThr=1e-12)


def test_weighted_topk_ot_plan_has_the_class_ratio_marginal_and_equals_pots():
    source, target = points(12, seed=0), points(10, seed=1, shift=0.5)
    masses = sample_masses(RATIOS, labels(12))
    _, diagnostics = topk_ot_loss(source, target, source_masses=masses, epsilon=0.1, epsilon_mode="absolute", tol=1e-13, max_iter=20000)
    cost = squared_distances(source, target)
    plan = pot_plan(cost, masses, 0.1)
    assert diagnostics["marginal_error"] < 1e-9
    assert diagnostics["ot_cost"].item() == pytest.approx((plan * cost).sum().item(), rel=1e-9)


def test_a_source_sample_of_mass_zero_adds_nothing_to_topk_ot():
    """The masses are the OT problem's marginal, not a factor after it: a zero-mass sample is nowhere in the plan."""
    source, target = points(9, seed=0), points(8, seed=1, shift=0.5)
    masses = sample_masses(torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64), labels(9))
    moved = source.clone()
    moved[1::3] += 5.0  # every class-1 sample (mass 0) sent far away
    options = dict(source_masses=masses, epsilon=0.1, epsilon_mode="absolute", tol=1e-13, max_iter=20000)
    here, _ = topk_ot_loss(source, target, **options)
    there, _ = topk_ot_loss(moved, target, **options)
    assert there.item() == pytest.approx(here.item(), rel=1e-9)


def test_weighted_topk_ot_cost_gradient_is_the_envelope_gradient_of_pots_entropic_ot():
    x, y = points(6, seed=2), points(5, seed=3, shift=0.4)
    masses = sample_masses(RATIOS, labels(6))
    eps = 0.1

    def entropic_value(bumped: torch.Tensor) -> float:
        cost = squared_distances(bumped, y)
        plan = pot_plan(cost, masses, eps)
        return float((plan * cost).sum() + eps * (plan * plan.log()).sum())

    leaf = x.clone().requires_grad_()
    loss, _ = topk_ot_loss(leaf, y, source_masses=masses, epsilon=eps, epsilon_mode="absolute", tol=1e-14, max_iter=20000,
                           cost_weight=1.0, match_weight=0.0, topk_weight=0.0)
    loss.backward()
    torch.testing.assert_close(leaf.grad, finite_difference(entropic_value, x), rtol=0, atol=1e-7)


def test_weighted_topk_ot_match_gradient_holds_the_plan_fixed():
    """d/dx_i = 2 a_i R_i / d and d/dY = -2 P^T R / d, R_i = x_i - (P Y)_i / a_i, with POT's plan."""
    x, y = points(8, seed=4).requires_grad_(), points(6, seed=5, shift=0.3).requires_grad_()
    masses = sample_masses(RATIOS, labels(8))
    loss, _ = topk_ot_loss(x, y, source_masses=masses, epsilon=0.2, epsilon_mode="absolute", tol=1e-14, max_iter=20000,
                           cost_weight=0.0, match_weight=1.0, topk_weight=0.0)
    loss.backward()
    plan = pot_plan(squared_distances(x.detach(), y.detach()), masses, 0.2)
    residual = x.detach() - plan @ y.detach() / masses[:, None]
    torch.testing.assert_close(x.grad, 2 * masses[:, None] * residual / DIM, rtol=0, atol=1e-9)
    torch.testing.assert_close(y.grad, -2 * plan.T @ residual / DIM, rtol=0, atol=1e-9)


def test_sample_masses_follow_the_class_ratios_and_never_divide_by_zero():
    batch = torch.tensor([0, 0, 1, 2])
    torch.testing.assert_close(sample_masses(torch.tensor([2.0, 1.0, 0.0]), batch), torch.tensor([0.4, 0.4, 0.2, 0.0]))
    torch.testing.assert_close(sample_masses(torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0, 1])), torch.tensor([0.5, 0.5]))
