"""The cost of going multi-host, on simulated hosts (cluster/testbed): cluster start-up, 3 hosts vs 1, faults.

As root, on one machine (the hosts share its cores, so this measures the
overhead of crossing hosts, not scaling):

1. a bed of 3 hosts with the head's services (PostgreSQL, S3, MLflow) and the smoke
   dataset in S3;
2. pairs of the same sweep (``cluster/testbed/scenarios.SWEEP_ARGS``: 8 trials, 4 at a
   time, the same seed, so the same trials), alternating so that both see the same
   load on a shared machine:
   - 3 hosts: ``ray up`` of the head and two workers (each offers its 2 CPUs: 6 in all),
     ``ray submit``, ``ray down``; the time until all three nodes have joined is the
     cluster's start-up;
   - 1 host: ``ray up`` of the head alone, offering the same 6 CPUs (``--num-cpus=6``);
   the ratio of sweep wall times is the figure (goal: at most 1.15);
3. with ``--faults``: the cluster test's fault scenarios (``pytest -m cluster``), whose
   report holds each fault's time lost against the clean sweep.

Writes ``bench/results/cluster.json``.

    sudo .venv/bin/python bench/cluster.py --pairs 2 --faults
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cluster.testbed import scenarios  # noqa: E402
from cluster.testbed.bed import TestBed  # noqa: E402

OUT = ROOT / "bench" / "results" / "cluster.json"


def one_sweep(stack: scenarios.Stack, hosts: int, total_cpus: int, name: str) -> dict:
    """ray up (``hosts`` hosts), the sweep, ray down; its timings."""
    stack.env["GALAXY_DA_RAY_START_ARGS"] = f"--num-cpus={total_cpus}" if hosts == 1 else ""
    scenarios.write_env_file(stack)
    up_s = scenarios.ray_up(stack, stack.bed.workers[: hosts - 1])
    try:
        run = scenarios.submit(stack, name)
        if run.returncode != 0:
            raise RuntimeError(f"sweep {name} failed:\n{run.output[-4000:]}")
        nodes = {child["node_ip"] for child in scenarios.progress(stack, name)["children"]}
    finally:
        scenarios.ray_down(stack)
    return {"hosts": hosts, "ray_up_s": round(up_s, 1), "sweep_s": round(run.wall_s, 1), "trial_hosts": len(nodes)}


def load_average() -> float:
    return os.getloadavg()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=1, help="3-host/1-host sweep pairs (default: %(default)s)")
    parser.add_argument("--faults", action="store_true", help="also run the cluster test's fault scenarios and keep their figures")
    args = parser.parse_args()
    cpus_per_host = os.cpu_count() or 1
    runs = []
    with TestBed(hosts=3) as bed:
        stack = scenarios.start_stack(bed)
        try:
            for pair in range(args.pairs):
                for hosts in ((3, 1) if pair % 2 == 0 else (1, 3)):
                    load = load_average()
                    runs.append(one_sweep(stack, hosts, 3 * cpus_per_host, f"bench-{hosts}h-{pair}") | {"load_average_before": round(load, 2)})
                    print(json.dumps(runs[-1]), flush=True)
        finally:
            stack.services.stop_all()
    three = [r["sweep_s"] for r in runs if r["hosts"] == 3]
    one = [r["sweep_s"] for r in runs if r["hosts"] == 1]
    result = {
        "what": "sweeps/topk.py " + " ".join(scenarios.SWEEP_ARGS) + "; 3 simulated hosts vs 1, same 6 Ray CPUs on one 2-core machine",
        "machine_cores": os.cpu_count(),
        "runs": runs,
        "ray_up_3_hosts_s": statistics.median(r["ray_up_s"] for r in runs if r["hosts"] == 3),
        "sweep_3_hosts_s": statistics.median(three),
        "sweep_1_host_s": statistics.median(one),
        "ratio_3_vs_1": round(statistics.median(three) / statistics.median(one), 3),
        "goal_ratio": 1.15,
    }
    if args.faults:
        with tempfile.NamedTemporaryFile(suffix=".json") as report:
            subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "cluster", "tests/test_multihost.py", "-k", "OnPremise", "-q"],
                           cwd=ROOT, env=os.environ | {"GALAXY_DA_CLUSTER_REPORT": report.name, "GALAXY_DA_CLUSTER_TEST": "require"}, check=True)
            result["cluster_test"] = json.loads(Path(report.name).read_text())
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
