"""Target-prior estimation without target labels, and its wiring into training.

Estimators against known priors: a synthetic confusion matrix (exact population
values) and a logistic model trained on Gaussian blobs with a planted shift.
Training: the estimate is logged per aligning epoch, reaches the objective, a
run with ratios of exactly 1 is the unweighted run, and no target label is read.
"""

import numpy as np
import pytest
import torch
from scipy.optimize import approx_fprime
from scipy.special import softmax

from galaxy_da.config import ConfigError, load_config
from galaxy_da.label_shift.estimators import (bbse_from_confusion, bbse_priors, bcts_calibration, bcts_objective, em_bcts_priors,
                                              em_from_posteriors, em_priors, prior_correction)
from galaxy_da.label_shift.refresh import prior_record
from galaxy_da.label_shift.weights import class_ratios, label_frequencies
from galaxy_da.registries import PRIOR_ESTIMATORS
from galaxy_da.train import Trainer, train

PRIORS = lambda *percent: np.array(percent) / sum(percent)  # the rounded percentages, renormalised
SOURCE = PRIORS(22.2, 6.4, 71.3)  # TNG50: elliptical, irregular, spiral (issue 18)
DESI = PRIORS(59.3, 3.1, 37.6)
SDSS = PRIORS(13.7, 8.4, 77.9)
LIKELIHOOD = np.array([[0.70, 0.25, 0.10], [0.20, 0.55, 0.25], [0.10, 0.20, 0.65]])  # P(x = i | y = j) of a 3-valued observation


def population(priors: np.ndarray, size: int = 20_000) -> np.ndarray:
    """Observations x in exact proportion sum_j P(x|j) priors_j."""
    return np.repeat(np.arange(3), np.round(LIKELIHOOD @ priors * size).astype(int))


def labelled_population(priors: np.ndarray, size: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (x, y) in exact proportion P(x|y) priors_y: observations (N,) and labels (N,)."""
    counts = np.round(LIKELIHOOD * priors * size).astype(int)  # (x, y)
    pairs = np.repeat(np.arange(9), counts.ravel())
    return pairs // 3, pairs % 3


def posteriors(observations: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Bayes posteriors P(y | x) under ``prior``, (N, 3)."""
    joint = LIKELIHOOD * prior
    return (joint / joint.sum(axis=1, keepdims=True))[observations]


@pytest.mark.parametrize("target", [DESI, SDSS, SOURCE], ids=["desi", "sdss", "no shift"])
def test_bbse_recovers_the_priors_exactly_from_a_synthetic_confusion_matrix(target):
    confusion = LIKELIHOOD * SOURCE  # joint P_s(yhat = i, y = j)
    np.testing.assert_allclose(bbse_from_confusion(confusion, LIKELIHOOD @ target), target, atol=1e-12)


@pytest.mark.parametrize("trained_under", ["source", "uniform"], ids=["posteriors under p", "class-weighted training"])
@pytest.mark.parametrize("target", [DESI, SDSS], ids=["desi", "sdss"])
def test_em_recovers_the_priors_from_exact_posteriors(target, trained_under):
    """Even when the classifier's posteriors reflect a balanced prior (class-weighted loss), after the prior correction."""
    prior = SOURCE if trained_under == "source" else np.full(3, 1 / 3)
    (source_x, source_labels), target_x = labelled_population(SOURCE), population(target)
    estimate = em_priors(posteriors(source_x, prior), source_labels, posteriors(target_x, prior))
    np.testing.assert_allclose(estimate, target, atol=2e-4)
    if trained_under == "uniform":  # without the correction Saerens' EM would be far off: the correction is what is tested
        assert np.abs(em_from_posteriors(posteriors(target_x, prior), SOURCE) - target).max() > 0.05


def test_the_prior_correction_recovers_the_ratio_of_the_two_priors():
    balanced = np.full(3, 1 / 3)
    np.testing.assert_allclose(prior_correction(posteriors(population(SOURCE), balanced), SOURCE), SOURCE, atol=1e-4)  # p / pi'


def distorted(probs: np.ndarray, sharpness: float, bias: np.ndarray) -> np.ndarray:
    """softmax(sharpness log probs + bias): over-confident for sharpness > 1, leaning to the classes with bias > 0."""
    return softmax(sharpness * np.log(probs) + bias, axis=1)


BIAS = np.array([0.0, 0.8, -0.5])


def test_bcts_undoes_a_planted_temperature_and_bias():
    """Posteriors sharpened (a = 1/2.5) and biased: the fit on the labelled source returns a = 1/sharpness, b = -bias/sharpness."""
    source_x, source_labels = labelled_population(SOURCE)
    scale, bias = bcts_calibration(distorted(posteriors(source_x, SOURCE), 2.5, BIAS), source_labels)
    assert scale == pytest.approx(1 / 2.5, rel=1e-3)
    np.testing.assert_allclose(bias, -BIAS / 2.5, atol=2e-3)


def test_the_bcts_gradient_is_the_derivative_of_its_objective():
    """The analytic gradient L-BFGS-B is given, against forward finite differences of the objective at random points."""
    rng = np.random.default_rng(3)
    logits, onehot = np.log(softmax(rng.normal(size=(50, 3)), axis=1)), np.eye(3)[rng.integers(0, 3, 50)]
    for params in rng.normal(size=(4, 3)) + [1.0, 0.0, 0.0]:
        numeric = approx_fprime(params, lambda p: bcts_objective(p, logits, onehot)[0], 1e-6)
        np.testing.assert_allclose(bcts_objective(params, logits, onehot)[1], numeric, atol=1e-6)


def test_em_bcts_recovers_the_priors_from_over_confident_posteriors_where_prior_corrected_em_does_not():
    (source_x, source_labels), target_x = labelled_population(SOURCE), population(DESI)
    source, target = distorted(posteriors(source_x, SOURCE), 2.5, BIAS), distorted(posteriors(target_x, SOURCE), 2.5, BIAS)
    np.testing.assert_allclose(em_bcts_priors(source, source_labels, target), DESI, atol=2e-3)
    assert np.abs(em_priors(source, source_labels, target) - DESI).max() > 0.03  # the prior correction alone leaves the confidence


def blobs(priors: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.choice(3, size=size, p=priors)
    centres = np.array([[0.0, 0.0], [2.2, 0.5], [0.8, 2.2]])
    return centres[labels] + rng.standard_normal((size, 2)), labels


@pytest.mark.parametrize("estimator", sorted(PRIOR_ESTIMATORS))
def test_estimators_recover_a_planted_shift_through_a_trained_logistic_model(estimator):
    """TNG50-like source priors, DESI-like target; a class-weighted logistic regression; within 3 points per class."""
    rng = np.random.default_rng(0)
    (train_x, train_y), (val_x, val_y) = blobs(SOURCE, 4000, rng), blobs(SOURCE, 4000, rng)
    target_x, target_y = blobs(DESI, 6000, rng)
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 3)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    weights = torch.as_tensor(1.0 / (3 * label_frequencies(np.bincount(train_y))), dtype=torch.float32)
    inputs, targets = torch.as_tensor(train_x, dtype=torch.float32), torch.as_tensor(train_y)
    for _ in range(300):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), targets, weight=weights).backward()
        optimiser.step()
    probs = lambda x: torch.softmax(model(torch.as_tensor(x, dtype=torch.float32)), dim=1).detach().double().numpy()
    estimate = PRIOR_ESTIMATORS[estimator](probs(val_x), val_y, probs(target_x))
    truth = np.bincount(target_y, minlength=3) / len(target_y)
    assert estimate.sum() == pytest.approx(1.0) and (estimate >= 0).all()
    np.testing.assert_allclose(estimate, truth, atol=0.03)
    assert np.abs(np.bincount(probs(target_x).argmax(1), minlength=3) / len(target_x) - truth).max() > 0.05  # naive counting is not enough


