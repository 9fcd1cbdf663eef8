"""Small checks a host runs against the shared services: ``python -m cluster.testbed.probe <check> ...``.

Run inside a host (``Host.run``) with the node environment, so every call
crosses the bed's network exactly as a trial's would. Each prints one JSON line.

- ``make-bucket NAME``: create the S3 bucket (through pyarrow, with ``AWS_ENDPOINT_URL``);
- ``unauthenticated``: the HTTP status the tracking server gives a request without credentials;
- ``nodes ADDRESS N TIMEOUT``: wait until ``N`` Ray nodes are alive (token auth from the environment);
- ``progress NAME``: the sweep's parent run and each child's status, host and epochs so far;
- ``wait NAME CONDITION [ARG]``: poll ``progress`` twice a second until a condition of
  :data:`CONDITIONS` holds (``met``) or the sweep's parent run has ended;
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


def checkpointed(experiment: str, trial: str) -> bool:
    """Whether Tune has stored a checkpoint of ``trial`` under the sweep's ``experiment`` path (``s3://...``)."""
    import pyarrow.fs as pafs

    filesystem, root = pafs.FileSystem.from_uri(experiment)
    return filesystem.get_file_info(f"{root}/trial_{trial}/checkpoint_000000").type != pafs.FileType.NotFound


CONDITIONS = {  # a sweep's progress -> whether to act now
    "epochs": lambda state, count: sum(len(c["epoch_times_ms"]) for c in state["children"]) >= int(count),
    "trial-past-first-epoch": lambda state, not_on="": any(
        c["status"] == "RUNNING" and c["epoch_times_ms"] and c["node_ip"] != not_on for c in state["children"]),
    # a trial whose first epoch's checkpoint is in storage, running on a host other than ``not_on``
    "trial-checkpointed": lambda state, experiment, not_on="": any(
        c["status"] == "RUNNING" and c["epoch_times_ms"] and c["node_ip"] != not_on and checkpointed(experiment, c["trial"]) for c in state["children"]),
}


def wait(name: str, condition: str, *args: str) -> dict:
    import time

    while True:
        state = progress(name)
        if CONDITIONS[condition](state, *args) if state["parent"] else False:
            return state | {"met": True}
        if state["parent"] and state["parent_status"] != "RUNNING":
            return state | {"met": False}
        time.sleep(0.5)


def audit(parent_run_id: str) -> dict:
    """Every child run: status, node, epochs, duplicated or missing metric points, artifacts; the leaderboard."""
    from mlflow.tracking import MlflowClient

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
            for key in {key for key, _ in expected}:
                for point in client.get_metric_history(run_id, key):
                    logged[(key, point.step)] += 1
                    if (key, point.step) in expected and not key.startswith(FINAL_PREFIX) and key not in TIMINGS and abs(point.value - expected[(key, point.step)]) > 1e-9 * max(1.0, abs(point.value)):
                        mismatched.append(f"{key}@{point.step}")
            artifacts = {f.path for f in client.list_artifacts(run_id)} | {f.path for d in ("checkpoints", "plots") for f in client.list_artifacts(run_id, d)}
            checkpoint = Path(client.download_artifacts(run_id, "checkpoints/last.pt", tmp)) if "checkpoints/last.pt" in artifacts else None
            runs.append({
                "run_id": run_id, "trial": run.data.tags.get("ray_trial_id"), "status": run.info.status,
                "node_ip": run.data.tags.get("node_ip"), "node_ips": run.data.tags.get("node_ips", ""),
                "epochs": sorted({int(r["epoch"]) for r in history}),
                "duplicated": sorted(f"{k}@{s}" for (k, s), n in logged.items() if n > 1 and not k.startswith(FINAL_PREFIX)),
                "missing": sorted(f"{k}@{s}" for k, s in expected if logged[(k, s)] == 0),
                "mismatched": sorted(mismatched), "points": sum(logged.values()),
                "artifacts": sorted(artifacts), "checkpoint_bytes": checkpoint.stat().st_size if checkpoint else 0,
            })
        board = []
        if parent.info.status == "FINISHED":
            board = Path(client.download_artifacts(parent_run_id, "leaderboard.csv", tmp)).read_text().splitlines()[1:]
    return {"parent_status": parent.info.status, "children": runs, "leaderboard_rows": board}


CHECKS = {"make-bucket": make_bucket, "unauthenticated": unauthenticated, "nodes": nodes, "progress": progress, "wait": wait, "audit": audit}

if __name__ == "__main__":
    print(json.dumps(CHECKS[sys.argv[1]](*sys.argv[2:])))
