"""``python -m cluster.testbed``: hold a bed open, run the launcher self-test, or remove beds whose owner died.

    python -m cluster.testbed hold --hosts 3      # prints {"bed", "root", "pids"} once up; Ctrl-C tears it down
    python -m cluster.testbed selftest --hosts 3  # ray up / ray submit sweeps/topk.py / ray down on the bed
    python -m cluster.testbed reap                # beds left by a process killed with SIGKILL
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from cluster.testbed.bed import TestBed, reap_stale


def hold(hosts: int) -> int:
    # A shell starts a background job with SIGINT ignored, and Python then leaves it ignored; Ctrl-C must still tear down.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with TestBed(hosts) as bed:
        pids = [pid for host in bed.hosts for pid in host.pids()]
        print(json.dumps({"bed": bed.bed_id, "root": str(bed.root), "pids": pids, "addresses": [h.address for h in bed.hosts]}), flush=True)
        while True:
            time.sleep(3600)


def selftest(hosts: int) -> int:
    from cluster.testbed import scenarios

    began = time.monotonic()
    with TestBed(hosts) as bed:
        stack = scenarios.start_stack(bed)
        try:
            print(f"ray up: {scenarios.ray_up(stack, bed.workers):.0f} s", flush=True)
            run = scenarios.submit(stack, "selftest")
            print(run.output[-6000:], flush=True)
        finally:
            scenarios.ray_down(stack)
            stack.services.stop_all()
    print(f"selftest: {'OK' if run.returncode == 0 else 'FAILED'} in {time.monotonic() - began:.0f} s")
    return run.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.testbed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("hold", help="build a bed and keep it until Ctrl-C or SIGTERM").add_argument("--hosts", type=int, default=3)
    sub.add_parser("selftest", help="ray up / submit / down of cluster/local.yaml on a bed").add_argument("--hosts", type=int, default=3)
    sub.add_parser("reap", help="remove beds whose owning process is gone")
    args = parser.parse_args(argv)
    if args.command in ("hold", "selftest"):
        return {"hold": hold, "selftest": selftest}[args.command](args.hosts)
    print(json.dumps({"reaped": reap_stale()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