def test_class_ratios_are_q_over_p_and_zero_for_a_class_the_source_lacks():
    np.testing.assert_allclose(class_ratios(DESI, SOURCE), DESI / SOURCE)
    np.testing.assert_allclose(class_ratios([0.5, 0.25, 0.25], [0.5, 0.5, 0.0]), [1.0, 0.5, 0.0])


def test_config_keys():
    defaults = load_config(None).align
    assert defaults.label_shift == "none" and defaults.reach is None and defaults.ratio_momentum == 0.5
    with pytest.raises(ConfigError, match=r"align.ratio_momentum"):
        load_config(None, ["align.ratio_momentum=1"])  # 1 would never move from w = 1
    assert load_config(None, ["align.label_shift=em", "align.method=dann"]).align.label_shift == "em"
    with pytest.raises(ConfigError, match=r"align.label_shift: unknown label-shift estimator 'bbs'; choose from \['none', 'bbse', 'em', 'em_bcts'\]"):
        load_config(None, ["align.label_shift=bbs"])
    with pytest.raises(ConfigError, match=r"reach \(unbalanced OT\) applies to method 'sinkhorn' only; method is 'energy'"):
        load_config(None, ["align.method=energy", "align.reach=0.5"])


TINY = ["model.width=4", "data.batch_size=16", "optim.steps_per_epoch=2", "optim.epochs=3", "optim.warmup_epochs=1", "data.eval_batch_size=64"]


def tiny(data_path, *extra):
    return load_config(None, [f"data.path={data_path}", *TINY, *extra])


