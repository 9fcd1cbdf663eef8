"""The cost of going multi-host, on simulated hosts (cluster/testbed): 3 hosts against 1 for the same trial-epochs, faults.

As root, on one machine (the hosts share its cores, so this measures the
overhead of crossing hosts, not scaling):

1. a bed of 3 hosts with the head's services (PostgreSQL, S3, MLflow) and the smoke
   dataset in S3;
2. the same sweep (6 trials of 4 epochs, 3 at a time, one seed, so the same trials) in
   two arms, with Ray stopped on every host before each arm (``ray stop``) and started
   afresh (``ray up``):
   - 3 hosts: the head and two workers, each offering 1 Ray CPU: each host runs one of
     the 3 trials at a time (asserted: trials ran on 3 hosts);
   - 1 host: the head alone, offering the same 3 CPUs (asserted: 1 host);
   never pruned (``--grace-period 0``), so both train every trial-epoch (asserted:
   trials x epochs). A warm-up sweep (3 hosts, not counted) comes first, then
   ``--pairs`` pairs (at least 2) in A-B-B-A order (3, 1, 1, 3, 3, 1, ...), so a
   trend in the machine's load falls on both arms alike. The figure is the ratio of
   the arms' median wall times for the same trial-epochs (goal: at most 1.15, written
   met or missed), with each arm's trial-epochs per second;
3. with ``--fault-report FILE`` (written by ``make cluster-test`` with
   ``GALAXY_DA_CLUSTER_REPORT=FILE``): a clean 3-host sweep of the fault scenarios'
   trials (``scenarios.FAULT_ARGS``, 2 CPUs a host as in the test); a fault's time
   lost is its sweep's wall time in the report minus the clean one's.

Writes ``bench/results/multihost.json`` (``--smoke``: 1 pair of 3 trials of 2 epochs,
no warm-up, a check that the script runs, in ``bench/results/multihost_smoke.json``).

    sudo GALAXY_DA_CLUSTER_REPORT=/tmp/faults.json make cluster-test
    sudo .venv/bin/python bench/multihost.py --pairs 2 --fault-report /tmp/faults.json
    sudo .venv/bin/python bench/multihost.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cluster.testbed import scenarios  # noqa: E402
from cluster.testbed.bed import TestBed  # noqa: E402

OUT = ROOT / "bench" / "results" / "multihost.json"
SMOKE_OUT = OUT.with_name("multihost_smoke.json")
HOSTS = 3
CONCURRENT = 3  # trials at once: one per host in the 3-host arm
GOAL_RATIO = 1.15


@dataclass(frozen=True)
class Workload:
    trials: int
    epochs: int

    @property
    def trial_epochs(self) -> int:
        return self.trials * self.epochs

    def args(self) -> list[str]:
        return ["--smoke-test", "--max-concurrent", str(CONCURRENT), *scenarios.NO_PRUNING, "--data", scenarios.DATA,
                "--storage-path", scenarios.STORAGE, "--num-samples", str(self.trials), f"optim.epochs={self.epochs}"]


FULL, SMOKE = Workload(trials=6, epochs=4), Workload(trials=3, epochs=2)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(message)


def one_sweep(stack: scenarios.Stack, hosts: int, cpus_per_host: int, name: str, args: list[str]) -> dict:
    """Ray stopped on every host, ray up of ``hosts`` hosts offering ``cpus_per_host`` CPUs each, the sweep, ray down.

    Its timings, the hosts its trials ran on and the trial-epochs they logged.
    """
    scenarios.stop_ray_everywhere(stack)
    stack.env["GALAXY_DA_RAY_START_ARGS"] = f"--num-cpus={cpus_per_host}"
    scenarios.write_env_files(stack)
    load = os.getloadavg()[0]
    up_s = scenarios.ray_up(stack, stack.bed.workers[: hosts - 1])
    try:
        run = scenarios.submit(stack, name, args=args)
        require(run.returncode == 0, f"sweep {name} failed:\n{run.output[-4000:]}")
        children = scenarios.progress(stack, name)["children"]
    finally:
        scenarios.ray_down(stack)  # and ray stop on every host
    trial_hosts = {ip for child in children for ip in child["node_ips"].split(",") if ip}
    trial_epochs = sum(len(child["epoch_times_ms"]) for child in children)
    return {"name": name, "hosts": hosts, "cpus_per_host": cpus_per_host, "load_average_before": round(load, 2),
            "ray_up_s": round(up_s, 1), "sweep_s": round(run.wall_s, 1), "trial_hosts": len(trial_hosts),
            "trial_epochs": trial_epochs, "trial_epochs_per_s": round(trial_epochs / run.wall_s, 4)}


def arm(stack: scenarios.Stack, hosts: int, name: str, work: Workload) -> dict:
    """One arm of the comparison: ``hosts`` hosts offering ``CONCURRENT`` CPUs in all; checked to have done ``work`` on them."""
    result = one_sweep(stack, hosts, CONCURRENT // hosts, name, work.args())
    require(result["trial_hosts"] == hosts, f"{name}: trials ran on {result['trial_hosts']} host(s), not {hosts}")
    require(result["trial_epochs"] == work.trial_epochs, f"{name}: {result['trial_epochs']} trial-epochs, not {work.trial_epochs}")
    print(json.dumps(result), flush=True)
    return result


def order(pairs: int) -> list[int]:
    """Host counts in A-B-B-A order: 3, 1, 1, 3, 3, 1, ..."""
    return [hosts for pair in range(pairs) for hosts in ((HOSTS, 1) if pair % 2 == 0 else (1, HOSTS))]


def summary(runs: list[dict], work: Workload) -> dict:
    median = {hosts: statistics.median(r["sweep_s"] for r in runs if r["hosts"] == hosts) for hosts in (HOSTS, 1)}
    ratio = median[HOSTS] / median[1]
    return {
        "sweep_3_hosts_s": median[HOSTS], "sweep_1_host_s": median[1],
        "trial_epochs": work.trial_epochs,
        "trial_epochs_per_s_3_hosts": round(work.trial_epochs / median[HOSTS], 4),
        "trial_epochs_per_s_1_host": round(work.trial_epochs / median[1], 4),
        "ray_up_3_hosts_s": statistics.median(r["ray_up_s"] for r in runs if r["hosts"] == HOSTS),
        "ratio_3_vs_1": round(ratio, 3), "goal_ratio": GOAL_RATIO, "goal": "met" if ratio <= GOAL_RATIO else "missed",
    }


def fault_costs(stack: scenarios.Stack, report: Path) -> dict:
    """A clean sweep of the fault scenarios' trials, set against their sweeps' wall times in the cluster test's ``report``."""
    test = json.loads(report.read_text())
    clean = one_sweep(stack, HOSTS, scenarios.HOST_CPUS, "bench-clean-fault", scenarios.FAULT_ARGS)
    return {"cluster_test": test, "clean_fault_sweep_s": clean["sweep_s"], "time_lost_s": {
        fault: round(test[key] - clean["sweep_s"], 1) for fault, key in (
            ("tracking server restart", "sweep_with_tracking_restart_s"), ("driver killed, --resume", "sweep_with_driver_kill_s"),
            ("worker host lost mid-epoch", "sweep_with_host_loss_s")) if key in test}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=2, help="3-host/1-host pairs after the warm-up, A-B-B-A (default: %(default)s; at least 2)")
    parser.add_argument("--fault-report", type=Path, help="the cluster test's timings (GALAXY_DA_CLUSTER_REPORT) to set against a clean sweep")
    parser.add_argument("--smoke", action="store_true", help="one pair of a tiny sweep, no warm-up: checks the script runs (not a measurement)")
    args = parser.parse_args()
    if not args.smoke and args.pairs < 2:
        parser.error(f"--pairs {args.pairs}: at least 2 pairs (A-B-B-A), or --smoke")
    work, pairs = (SMOKE, 1) if args.smoke else (FULL, args.pairs)
    with TestBed(hosts=HOSTS) as bed:
        stack = scenarios.start_stack(bed)
        try:
            warmup = None if args.smoke else arm(stack, HOSTS, "bench-warmup", work)
            runs = [arm(stack, hosts, f"bench-{index}-{hosts}h", work) for index, hosts in enumerate(order(pairs))]
            faults = fault_costs(stack, args.fault_report) if args.fault_report else {}
        finally:
            stack.services.stop_all()
    result = {
        "what": f"sweeps/topk.py {' '.join(work.args())}: {HOSTS} simulated hosts of {CONCURRENT // HOSTS} Ray CPU against 1 host "
                f"of {CONCURRENT}, on one {os.cpu_count()}-core machine, A-B-B-A after a warm-up",
        "machine_cores": os.cpu_count(), "smoke": args.smoke, "warmup": warmup, "runs": runs,
        **summary(runs, work), **faults,
    }
    (SMOKE_OUT if args.smoke else OUT).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print(f"3 hosts vs 1 for the same {work.trial_epochs} trial-epochs: {result['ratio_3_vs_1']}x wall time "
          f"(goal <= {GOAL_RATIO}: {result['goal']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
