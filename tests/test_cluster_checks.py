"""The multi-host checks (cluster/testbed/checks.py, probe.py) fail when a fault did not matter or a sweep lost points.

The checks run on the test bed (``make cluster-test``); here they meet hand-made
audits of the failures they exist to catch, the probe's "restorable" condition
meets the experiment state of a real local Tune run, the "registered" condition
Tune's order of saving and stepping, and the pause every fault waits on real processes.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.testbed import checks, probe
from cluster.testbed.host import paused

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

    from galaxy_da.sweep.ray_start import init_local_ray

    class Steps(tune.Trainable):
        def step(self):
            return {"score": self.iteration, SHOULD_CHECKPOINT: self.config["checkpoint"], DONE: self.iteration >= 1}

        def save_checkpoint(self, checkpoint_dir):
            Path(checkpoint_dir, "iteration").write_text(str(self.iteration))

        def load_checkpoint(self, checkpoint_dir):
            pass

    assert probe.restorable_trials(str(tmp_path / "never-started")) == set()
    init_local_ray(num_cpus=1, include_dashboard=False)
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
    saved, unsaved = (dict(live(f"run-{flag}", epochs=2), trial=by_config[flag]) for flag in (True, False))
    assert probe.restorable(progress_of(unsaved, saved), str(tmp_path / "probe"))["run_id"] == "run-True"
    assert probe.restorable(progress_of(unsaved, saved), str(tmp_path / "probe"), "", "2")["run_id"] == "run-True"
    assert probe.restorable(progress_of(unsaved, saved), str(tmp_path / "probe"), "", "1") is None  # logged too many epochs


def progress_of(*children: dict) -> dict:
    """``probe.progress``'s record of a running sweep."""
    return {"parent": "p", "parent_status": "RUNNING", "children": list(children)}


def live(run_id: str, epochs: int, node_ip: str = "10.0.0.2", status: str = "RUNNING") -> dict:
    return {"run_id": run_id, "trial": f"t-{run_id}", "status": status, "node_ip": node_ip, "node_ips": node_ip,
            "epoch_times_ms": [1000 * (e + 1) for e in range(epochs)]}


def test_a_fault_needs_its_trial_running_with_two_epochs_to_go():
    assert checks.check_room(progress_of(live("r1", 4)), "r1", epochs=6, fault="host loss") == 4
    for state, message in [
        (progress_of(live("r1", 5)), "5 of 6 epochs"),  # its last epoch may be on its way: nothing left to prove the fault
        (progress_of(live("r1", 2, status="FINISHED")), "FINISHED"),
        (progress_of(live("r2", 1)), "not among"),
    ]:
        with pytest.raises(AssertionError, match=message):
            checks.check_room(state, "r1", epochs=6, fault="host loss")


def test_the_registered_condition_picks_a_workers_trial_that_logged_its_second_epoch():
    head = "10.0.0.1"
    assert probe.registered(progress_of(live("r1", 1), live("r2", 3, node_ip=head)), head) is None
    state = progress_of(live("r1", 1), live("r2", 2, node_ip=head), live("r3", 4), live("r4", 2), live("r5", 3, status="FINISHED"))
    assert probe.registered(state, head)["run_id"] == "r4"  # the fewest epochs of those that qualify