@pytest.mark.parametrize("method, momentum", [("sinkhorn", 0.5), ("dann", 0.5), ("topk_ot", 0.5), ("sinkhorn", 0.0)])
def test_aligning_epochs_log_the_estimate_and_the_objective_uses_its_moving_average(method, momentum, toy_dataset, tmp_path):
    cfg = tiny(toy_dataset, f"align.method={method}", "align.label_shift=bbse", f"align.ratio_momentum={momentum}")
    trainer = Trainer(cfg, checkpoint_dir=tmp_path)
    history = list(trainer.epochs())
    names = trainer.data.view.class_names
    assert not any(key.startswith("label_shift/") for key in history[0])  # warm-up: nothing aligned, nothing estimated
    applied = np.ones(len(names))  # w_0 = 1
    for record in history[1:]:
        priors = [record[f"label_shift/prior/{name}"] for name in names]
        assert sum(priors) == pytest.approx(1.0) and min(priors) >= 0.0
        applied = momentum * applied + (1 - momentum) * class_ratios(priors, label_frequencies(trainer.data.train_counts))
        np.testing.assert_allclose([record[f"label_shift/weight/{name}"] for name in names], applied, rtol=1e-6)  # w_{t-1}: a float32 buffer
    np.testing.assert_allclose(trainer.objective.class_ratios.cpu().numpy(), applied, rtol=1e-6)
    assert np.isfinite(history[-1]["train/loss_align"])


def test_the_moving_average_keeps_the_source_weighted_to_a_distribution_and_damps_a_first_estimate():
    counts = [220, 64, 716]  # p = 0.22, 0.064, 0.716
    p = label_frequencies(counts)
    collapsed = np.array([0.9, 0.05, 0.05])  # a first estimate from a model that calls most of the target one class
    ratios, record = prior_record(collapsed, counts, ["e", "i", "s"], np.ones(3), 0.5)
    np.testing.assert_allclose(ratios, 0.5 + 0.5 * collapsed / p, rtol=1e-12)
    assert float(p @ ratios) == pytest.approx(1.0)  # p-weighted ratios still sum to 1: the weighted source is a distribution
    assert record["label_shift/prior/e"] == 0.9 and record["label_shift/weight/e"] == pytest.approx(0.5 + 0.5 * 0.9 / 0.22)
    alone, _ = prior_record(collapsed, counts, ["e", "i", "s"], np.ones(3), 0.0)
    np.testing.assert_allclose(alone, collapsed / p, rtol=1e-12)
    assert abs(ratios - 1).max() < abs(alone - 1).max()  # half-way from no re-weighting to the estimate


def test_ratios_of_exactly_one_train_the_unweighted_run(toy_dataset, tmp_path, monkeypatch):
    """An estimator that returns the source training priors gives w = 1: the weights and the losses equal label_shift=none's."""
    plain = train(tiny(toy_dataset, "align.method=sinkhorn"), checkpoint_dir=tmp_path / "plain")
    counts = Trainer(tiny(toy_dataset), checkpoint_dir=tmp_path / "probe").data.train_counts
    monkeypatch.setitem(PRIOR_ESTIMATORS, "source_priors", lambda *_: label_frequencies(counts))
    weighted = train(tiny(toy_dataset, "align.method=sinkhorn", "align.label_shift=source_priors"), checkpoint_dir=tmp_path / "weighted")
    assert all(value == 1.0 for key, value in weighted.history[-1].items() if key.startswith("label_shift/weight/"))
    losses = lambda result: [{k: v for k, v in r.items() if k.startswith("train/loss")} for r in result.history]
    assert losses(weighted) == losses(plain)


def test_evaluation_sets_the_true_target_priors_beside_every_estimate():
    from galaxy_da.label_shift.evaluation import prior_metrics
    from galaxy_da.selection import Predictions

    (source_x, source_labels), target_x = labelled_population(SOURCE, 3000), population(DESI, 3000)
    balanced = np.full(3, 1 / 3)  # a class-weighted classifier: its argmax is x, so BBSE's confusion matrix is invertible
    as_predictions = lambda x, labels=None: Predictions(np.log(posteriors(x, balanced)), np.zeros((len(x), 1)), labels)
    test_labels = np.repeat([0, 1, 2], [60, 10, 30])
    metrics = prior_metrics({"src_val": as_predictions(source_x, source_labels), "tgt_adapt": as_predictions(target_x),
                             "tgt_test": as_predictions(target_x[:100], test_labels)}, ["elliptical", "irregular", "spiral"])
    assert [metrics[f"eval/tgt_test/prior/{name}"] for name in ("elliptical", "irregular", "spiral")] == [0.6, 0.1, 0.3]
    for estimator in PRIOR_ESTIMATORS:
        estimate = np.array([metrics[f"eval/label_shift/{estimator}/prior/{name}"] for name in ("elliptical", "irregular", "spiral")])
        np.testing.assert_allclose(estimate, DESI, atol=3e-3)  # 3000 rounded counts
        assert metrics[f"eval/label_shift/{estimator}/max_abs_error"] == pytest.approx(np.abs(estimate - [0.6, 0.1, 0.3]).max())
