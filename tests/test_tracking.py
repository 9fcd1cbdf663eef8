"""MLflow runs that a trial re-attaches to after a restart: each epoch's points land once."""

from __future__ import annotations

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


def test_node_tags_record_each_host_a_trial_ran_on():
    assert node_tags("", "10.0.0.2") == {"node_ip": "10.0.0.2", "node_ips": "10.0.0.2"}
    assert node_tags("10.0.0.2", "10.0.0.2")["node_ips"] == "10.0.0.2"  # restarted on the same host
    assert node_tags("10.0.0.2", "10.0.0.3") == {"node_ip": "10.0.0.3", "node_ips": "10.0.0.2,10.0.0.3"}