def test_a_trial_steps_on_only_after_tune_registered_its_last_checkpoint(tmp_path):
    """``probe.registered``'s premise, on a real local Tune run: a class trainable's step k+1 starts only after the
    driver has registered (``Trial.checkpoint``) the checkpoint of step k, so a trial that logged its second epoch has one."""
    import ray
    from ray import tune
    from ray.tune.result import DONE

    from galaxy_da.sweep.ray_start import init_local_ray

    class Registered(tune.Callback):
        def on_trial_save(self, iteration, trials, trial, **info):  # after the save is processed: trial.checkpoint set
            Path(tmp_path, Path(trial.checkpoint.path).name).touch()

    class Steps(tune.Trainable):
        def step(self):
            previous = Path(tmp_path, f"checkpoint_{self.iteration - 1:06d}")  # Tune's name for the checkpoint of step k
            return {"previous_registered": self.iteration == 0 or previous.exists(), DONE: self.iteration >= 3}

        def save_checkpoint(self, checkpoint_dir):
            Path(checkpoint_dir, "iteration").write_text(str(self.iteration))

        def load_checkpoint(self, checkpoint_dir):
            pass

    init_local_ray(num_cpus=1, include_dashboard=False)
    try:
        results = tune.Tuner(Steps, run_config=tune.RunConfig(
            name="steps", storage_path=str(tmp_path / "results"), verbose=0, callbacks=[Registered()],
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=1, checkpoint_at_end=False)),
        ).fit()
    finally:
        ray.shutdown()
    history = results[0].metrics_dataframe
    assert list(history["training_iteration"]) == [1, 2, 3, 4] and history["previous_registered"].all(), history


def ticking(ticks: Path) -> subprocess.Popen:
    """A process that appends a byte to ``ticks`` every 10 ms."""
    loop = "import sys, time\nwhile True:\n    open(sys.argv[1], 'a').write('.')\n    time.sleep(0.01)"
    return subprocess.Popen([sys.executable, "-c", loop, str(ticks)])


def size_when_grown(path: Path, than: int = 0, timeout_s: float = 60.0) -> int:
    deadline = time.monotonic() + timeout_s
    while not path.exists() or path.stat().st_size <= than:
        assert time.monotonic() < deadline, f"{path} did not grow past {than} bytes"
        time.sleep(0.02)
    return path.stat().st_size


def test_paused_processes_run_nothing_until_the_block_ends_and_one_listed_late_is_paused_too(tmp_path):
    first, late = ticking(tmp_path / "first"), ticking(tmp_path / "late")
    try:
        for name in ("first", "late"):
            size_when_grown(tmp_path / name)
        listings = iter([[first.pid], [first.pid, late.pid]])  # the second forked while the first was being stopped
        with paused(lambda: next(listings, [first.pid, late.pid])) as held:
            assert held == sorted([first.pid, late.pid])
            time.sleep(0.2)  # a write under way lands
            sizes = {name: (tmp_path / name).stat().st_size for name in ("first", "late")}
            time.sleep(0.5)
            assert {name: (tmp_path / name).stat().st_size for name in ("first", "late")} == sizes
        for name, size in sizes.items():
            size_when_grown(tmp_path / name, than=size)
    finally:
        for child in (first, late):
            child.kill()
            child.wait()


WATCHING_PARENT = """
import os, sys, time
child = os.fork()
if child == 0:
    while True:
        time.sleep(0.01)
print(child, flush=True)
while True:  # as a login shell does with its foreground job: a child seen stopped ends it
    found, status = os.waitpid(child, os.WNOHANG | os.WUNTRACED)
    if found and os.WIFSTOPPED(status):
        open(sys.argv[1], "w").write("saw its child stopped")
        os.kill(child, 9)
        sys.exit(1)
"""


@pytest.mark.parametrize("listing_order", ["parent first", "child first"])
def test_a_parent_paused_with_its_child_never_sees_the_child_stopped(tmp_path, listing_order):
    """The parent is stopped before its child and continued after it, whatever order the listing gives them in, so a
    parent watching for its job to stop (an interactive login shell under ``ray submit``) sees nothing."""
    seen = tmp_path / "seen"
    parent = subprocess.Popen([sys.executable, "-c", WATCHING_PARENT, str(seen)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        pids = [parent.pid, child] if listing_order == "parent first" else [child, parent.pid]
        for _ in range(20):
            with paused(lambda: pids):
                time.sleep(0.02)
            time.sleep(0.02)  # both run: a parent continued first would have seen the stop by now
        assert not seen.exists() and parent.poll() is None, seen.read_text() if seen.exists() else parent.returncode
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        parent.kill()
        parent.wait()
