#!/usr/bin/env bash
# Self-test of the on-premise launcher on simulated hosts (cluster/testbed): a bed of N hosts
# (default 3) with their own network, processes and storage, the head's tracking server and
# object store, then ray up cluster/local.yaml -> ray submit sweeps/topk.py -> ray down.
# Needs root and the bed's Debian packages (make cluster-deps). Nothing of this machine's
# own Ray, ssh or home is touched; the bed is removed when it ends, also on failure or Ctrl-C.
#
#   sudo bash cluster/selftest.sh [HOSTS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec .venv/bin/python -m cluster.testbed selftest --hosts "${1:-3}"
