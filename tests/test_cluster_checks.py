"""The multi-host checks (cluster/testbed/checks.py, probe.py) fail when a fault did not matter or a sweep lost points.

The checks run on the test bed (``make cluster-test``); here they meet hand-made
audits of the failures they exist to catch, and the probe's "restorable" condition
meets the experiment state of a real local Tune run.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from cluster.testbed import checks, probe

LOST_MS = 10_000


def child(run_id: str = "r1", trial: str = "t1", epochs: int = 3, **fields) -> dict:
    """A clean child run as ``probe.audit`` records it: epoch e completed at (e + 1) seconds."""
    return {"run_id": run_id, "trial": trial, "status": "FINISHED", "node_ip": "10.0.0.3", "node_ips": "10.0.0.3",
            "stopped_by": None, "epochs": list(range(epochs)), "first_ms": 500, "last_ms": 1000 * epochs + 500,
            "epoch_ms": {str(e): 1000 * (e + 1) for e in range(epochs)}, "duplicated": [], "missing": [], "mismatched": [],
            "artifacts": ["checkpoints/best.pt", "checkpoints/last.pt", "plots/training_history.png"], "checkpoint_bytes": 10} | fields


def audit(*children: dict) -> dict:
    return {"parent_status": "FINISHED", "children": list(children), "leaderboard_rows": [c["trial"] for c in children]}


def test_a_clean_sweep_passes_and_a_pruned_trial_may_stop_early():
    checks.check_sweep(audit(child("r1", "t1"), child("r2", "t2", epochs=2, stopped_by="asha")), trials=2, epochs=3)


@pytest.mark.parametrize("damage", [
    {"status": "KILLED"},
    {"duplicated": ["train/loss@1"]},
    {"missing": ["src_val/acc@2"]},
    {"mismatched": ["train/loss@0"]},
    {"epochs": [0, 1]},  # stopped early, and no scheduler stopped it
    {"epoch_ms": {"0": 1000, "2": 3000}},  # an epoch without its "complete" marker
    {"checkpoint_bytes": 0},
])
def test_a_damaged_run_fails_the_sweep_check(damage):
    with pytest.raises(AssertionError):
        checks.check_sweep(audit(child("r1", "t1"), child("r2", "t2") | damage), trials=2, epochs=3)


def test_a_trial_that_started_over_in_a_new_run_fails():
    restarted = audit(child("r9", "t1"))  # the trial's first run (r1) was retired; r9 began at epoch 0
    checks.check_sweep(restarted, trials=1, epochs=3)  # the sweep as such is complete ...
    with pytest.raises(AssertionError, match="started over"):
        checks.run_of(restarted, "r1")  # ... but the run the fault hit is gone


def test_a_fault_must_fall_inside_the_run():
    run = child(first_ms=500, last_ms=9000)
    checks.check_spans(run, before_ms=2000, after_ms=8000, fault="restart")
    with pytest.raises(AssertionError, match="nothing before"):
        checks.check_spans(run, before_ms=400, after_ms=8000, fault="restart")  # the run began after the fault
    with pytest.raises(AssertionError, match="nothing after"):
        checks.check_spans(run, before_ms=2000, after_ms=9500, fault="restart")  # it ended before the fault was over


def moved(**fields) -> dict:
    """A trial that ran epoch 0 on 10.0.0.2, lost that host at 10 s, and finished epochs 1-4 on 10.0.0.3."""
    return child(epochs=5, node_ips="10.0.0.2,10.0.0.3", epoch_ms={"0": 8000, "1": 14000, "2": 15000, "3": 16000, "4": 17000}) | fields


def test_a_lost_hosts_trial_must_go_on_in_its_run_on_another_host():
    assert checks.check_moved(moved(), "10.0.0.2", LOST_MS) == pytest.approx(4.0)
    cases = [
        moved(node_ips="10.0.0.3"),  # never ran on the lost host
        moved(node_ips="10.0.0.2"),  # never left it
        moved(node_ips="10.0.0.2,10.0.0.3,10.0.0.1"),  # moved twice
        moved(epoch_ms={"0": 11000, "1": 12000}),  # epoch 0 after the loss: it started over
        moved(epoch_ms={"0": 8000, "1": 9000}),  # nothing after the loss
    ]
    for case in cases:
        with pytest.raises(AssertionError):
            checks.check_moved(copy.deepcopy(case), "10.0.0.2", LOST_MS)


def test_the_restorable_condition_needs_a_checkpoint_in_tunes_saved_state(tmp_path):
    """A real local Tune run: the trial that checkpointed is restorable, the one that never did is not; no saved state: none."""
    import ray
    from ray import tune
    from ray.tune.result import DONE, SHOULD_CHECKPOINT

    class Steps(tune.Trainable):
        def step(self):
            return {"score": self.iteration, SHOULD_CHECKPOINT: self.config["checkpoint"], DONE: self.iteration >= 1}

        def save_checkpoint(self, checkpoint_dir):
            Path(checkpoint_dir, "iteration").write_text(str(self.iteration))

        def load_checkpoint(self, checkpoint_dir):
            pass

    assert probe.restorable_trials(str(tmp_path / "never-started")) == set()
    ray.init(address="local", num_cpus=1, include_dashboard=False)
    try:
        results = tune.Tuner(
            Steps, param_space={"checkpoint": tune.grid_search([True, False])},
            run_config=tune.RunConfig(name="probe", storage_path=str(tmp_path), verbose=0,
                                      checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False)),  # none but those asked for
        ).fit()
    finally:
        ray.shutdown()
    by_config = {result.config["checkpoint"]: result.metrics["trial_id"] for result in results}
    assert probe.restorable_trials(str(tmp_path / "probe")) == {by_config[True]}
