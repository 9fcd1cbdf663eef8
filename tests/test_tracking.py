"""MLflow runs that a trial re-attaches to after a restart: each epoch's points land once."""

from __future__ import annotations

import pytest

from galaxy_da.config import load_config
from galaxy_da.sweep.trainable import node_tags
from galaxy_da.tracking import EPOCH_METRIC, RunTracker


def test_a_reattached_run_skips_the_epochs_it_already_holds(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(None, {"tracking.experiment": "reattach"})
    first = RunTracker(cfg, tracking_uri=uri)
    first.log_epoch({"epoch": 0, EPOCH_METRIC: 1.0, "src_val/acc": 0.5})
    resumed = RunTracker(cfg, tracking_uri=uri, run_id=first.run_id)  # killed after logging epoch 0, before its checkpoint
    resumed.log_epoch({"epoch": 0, EPOCH_METRIC: 0.9, "src_val/acc": 0.6})  # epoch 0 again, from the older checkpoint
    resumed.log_epoch({"epoch": 1, EPOCH_METRIC: 0.8, "src_val/acc": 0.7})
    history = {key: [(p.step, p.value) for p in first.client.get_metric_history(first.run_id, key)] for key in (EPOCH_METRIC, "src_val/acc")}
    assert history == {EPOCH_METRIC: [(0, 1.0), (1, 0.8)], "src_val/acc": [(0, 0.5), (1, 0.7)]}


def test_the_method_and_target_tags_tell_weighted_unbalanced_and_marginal_runs_apart(tmp_path):
    def tags(*overrides: str) -> dict[str, str]:
        tracker = RunTracker(load_config(None, ["tracking.experiment=tags", *overrides]), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
        return tracker.client.get_run(tracker.run_id).data.tags

    assert (tags()["method"], tags()["target"]) == ("none", "sdss")
    assert tags("align.method=laplacian", "align.ot.weight=0.5")["method"] == "laplacian+topk_ot"
    assert tags("align.method=laplacian", "align.ot.weight=0.5", "align.label_shift=bbse")["method"] == "laplacian+topk_ot+bbse"
    assert tags("align.method=sinkhorn", "align.reach=0.5", "align.label_shift=em")["method"] == "sinkhorn+reach0.5+em"
    assert tags("align.method=dann", "align.label_shift=bbse", "data.target=desi").items() >= {"method": "dann+bbse", "target": "desi"}.items()


def test_node_tags_record_each_host_a_trial_ran_on():
    assert node_tags("", "10.0.0.2") == {"node_ip": "10.0.0.2", "node_ips": "10.0.0.2"}
    assert node_tags("10.0.0.2", "10.0.0.2")["node_ips"] == "10.0.0.2"  # restarted on the same host
    assert node_tags("10.0.0.2", "10.0.0.3") == {"node_ip": "10.0.0.3", "node_ips": "10.0.0.2,10.0.0.3"}


class FailingStore:
    """A real MLflow client on a sqlite store whose ``fail_on``-th ``log_batch`` raises, as a server going away between batches would."""

    def __init__(self, client, fail_on: int):
        self.client, self.fail_on, self.batches = client, fail_on, []

    def __getattr__(self, name):
        return getattr(self.client, name)

    def log_batch(self, run_id, metrics=(), **kwargs):
        self.batches.append([metric.key for metric in metrics])
        if len(self.batches) == self.fail_on:
            raise ConnectionError("tracking server went away")
        return self.client.log_batch(run_id, metrics=metrics, **kwargs)


def big_epoch(epoch: int, loss: float) -> dict:
    """An epoch of 2 + 2 x 500 points: three batches of at most 900."""
    return {"epoch": epoch, EPOCH_METRIC: loss, "src_val/acc": 0.5, "steps": [{"loss": loss + i, "grad_norm": 1.0} for i in range(500)]}


@pytest.mark.parametrize("fail_on", [2, 3])
def test_an_epoch_cut_between_batches_has_no_train_loss_and_a_resumed_run_logs_it_again(tmp_path, fail_on):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(None, {"tracking.experiment": "cut"})
    first = RunTracker(cfg, tracking_uri=uri)
    first.client = FailingStore(first.client, fail_on)
    with pytest.raises(ConnectionError):
        first.log_epoch(big_epoch(0, 1.0))
    client = first.client.client
    assert client.get_metric_history(first.run_id, EPOCH_METRIC) == []  # the epoch is not marked complete
    resumed = RunTracker(cfg, tracking_uri=uri, run_id=first.run_id)
    resumed.log_epoch(big_epoch(0, 1.0))
    assert [(p.step, p.value) for p in client.get_metric_history(first.run_id, EPOCH_METRIC)] == [(0, 1.0)]
    assert [p.step for p in client.get_metric_history(first.run_id, "step/loss")][-1] == 499  # the points cut off are in
    for key, steps in [("step/loss", list(range(500))), ("step/grad_norm", list(range(500))), ("src_val/acc", [0])]:
        assert sorted(p.step for p in client.get_metric_history(first.run_id, key)) == steps, key  # each point once


def test_train_loss_goes_last_in_a_batch_of_its_own(tmp_path):
    tracker = RunTracker(load_config(None, {"tracking.experiment": "order"}), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracker.client = FailingStore(tracker.client, fail_on=0)
    tracker.log_epoch(big_epoch(0, 1.0))
    assert [len(batch) for batch in tracker.client.batches] == [900, 101, 1] and tracker.client.batches[-1] == [EPOCH_METRIC]


def test_experiments_are_model_training_experiments_and_an_untagged_one_is_tagged(tmp_path):
    """MLflow's UI classifies an experiment by its kind tag; one made before this tag existed gets it, another kind stays."""
    from galaxy_da.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, ensure_experiment, mlflow_client

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_client(uri)
    fresh = ensure_experiment(client, "fresh", uri)
    old = client.create_experiment("old")
    genai = client.create_experiment("genai", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    for name in ("old", "genai"):
        ensure_experiment(client, name, uri)
    kinds = {id_: client.get_experiment(id_).tags.get(EXPERIMENT_KIND_TAG) for id_ in (fresh, old, genai)}
    assert kinds == {fresh: MODEL_TRAINING_KIND, old: MODEL_TRAINING_KIND, genai: "genai_development"}


def test_a_trial_logs_its_sweep_score_before_its_other_metrics(tmp_path):
    """MLflow's compare-runs page plots the first metric a run logged; an epoch record starts with lr."""
    tracker = RunTracker(load_config(None, {"tracking.experiment": "lead"}), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracker.log_epoch({"epoch": 0, "lr": 0.003, "src_val/acc": 0.5, "best/score": 0.4, EPOCH_METRIC: 1.0})
    assert list(tracker.client.get_run(tracker.run_id).data.metrics)[0] == "best/score"
