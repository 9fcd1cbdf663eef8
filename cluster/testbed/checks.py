"""What a multi-host sweep must leave in MLflow, and what proves a fault hit it mid-run.

Each check reads :func:`cluster.testbed.probe.audit`'s record of a sweep and
raises ``AssertionError`` naming the child run at fault. Times are milliseconds
since the epoch on the machine's clock, which the bed's hosts share, so a metric
point's timestamp (taken by the trial when it logged it) compares with the
moment the test stopped a service or killed a process.

- :func:`check_sweep`, for every sweep: one FINISHED child run per trial, every
  epoch's points exactly once, their values equal to the run's ``history.json``;
- :func:`check_spans`: one run logged both before a fault and after it was over
  (a tracking-server restart, a killed and resumed driver): the fault hit a live
  trial, which went on in the same run;
- :func:`check_moved`: a trial whose host was lost went on in the same run on
  another host, its first epoch logged before the loss and later ones after it;
- :func:`check_room`, before a fault: the trial it must hit, paused, still has two
  epochs to log, so the checks above hold by construction, not by timing.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.time() * 1000)


def check_sweep(audit: dict, trials: int, epochs: int) -> None:
    """One FINISHED child run per trial, each with every epoch's points exactly once and equal to its ``history.json``.

    A trial runs ``epochs`` epochs unless the scheduler stopped it (tag ``stopped_by``), then epochs 0..k-1.
    Its checkpoints and plot are readable, and the leaderboard lists every trial.
    """
    children = audit["children"]
    assert len(children) == trials and len({c["trial"] for c in children}) == trials, \
        f"{trials} trials, one child run each, expected; got {[(c['trial'], c['run_id'], c['status']) for c in children]}"
    assert audit["parent_status"] == "FINISHED" and len(audit["leaderboard_rows"]) == trials, \
        f"parent {audit['parent_status']}, {len(audit['leaderboard_rows'])} leaderboard rows for {trials} trials"
    for child in children:
        assert child["status"] == "FINISHED", child
        ran = child["epochs"]
        assert ran == list(range(epochs)) or (child["stopped_by"] and ran == list(range(len(ran))) and 0 < len(ran) < epochs), child
        assert child["duplicated"] == [] and child["missing"] == [] and child["mismatched"] == [], child
        assert sorted(child["epoch_ms"], key=int) == [str(e) for e in ran], child  # each epoch's "complete" marker, once
        assert {"checkpoints/best.pt", "checkpoints/last.pt", "plots/training_history.png"} <= set(child["artifacts"]), child
        assert child["checkpoint_bytes"] > 0, child


def run_of(audit: dict, run_id: str) -> dict:
    """The child run ``run_id`` of the sweep; fails if it is gone (its trial started over in a new run)."""
    found = [c for c in audit["children"] if c["run_id"] == run_id]
    assert found, f"run {run_id} is not among the sweep's runs {[c['run_id'] for c in audit['children']]}: its trial started over"
    return found[0]


def check_spans(child: dict, before_ms: int, after_ms: int, fault: str) -> None:
    """``child`` logged points before ``before_ms`` (the fault began) and after ``after_ms`` (it was over)."""
    assert child["first_ms"] is not None and child["first_ms"] < before_ms, \
        f"{fault}: run {child['run_id']} logged nothing before the fault (first point {child['first_ms']}, fault at {before_ms})"
    assert child["last_ms"] > after_ms, \
        f"{fault}: run {child['run_id']} logged nothing after the fault (last point {child['last_ms']}, over at {after_ms})"


def check_moved(child: dict, lost_ip: str, lost_ms: int) -> float:
    """The trial of ``child`` ran on ``lost_ip``, then, in this same run, on one other host; epoch 0 logged before the
    loss, a later epoch after it. Returns the seconds from the loss to its first epoch logged after it."""
    hosts = child["node_ips"].split(",")
    assert len(hosts) == 2 and hosts[0] == lost_ip and hosts[1] != lost_ip, \
        f"run {child['run_id']}: ran on {hosts}, expected {lost_ip} and then one other host"
    assert child["epoch_ms"].get("0", lost_ms) < lost_ms, f"run {child['run_id']}: epoch 0 not logged before the host was lost: {child['epoch_ms']}"
    after = sorted(ms for ms in child["epoch_ms"].values() if ms > lost_ms)
    assert after, f"run {child['run_id']}: no epoch logged after the host was lost: {child['epoch_ms']}"
    return (after[0] - lost_ms) / 1000


# Epochs a trial must still have to log when a fault hits it: the one it may finish as the fault lands (its points
# already on their way to MLflow, or its step already running when its driver dies), and one logged after the fault.
EPOCHS_LEFT_FOR_A_FAULT = 2


def check_room(progress: dict, run_id: str, epochs: int, fault: str) -> int:
    """Before ``fault``: run ``run_id`` of ``progress`` (``probe.progress``'s record, read while its trial cannot advance:
    its host or its driver paused) is RUNNING with at least :data:`EPOCHS_LEFT_FOR_A_FAULT` of its ``epochs`` not logged.
    Returns the epochs it has logged."""
    found = [c for c in progress["children"] if c["run_id"] == run_id]
    assert found, f"{fault}: run {run_id} is not among the sweep's runs {[c['run_id'] for c in progress['children']]}"
    logged = len(found[0]["epoch_times_ms"])
    assert found[0]["status"] == "RUNNING" and logged <= epochs - EPOCHS_LEFT_FOR_A_FAULT, (
        f"{fault}: run {run_id} is {found[0]['status']} with {logged} of {epochs} epochs logged when the fault would hit; "
        f"it needs {EPOCHS_LEFT_FOR_A_FAULT} still to run to prove the fault mattered (it was picked too late: "
        f"lengthen scenarios.FAULT_EPOCHS)")
    return logged
