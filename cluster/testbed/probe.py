"""Small checks a host runs against the shared services: ``python -m cluster.testbed.probe <check> ...``.

Run inside a host (``Host.run``), on the head with its environment (the node's and
the MLflow admin), so every call crosses the bed's network exactly as a trial's would.
Each prints one JSON line.

- ``make-bucket NAME``: create the S3 bucket (through pyarrow, with ``AWS_ENDPOINT_URL``);
- ``unauthenticated``: the HTTP status the tracking server gives a request without credentials;
- ``nodes ADDRESS N TIMEOUT``: wait until ``N`` Ray nodes are alive (token auth from the environment);
- ``progress NAME``: the sweep's parent run and each child's status, host and epochs so far;
- ``wait NAME CONDITION [ARG...]``: poll ``progress`` twice a second until a condition of
  :data:`CONDITIONS` picks a trial (``met``, the trial's child run as ``chosen``) or the
  sweep's parent run has ended;
- ``audit PARENT_RUN_ID``: the sweep as MLflow holds it (see :func:`audit`).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Optional

FINAL_PREFIX = "best/"  # the running best, logged each epoch and once more, at step 0, when the trial ends
# Wall-clock timings: an epoch redone after a restore (its first run's points are kept, exactly once)
# has the same values except these, which measure that run.
TIMINGS = {"train/images_per_s", "train/step_s"}


def make_bucket(name: str) -> dict:
    import pyarrow.fs as pafs

    filesystem, _ = pafs.FileSystem.from_uri(f"s3://{name}?allow_bucket_creation=true")
    filesystem.create_dir(name)
    return {"bucket": name}


def unauthenticated() -> dict:
    url = os.environ["MLFLOW_TRACKING_URI"] + "/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return {"status": response.status}
    except urllib.error.HTTPError as error:
        return {"status": error.code}


def nodes(address: str, count: str, timeout_s: str) -> dict:
    import time

    import ray

    ray.init(address=address, log_to_driver=False)
    try:
        deadline = time.monotonic() + float(timeout_s)
        while (alive := sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])) and len(alive) < int(count):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} Ray nodes: only {alive} after {timeout_s} s")
            time.sleep(1.0)
        return {"alive": alive, "cpus": ray.cluster_resources().get("CPU", 0)}
    finally:
        ray.shutdown()


def progress(name: str) -> dict:
    """The parent run of sweep ``name`` (newest) and its children: status, node, epochs logged, epoch times (ms)."""
    from mlflow.tracking import MlflowClient

    from galaxy_da.tracking import EPOCH_METRIC

    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(experiments, filter_string=f"tags.sweep = '{name}'", order_by=["start_time DESC"], max_results=1)
    if not parents:
        return {"parent": None, "children": []}
    parent = parents[0]
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'", max_results=1000)
    return {"parent": parent.info.run_id, "parent_status": parent.info.status, "children": [
        {"run_id": run.info.run_id, "trial": run.data.tags.get("ray_trial_id"), "status": run.info.status, "node_ip": run.data.tags.get("node_ip"), "node_ips": run.data.tags.get("node_ips", ""),
         "epoch_times_ms": sorted(p.timestamp for p in client.get_metric_history(run.info.run_id, EPOCH_METRIC))}
        for run in children
    ]}


def running_past_first_epoch(state: dict, not_on: str = "") -> list[dict]:
    """Children RUNNING on a host other than ``not_on`` with at least one epoch complete, those with the fewest epochs first."""
    running = [c for c in state["children"] if c["status"] == "RUNNING" and c["epoch_times_ms"] and c["node_ip"] != not_on]
    return sorted(running, key=lambda c: len(c["epoch_times_ms"]))


def restorable_trials(experiment: str) -> set[str]:
    """Trials whose checkpoint is in the experiment state Tune has saved under ``experiment`` (``s3://...``).

    What a resumed driver restores each trial from. Tune saves that state only after
    it has registered the checkpoint, and a trial it restarts after losing its host
    starts from its registered checkpoint: a trial in this set resumes in its own
    MLflow run either way (its ``mlflow_run.json`` travels in the checkpoint).
    """
    from ray.tune import ExperimentAnalysis

    try:
        trials = ExperimentAnalysis(experiment).trials
    except (ValueError, FileNotFoundError):  # no experiment state saved yet
        return set()
    return {trial.trial_id for trial in trials if trial.checkpoint is not None}


def past_first_epoch(state: dict, not_on: str = "") -> Optional[dict]:
    """A trial past its first epoch, still running, on a host other than ``not_on``."""
    return next(iter(running_past_first_epoch(state, not_on)), None)


def registered(state: dict, not_on: str = "") -> Optional[dict]:
    """Such a trial whose first checkpoint the live driver has registered: it has logged a second epoch.

    Tune saves a class trainable after each scored step and starts its next step
    only once it has processed that save (``TuneController._process_trial_result``
    holds the decision while the trial is saving), and the save registers the
    checkpoint (``Trial.on_checkpoint``). In the fault sweeps each epoch is one step
    (smoke config: no warm-up, every epoch scored), so a trial that has logged epoch 1
    restarts from a registered checkpoint, in its own run, if its host is lost. Its
    driver's memory counts here, not the saved experiment state (:func:`restorable`).
    """
    return next((c for c in running_past_first_epoch(state, not_on) if len(c["epoch_times_ms"]) >= 2), None)


def restorable(state: dict, experiment: str, not_on: str = "", most_logged: str = "") -> Optional[dict]:
    """Such a trial that a restore would continue from its checkpoint (:func:`restorable_trials`), with at most
    ``most_logged`` epochs logged when given: Tune's saved state may first hold a trial's checkpoint many epochs after
    the trial logged it (the state is saved and uploaded in the background), so a trial found that late is passed over
    for one that started later."""
    candidates = [c for c in running_past_first_epoch(state, not_on) if not most_logged or len(c["epoch_times_ms"]) <= int(most_logged)]
    saved = restorable_trials(experiment) if candidates else set()
    return next((c for c in candidates if c["trial"] in saved), None)


CONDITIONS = {"trial-past-first-epoch": past_first_epoch, "trial-registered": registered, "trial-restorable": restorable}  # progress, args -> a child run to act on, or None


def pick(name: str, condition: str, *args: str) -> dict:
    """Once: the sweep's :func:`progress` with ``met`` and, when met, the ``chosen`` child run of ``condition``;
    ``ended`` when the sweep's parent run is no longer RUNNING."""
    state = progress(name)
    chosen = CONDITIONS[condition](state, *args) if state["parent"] else None
    ended = bool(state["parent"]) and state["parent_status"] != "RUNNING"
    return state | {"met": chosen is not None, "chosen": chosen, "ended": ended}


def wait(name: str, condition: str, *args: str) -> dict:
    """:func:`pick` until met or the sweep ends."""
    import time

    while not (state := pick(name, condition, *args))["met"] and not state["ended"]:
        time.sleep(0.5)
    return state


def audit(parent_run_id: str) -> dict:
    """Every child run: status, node(s), epochs, duplicated, missing or mismatched metric points (against the run's
    ``history.json``), when its points were logged, artifacts; the leaderboard. :mod:`cluster.testbed.checks` reads it."""
    from mlflow.tracking import MlflowClient

    from galaxy_da.tracking import EPOCH_METRIC

    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'", max_results=1000)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in children:
            run_id = run.info.run_id
            history = json.loads(Path(client.download_artifacts(run_id, "history.json", tmp)).read_text()) if run.info.status == "FINISHED" else []
            expected = {(key, int(record["epoch"])): value for record in history for key, value in record.items()
                        if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool) and value == value}
            logged = Counter()
            mismatched = []
            times_ms = []  # when each point was logged (the trial's clock: the bed's hosts share the machine's)
            epoch_ms: dict[str, int] = {}  # epoch -> when its "epoch complete" marker was logged
            for key in {key for key, _ in expected}:
                for point in client.get_metric_history(run_id, key):
                    logged[(key, point.step)] += 1
                    times_ms.append(point.timestamp)
                    if key == EPOCH_METRIC:
                        epoch_ms[str(point.step)] = min(point.timestamp, epoch_ms.get(str(point.step), point.timestamp))
                    if (key, point.step) in expected and not key.startswith(FINAL_PREFIX) and key not in TIMINGS and abs(point.value - expected[(key, point.step)]) > 1e-9 * max(1.0, abs(point.value)):
                        mismatched.append(f"{key}@{point.step}")
            artifacts = {f.path for f in client.list_artifacts(run_id)} | {f.path for d in ("checkpoints", "plots") for f in client.list_artifacts(run_id, d)}
            checkpoint = Path(client.download_artifacts(run_id, "checkpoints/last.pt", tmp)) if "checkpoints/last.pt" in artifacts else None
            runs.append({
                "run_id": run_id, "trial": run.data.tags.get("ray_trial_id"), "status": run.info.status,
                "node_ip": run.data.tags.get("node_ip"), "node_ips": run.data.tags.get("node_ips", ""),
                "stopped_by": run.data.tags.get("stopped_by"),
                "epochs": sorted({int(r["epoch"]) for r in history}),
                "first_ms": min(times_ms, default=None), "last_ms": max(times_ms, default=None), "epoch_ms": epoch_ms,
                "duplicated": sorted(f"{k}@{s}" for (k, s), n in logged.items() if n > 1 and not k.startswith(FINAL_PREFIX)),
                "missing": sorted(f"{k}@{s}" for k, s in expected if logged[(k, s)] == 0),
                "mismatched": sorted(mismatched), "points": sum(logged.values()),
                "artifacts": sorted(artifacts), "checkpoint_bytes": checkpoint.stat().st_size if checkpoint else 0,
            })
        board = []
        if parent.info.status == "FINISHED":
            board = Path(client.download_artifacts(parent_run_id, "leaderboard.csv", tmp)).read_text().splitlines()[1:]
    return {"parent_status": parent.info.status, "children": runs, "leaderboard_rows": board}


CHECKS = {"make-bucket": make_bucket, "unauthenticated": unauthenticated, "nodes": nodes, "progress": progress, "pick": pick, "wait": wait, "audit": audit}

if __name__ == "__main__":
    print(json.dumps(CHECKS[sys.argv[1]](*sys.argv[2:])))
