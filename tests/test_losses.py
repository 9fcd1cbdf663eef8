import math

import numpy as np

import pytest
import torch
import torch.nn.functional as F

from galaxy_da.config import AlignConfig, ClassLossConfig, TopKOTConfig
from galaxy_da.losses import (
    ALIGNMENT_METHODS,
    DomainDiscriminator,
    FocalLoss,
    GradientReversal,
    TopKOTLoss,
    UncertaintyWeights,
    build_classification_loss,
    class_weights,
    prediction_entropy,
    topk_ot_loss,
)
from galaxy_da.losses.topk_ot import entropic_plan, squared_distances

torch.set_num_threads(1)
DIM = 8
DIVERGENCES = ["sinkhorn", "energy", "gaussian", "laplacian", "topk_ot"]


def features(n: int = 32, seed: int = 0, shift: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * (torch.randn(n, DIM, generator=generator) + shift)


def align_loss(method: str, **cfg_fields) -> torch.nn.Module:
    return ALIGNMENT_METHODS[method](AlignConfig(method=method, **cfg_fields), DIM)


# --------------------------------------------------------------------------- classification


def test_focal_with_gamma_zero_and_no_alpha_is_cross_entropy():
    logits, targets = features(64)[:, :3] * 3, torch.arange(64) % 3
    assert FocalLoss(gamma=0.0)(logits, targets) == pytest.approx(F.cross_entropy(logits, targets).item(), abs=1e-6)


def test_focal_matches_hand_formula_with_per_class_alpha():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5], [-1.0, 3.0, 0.0]])
    targets = torch.tensor([0, 2, 1])
    alpha = torch.tensor([0.5, 2.0, 1.5])
    p = torch.softmax(logits, dim=1)[torch.arange(3), targets]
    expected = (-alpha[targets] * (1 - p) ** 2 * p.log()).mean()
    assert FocalLoss(gamma=2.0, alpha=alpha)(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)
    assert FocalLoss(gamma=2.0, alpha=[0.5, 2.0, 1.5])(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)


def test_scalar_alpha_scales_every_class():
    logits, targets = features(16)[:, :3], torch.arange(16) % 3
    plain = FocalLoss(gamma=2.0)(logits, targets)
    assert FocalLoss(gamma=2.0, alpha=0.25)(logits, targets).item() == pytest.approx(0.25 * plain.item(), rel=1e-6)


