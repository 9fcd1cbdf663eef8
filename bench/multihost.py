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
3. with ``--fault-report FILE`` (written by ``make cluster-test`` with
   ``GALAXY_DA_CLUSTER_REPORT=FILE``): a clean 3-host sweep of the fault scenarios'
   4 trials (``SMALL_ARGS``); a fault's time lost is its sweep's wall time in the
   report minus the clean one's.

Writes ``bench/results/multihost.json``.

    sudo GALAXY_DA_CLUSTER_REPORT=/tmp/faults.json make cluster-test
    sudo .venv/bin/python bench/multihost.py --pairs 1 --fault-report /tmp/faults.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cluster.testbed import scenarios  # noqa: E402
from cluster.testbed.bed import TestBed  # noqa: E402

OUT = ROOT / "bench" / "results" / "multihost.json"


def one_sweep(stack: scenarios.Stack, hosts: int, total_cpus: int, name: str, args: list[str] = scenarios.SWEEP_ARGS) -> dict:
    """ray up (``hosts`` hosts), the sweep, ray down; its timings."""
    stack.env["GALAXY_DA_RAY_START_ARGS"] = f"--num-cpus={total_cpus}" if hosts == 1 else ""
    scenarios.write_env_file(stack)
    up_s = scenarios.ray_up(stack, stack.bed.workers[: hosts - 1])
    try:
        run = scenarios.submit(stack, name, args=args)
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
    parser.add_argument("--fault-report", type=Path, help="the cluster test's timings (GALAXY_DA_CLUSTER_REPORT) to set against a clean sweep")
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
            clean_small = one_sweep(stack, 3, 3 * cpus_per_host, "bench-clean-small", scenarios.SMALL_ARGS) if args.fault_report else None
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
    if args.fault_report:
        test = json.loads(args.fault_report.read_text())
        result["cluster_test"] = test
        result["clean_small_sweep_s"] = clean_small["sweep_s"]
        result["time_lost_s"] = {fault: round(test[key] - clean_small["sweep_s"], 1) for fault, key in (
            ("tracking server restart", "sweep_with_tracking_restart_s"), ("driver killed, --resume", "sweep_with_driver_kill_s"),
            ("worker host lost mid-epoch", "sweep_with_host_loss_s")) if key in test}
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
