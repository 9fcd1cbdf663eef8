"""``python -m cluster.testbed``: hold a bed open, or remove beds whose owner died.

    python -m cluster.testbed hold --hosts 3    # prints {"bed", "root", "pids"} once up; Ctrl-C tears it down
    python -m cluster.testbed reap              # beds left by a process killed with SIGKILL
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from cluster.testbed.bed import TestBed, reap_stale


def hold(hosts: int) -> int:
    with TestBed(hosts) as bed:
        pids = [pid for host in bed.hosts for pid in host.pids()]
        print(json.dumps({"bed": bed.bed_id, "root": str(bed.root), "pids": pids, "addresses": [h.address for h in bed.hosts]}), flush=True)
        while True:
            time.sleep(3600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.testbed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("hold", help="build a bed and keep it until Ctrl-C or SIGTERM").add_argument("--hosts", type=int, default=3)
    sub.add_parser("reap", help="remove beds whose owning process is gone")
    args = parser.parse_args(argv)
    if args.command == "hold":
        return hold(args.hosts)
    print(json.dumps({"reaped": reap_stale()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