@pytest.mark.parametrize("gamma", [0.25, 0.5, 1.0, 2.0])
def test_focal_gradient_is_finite_on_saturated_logits(gamma):
    # margins 80 (p = 1 exactly in float32), 18 and 30 (1 - p near or in float32's subnormals), one unsaturated row
    logits = torch.tensor([[80.0, -80.0, 0.0], [18.0, 0.0, 0.0], [30.0, 0.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    FocalLoss(gamma=gamma, alpha=[0.5, 2.0, 1.5])(logits, torch.tensor([0, 0, 0, 1])).backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[0].abs().max() == 0  # p = 1: the focal term and its slope vanish
    assert logits.grad[3].abs().max() > 0


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_focal_gradient_matches_finite_differences(gamma):
    logits = (features(12)[:, :3] * 4).double().requires_grad_()
    targets = torch.arange(12) % 3
    loss = FocalLoss(gamma=gamma, alpha=[0.5, 2.0, 1.5]).double()
    assert torch.autograd.gradcheck(lambda z: loss(z, targets), (logits,))


def test_effective_number_weights_match_the_reference():
    weights = class_weights([576, 167, 1844], "effective_number", beta=0.9999)
    assert weights.tolist() == pytest.approx([0.637, 2.152, 0.212], abs=1e-3)


def test_balanced_and_uniform_weights():
    counts = [10, 30, 60]
    inverse = torch.tensor([1 / 10, 1 / 30, 1 / 60])
    assert torch.allclose(class_weights(counts, "balanced", 0.9), inverse / inverse.mean())
    assert class_weights(counts, "none", 0.9).tolist() == [1.0, 1.0, 1.0]
    assert torch.isfinite(class_weights([0, 5, 5], "effective_number", 0.9999)).all()


def test_build_classification_loss_resolves_class_weights():
    counts = [576, 167, 1844]
    loss = build_classification_loss(ClassLossConfig(gamma=1.0, alpha="class_weights"), counts)
    assert torch.allclose(loss.alpha, class_weights(counts, "effective_number", 0.9999))
    assert build_classification_loss(ClassLossConfig(alpha=None), counts).alpha is None
    assert build_classification_loss(ClassLossConfig(alpha=0.5), counts).alpha.item() == 0.5


# --------------------------------------------------------------------------- entropy, weighting, GRL


def test_prediction_entropy_bounds_and_hand_value():
    assert prediction_entropy(torch.zeros(4, 3)).item() == pytest.approx(math.log(3))
    assert prediction_entropy(torch.tensor([[1000.0, 0.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-12)
    p = torch.tensor([0.7, 0.2, 0.1])
    assert prediction_entropy(p.log()[None]).item() == pytest.approx(-(p * p.log()).sum().item(), rel=1e-6)


def test_uncertainty_weights_value_weights_and_constraints():
    weighting = UncertaintyWeights((0.1, 1.0))
    assert weighting.weights.tolist() == pytest.approx([50.0, 0.5])
    total = weighting([torch.tensor(2.0), torch.tensor(4.0)])
    assert total.item() == pytest.approx(2.0 * 50 + 4.0 * 0.5 + math.log(0.1), rel=1e-5)
    total.backward()
    # total = sum_i L_i / (2 eta_i^2) + log prod_i eta_i, so d/d log(eta_i) = 1 - L_i / eta_i^2 = 1 - 2 w_i L_i
    assert weighting.log_eta.grad.tolist() == pytest.approx([1 - 2 * 50.0 * 2.0, 1 - 2 * 0.5 * 4.0], rel=1e-5)
    with torch.no_grad():
        weighting.log_eta.copy_(torch.tensor([math.log(1e-5), math.log(1e-4)]))
    weighting.clamp_()
    eta = weighting.eta
    assert eta[0].item() == pytest.approx(1e-3, rel=1e-5)
    assert eta[1].item() == pytest.approx(0.25e-3, rel=1e-5)


@pytest.mark.parametrize("strength", [0.0, 0.3, 2.0])
def test_gradient_reversal_flips_and_scales_the_gradient(strength):
    x = features(4).requires_grad_()
    out = GradientReversal.apply(x, strength)
    assert torch.equal(out, x)
    (out * 3.0).sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, -3.0 * strength))


def test_discriminator_shape_with_and_without_projection():
    assert DomainDiscriminator(DIM, 16, 32, 0.1)(features(5)).shape == (5, 1)
    plain = DomainDiscriminator(DIM, None, 32, 0.1)
    assert plain(features(5)).shape == (5, 1)
    assert plain[0].in_features == DIM and plain[0].out_features == 32


# --------------------------------------------------------------------------- alignment


def test_registry_names():
    assert set(ALIGNMENT_METHODS) == {"none", "sinkhorn", "energy", "gaussian", "laplacian", "topk_ot", "dann"}


def test_none_is_a_zero_that_adds_to_a_loss():
    x = features().requires_grad_()
    zero = align_loss("none")(x, features(seed=1), blur=0.5, grl_strength=1.0)
    assert zero.item() == 0.0
    (x.sum() + zero).backward()
    assert torch.equal(x.grad, torch.ones_like(x))


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("method", DIVERGENCES)
def test_divergence_is_zero_on_identical_sets_and_grows_with_the_gap(method, normalize):
    loss = align_loss(method, normalize_features=normalize)
    source = features(seed=0)
    same = loss(source, source.clone(), blur=0.5, grl_strength=1.0)
    near = loss(source, features(seed=1, shift=0.5), blur=0.5, grl_strength=1.0)
    far = loss(source, features(seed=1, shift=3.0), blur=0.5, grl_strength=1.0)
    # top-k OT is not debiased: on raw features its entropic blur leaves a small relative residue
    assert abs(same.item()) < 1e-3 * max(1.0, far.item())
    assert far.item() > near.item() > same.item()


@pytest.mark.parametrize("method", DIVERGENCES + ["dann"])
def test_gradients_are_finite_and_a_step_reduces_the_divergence(method):
    loss = align_loss(method, normalize_features=False)
    source = features(seed=0).requires_grad_()
    target = features(seed=1, shift=1.0)
    value = loss(source, target, blur=0.5, grl_strength=1.0)
    value.backward()
    assert torch.isfinite(source.grad).all() and source.grad.abs().sum() > 0
    if method != "dann":  # the reversal makes DANN's feature step *raise* the domain loss
        with torch.no_grad():
            stepped = source - 0.05 * source.grad / source.grad.norm()
        assert loss(stepped, target, blur=0.5, grl_strength=1.0).item() < value.item()


def test_sinkhorn_on_raw_unnormalised_features():
    loss = align_loss("sinkhorn", normalize_features=False)
    source = features(seed=0, scale=10.0).requires_grad_()
    value = loss(source, features(seed=1, shift=2.0, scale=10.0), blur=0.5, grl_strength=0.0)
    value.backward()
    # far beyond the blur, the debiased divergence is close to W2^2 / 2 ~ |shift * scale|^2 * DIM / 2
    assert 0.5 * 400 * DIM < value.item() < 2.0 * 400 * DIM
    assert torch.isfinite(source.grad).all()


@pytest.mark.parametrize("method", DIVERGENCES)
def test_a_batch_collapsed_to_one_point_does_not_crash(method):
    loss = align_loss(method, normalize_features=False)
    point = torch.zeros(8, DIM, requires_grad=True)
    value = loss(point, torch.zeros(6, DIM), blur=0.5, grl_strength=1.0)
    value.backward()
    assert abs(value.item()) < 1e-6 and torch.isfinite(point.grad).all()


def test_dann_discriminator_learns_far_domains_but_not_identical_ones():
    def train(target: torch.Tensor) -> tuple[float, float]:
        torch.manual_seed(0)
        loss = align_loss("dann", normalize_features=False, adversarial={"projection": 16, "hidden": 32, "dropout": 0.0})
        optimizer = torch.optim.Adam(loss.parameters(), lr=1e-2)
        for _ in range(60):
            optimizer.zero_grad()
            value = loss(source, target, blur=0.5, grl_strength=1.0)
            value.backward()
            optimizer.step()
        return value.item(), loss.diagnostics["domain_acc"]

    source = features(64, seed=0)
    far_loss, far_acc = train(features(64, seed=1, shift=3.0))
    same_loss, same_acc = train(source.clone())
    assert far_acc == 1.0 and far_loss < 0.05
    assert same_loss == pytest.approx(math.log(2), abs=1e-3) and same_acc <= 0.6


# --------------------------------------------------------------------------- top-k OT


def reference_log_sinkhorn(cost: torch.Tensor, eps: float, iterations: int = 3000) -> torch.Tensor:
    """The entropic plan by an independent library: POT's log-domain Sinkhorn, float64, uniform marginals, to convergence."""
    import ot

    n, m = cost.shape
    uniform = lambda k: torch.full((k,), 1.0 / k, dtype=torch.float64)
    return ot.sinkhorn(uniform(n), uniform(m), cost.detach().double(), eps, method="sinkhorn_log", numItermax=iterations, stopThr=1e-13)


def test_topk_ot_plan_and_cost_match_an_independent_float64_sinkhorn():
    source = F.normalize(features(24, seed=0), dim=1)
    target = F.normalize(features(20, seed=1, shift=0.3), dim=1)
    _, diagnostics = topk_ot_loss(source, target)
    cost = squared_distances(source.double(), target.double())
    eps = 0.05 * cost.median().item()
    expected_plan = reference_log_sinkhorn(cost, eps)
    plan, _ = entropic_plan(cost, torch.tensor(eps, dtype=torch.float64), max_iter=1000, tol=1e-9)
    assert diagnostics["epsilon"] == pytest.approx(eps)
    assert torch.allclose(plan, expected_plan, rtol=1e-5, atol=1e-5 * expected_plan.max().item())
    assert diagnostics["ot_cost"] == pytest.approx((expected_plan * cost).sum().item(), rel=1e-5)


def test_topk_ot_marginals_converge_at_the_default_epsilon():
    _, diagnostics = topk_ot_loss(F.normalize(features(64), dim=1), F.normalize(features(48, seed=1, shift=0.5), dim=1))
    assert diagnostics["marginal_error"] <= 1e-4
    assert diagnostics["iterations"] < 1000


@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_topk_ot_stays_finite_at_tiny_epsilon_and_large_features(scale):
    source = features(32, scale=scale).requires_grad_()
    loss, diagnostics = topk_ot_loss(source, features(32, seed=1, shift=1.0, scale=scale), epsilon=1e-4, max_iter=200)
    loss.backward()
    assert math.isfinite(loss.item()) and all(math.isfinite(v) for v in diagnostics.values())
    assert torch.isfinite(source.grad).all()


def test_topk_ot_total_is_the_configured_weighted_sum():
    source, target = features(16), features(16, seed=1, shift=1.0)
    weights = dict(cost_weight=0.3, match_weight=0.6, topk_weight=0.1)
    module = TopKOTLoss(AlignConfig(normalize_features=False, topk=3, ot=TopKOTConfig(**weights)), DIM)
    total = module(source, target, blur=0.5, grl_strength=0.0).item()
    d = {key: float(value) for key, value in module.diagnostics.items()}  # detached device tensors, read once per epoch by the trainer
    assert total == pytest.approx(0.3 * d["ot_cost"] + 0.6 * d["match_mse"] + 0.1 * d["topk"], rel=1e-6)
    default = TopKOTLoss(AlignConfig(normalize_features=False, topk=3), DIM)(source, target, blur=0.5, grl_strength=0.0)
    assert default.item() != pytest.approx(total, rel=1e-3)
    nearest = squared_distances(source, target).min(dim=1).values
    assert d["topk"] == pytest.approx(nearest.topk(3).values.mean().item(), rel=1e-5)


def test_topk_is_clamped_to_the_batch_size():
    source, target = features(4), features(6, seed=1)
    _, diagnostics = topk_ot_loss(source, target, k=50)
    assert diagnostics["topk"] == pytest.approx(squared_distances(source, target).min(dim=1).values.mean().item(), rel=1e-5)


def entropic_ot_value(cost: torch.Tensor, eps: float) -> float:
    """W_eps(C) = <P, C> - eps H(P) at the independent solver's converged plan, H(P) = -sum P log P."""
    plan = reference_log_sinkhorn(cost, eps, iterations=800)
    return float((plan * cost).sum() + eps * (plan * plan.log()).sum())


def finite_difference(value, tensor: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    grad = torch.zeros_like(tensor)
    for index in np.ndindex(*tensor.shape):
        bumped = tensor.clone()
        bumped[index] += h
        up = value(bumped)
        bumped[index] -= 2 * h
        grad[index] = (up - value(bumped)) / (2 * h)
    return grad


def test_topk_ot_cost_gradient_is_the_envelope_gradient_of_entropic_ot():
    """d<P*,C>/dX equals the gradient of W_eps(C(X, Y)) by finite differences of an independent solver."""
    x = F.normalize(features(6, seed=0), dim=1).double()[:, :4].contiguous().requires_grad_()
    y = F.normalize(features(5, seed=1, shift=0.4), dim=1).double()[:, :4].contiguous().requires_grad_()
    eps = 0.1
    loss, _ = topk_ot_loss(x, y, epsilon=eps, epsilon_mode="absolute", tol=1e-14, max_iter=20000, cost_weight=1.0, match_weight=0.0, topk_weight=0.0)
    loss.backward()
    expected_x = finite_difference(lambda bumped: entropic_ot_value(squared_distances(bumped, y.detach()), eps), x.detach())
    expected_y = finite_difference(lambda bumped: entropic_ot_value(squared_distances(x.detach(), bumped), eps), y.detach())
    assert torch.allclose(x.grad, expected_x, atol=1e-7) and torch.allclose(y.grad, expected_y, atol=1e-7)


def test_the_entropic_plan_is_the_gradient_of_entropic_ot_with_respect_to_the_cost():
    cost = squared_distances(F.normalize(features(7, seed=2), dim=1).double(), F.normalize(features(6, seed=3, shift=0.2), dim=1).double())
    eps = 0.05 * cost.median().item()
    plan, _ = entropic_plan(cost, torch.tensor(eps, dtype=torch.float64), max_iter=20000, tol=1e-14)
    assert torch.allclose(plan, finite_difference(lambda c: entropic_ot_value(c, eps), cost), atol=1e-7)  # dW_eps/dC = P*


@pytest.mark.parametrize("weighted", [False, True])
def test_topk_ot_topk_gradient_matches_finite_differences_of_its_formula(weighted):
    """The top-k term (1/k) topk_k(n a_i min_j C_ij) differentiated by autograd, against finite differences of the
    formula written out here (generic points: every min and the k-th largest are unique, so it is smooth nearby)."""
    n, m, k = 7, 5, 3
    x = features(n, seed=6).double()[:, :4].contiguous().requires_grad_()
    y = features(m, seed=7, shift=0.3).double()[:, :4].contiguous().requires_grad_()
    masses = torch.tensor([0.05, 0.1, 0.2, 0.1, 0.25, 0.2, 0.1], dtype=torch.float64) if weighted else torch.full((n,), 1 / n, dtype=torch.float64)

    def formula(x_: torch.Tensor, y_: torch.Tensor) -> float:
        nearest = ((x_[:, None, :] - y_[None, :, :]) ** 2).sum(-1).min(dim=1).values
        return float((n * masses * nearest).sort(descending=True).values[:k].mean())

    loss, _ = topk_ot_loss(x, y, source_masses=masses if weighted else None, k=k, cost_weight=0.0, match_weight=0.0, topk_weight=1.0)
    loss.backward()
    assert torch.allclose(x.grad, finite_difference(lambda bumped: formula(bumped, y.detach()), x.detach()), atol=1e-6)
    assert torch.allclose(y.grad, finite_difference(lambda bumped: formula(x.detach(), bumped), y.detach()), atol=1e-6)
    assert x.grad.abs().sum() > 0 and (x.grad.abs().sum(dim=1) > 0).sum() == k  # only the k farthest points move


def test_topk_ot_match_gradient_holds_the_plan_fixed():
    """Against the hand-derived gradient with the independent solver's plan: dX = 2R/(nd), dY = -2 P^T R / d."""
    n, m, d = 8, 6, 5
    x = F.normalize(features(n, seed=4), dim=1).double()[:, :d].contiguous().requires_grad_()
    y = F.normalize(features(m, seed=5, shift=0.3), dim=1).double()[:, :d].contiguous().requires_grad_()
    eps = 0.2
    loss, _ = topk_ot_loss(x, y, epsilon=eps, epsilon_mode="absolute", tol=1e-14, max_iter=20000, cost_weight=0.0, match_weight=1.0, topk_weight=0.0)
    loss.backward()
    plan = reference_log_sinkhorn(squared_distances(x.detach(), y.detach()), eps, iterations=4000)
    residual = x.detach() - n * plan @ y.detach()
    assert torch.allclose(x.grad, 2 * residual / (n * d), atol=1e-9)
    assert torch.allclose(y.grad, -2 * plan.T @ residual / d, atol=1e-9)
