"""One Ray node per task of an allocation: the head on the first host, workers that join it, the sweep on the head.

The logic behind ``cluster/slurm.py`` without submitit, so any launcher that
starts one task per host (SLURM's ``srun``, the test bed, a shell loop over
ssh) can run it::

    python -m galaxy_da.sweep.nodes --rank R --nodes N --head HOST [--port 6379] -- \\
        python sweeps/topk.py --data s3://... --storage-path s3://... --tracking-uri http://...

Rank 0 starts a Ray head (``ray start --block``) on ``HOST``'s address, waits
until all ``N`` nodes have joined, runs the command with ``RAY_ADDRESS`` set to
the head, then stops its node; the others start workers that join the head
and stop when the head goes (a worker whose ``ray start`` ends while the head
answers is started again, up to :data:`NODE_RESTARTS` times). ``HOST``'s address is never a loopback one on
several nodes (:func:`head_ip`: Debian maps a host's own name to 127.0.1.1). A
worker takes the head as gone only after :data:`HEAD_GONE_AFTER_S` without an
answer (a probe that times out under load is retried), and then stops its node
at once: Ray's SIGTERM handler would first wait out a 30 s drain for a GCS that
is no longer there. Ray's token authentication is on: the token comes
from ``RAY_AUTH_TOKEN`` when it is set (every task inherits the environment),
else from ``~/.ray/auth_token`` on a shared home (rank 0 creates it). Each node
keeps Ray's files in its own temporary folder, so other Ray instances on the
same host are neither joined nor stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from galaxy_da.sweep.hosts import is_loopback

RAY = str(Path(sys.executable).with_name("ray"))  # the ray CLI of this environment
JOIN_TIMEOUT_S = 300.0  # how long the head waits for the workers, and a worker for the head
HEAD_GONE_AFTER_S = 30.0  # a worker stops once the head has not answered for this long in a row
NODE_RESTARTS = 3  # how often a worker's `ray start` that ends while the head answers is started again
POLL_S = 2.0


class HeadAddressError(ValueError):
    """``--head`` names no address the other nodes can reach."""


def outward_address(target: str = "8.8.8.8") -> Optional[str]:
    """The address of the interface that routes toward ``target`` (as Ray picks a node's IP; a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((target, 53))
        except OSError:  # no route: an isolated network
            return None
        return probe.getsockname()[0]


def head_ip(head_host: str, num_nodes: int, outward: Callable[[], Optional[str]] = outward_address) -> str:
    """The head's address, for the head to bind and the workers to join.

    ``head_host`` resolved, unless that is a loopback address on a job of several
    nodes: then the name is this machine's own (Debian's ``/etc/hosts`` maps it to
    127.0.1.1, where no other host reaches it), and its address is the one of the
    interface that routes outward. Without such an interface, refused.
    """
    resolved = socket.gethostbyname(head_host)
    if num_nodes == 1 or not is_loopback(resolved):
        return resolved
    address = outward()
    if address is None or is_loopback(address):
        raise HeadAddressError(f"--head {head_host}: resolves to the loopback address {resolved} here, which the other nodes "
                               "cannot reach, and this host has no outward route; pass the head's cluster address (--head 10.0.0.1)")
    return address


def answers(ip: str, port: int) -> bool:
    """Whether something listens on ``ip:port`` (the head's GCS)."""
    try:
        with socket.create_connection((ip, port), timeout=2):
            return True
    except OSError:
        return False


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = JOIN_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout_s:.0f} s")
        time.sleep(POLL_S)


def wait_while_head_answers(ip: str, port: int, gone_after_s: float = HEAD_GONE_AFTER_S, poll_s: float = POLL_S,
                            node_ended: Callable[[], bool] = lambda: False) -> bool:
    """True once the head at ``ip:port`` has not answered for ``gone_after_s`` in a row (any answer restarts the
    count); False as soon as ``node_ended()`` says this host's own node is no longer running."""
    last_answer = time.monotonic()
    while time.monotonic() - last_answer < gone_after_s:
        time.sleep(poll_s)
        if node_ended():
            return False
        if answers(ip, port):
            last_answer = time.monotonic()
    return True


@dataclass
class RayNode:
    """``ray start --block`` in a subprocess; terminating it stops every Ray process it started."""

    address: str  # the head's ip:port
    is_head: bool
    num_cpus: int
    num_gpus: int

    def command(self) -> list[str]:
        """``ray start --block`` for this node, its Ray files in :attr:`temp_dir`."""
        ip, port = self.address.rsplit(":", 1)
        role = ["--head", f"--port={port}", f"--node-ip-address={ip}", "--include-dashboard=false"] if self.is_head else [f"--address={self.address}"]
        return [RAY, "start", "--block", *role, f"--num-cpus={self.num_cpus}", f"--num-gpus={self.num_gpus}", f"--temp-dir={self.temp_dir}", "--disable-usage-stats"]

    def start(self) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must fit in 107 bytes
        command = self.command()
        print(f"[ray {'head' if self.is_head else 'worker'}] {' '.join(command)}", flush=True)
        self.process = subprocess.Popen(command)

    def restart(self) -> None:
        """Start again after ``ray start --block`` ended on its own (it kills the node's remaining processes first)."""
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        self.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM (Ray drains the node, then stops it) while the head answers; else, or after ``timeout_s``, :meth:`kill`."""
        ip, port = self.address.rsplit(":", 1)
        if answers(ip, int(port)):
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout_s)
        self.kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL to the node's processes: ``ray start --block`` leads a process group of its own (Ray's reaper makes it)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if os.getpgid(self.process.pid) == self.process.pid:
                    os.killpg(self.process.pid, signal.SIGKILL)
                else:
                    self.process.kill()
        self.process.wait()

    def __enter__(self) -> "RayNode":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def head_silent_for(ip: str, port: int, gone_after_s: float = HEAD_GONE_AFTER_S, poll_s: float = POLL_S) -> bool:
    """Whether the head at ``ip:port`` stays silent for ``gone_after_s``; False at its first answer (at once if it answers now)."""
    silent_since = time.monotonic()
    while not answers(ip, port):
        if time.monotonic() - silent_since >= gone_after_s:
            return True
        time.sleep(poll_s)
    return False


def serve_as_worker(node: RayNode, ip: str, port: int, restarts: int = NODE_RESTARTS, gone_after_s: float = HEAD_GONE_AFTER_S,
                    poll_s: float = POLL_S) -> int:
    """Keep this host's worker ``node`` in the cluster until the head at ``ip:port`` is gone; the task's exit status.

    ``ray start --block`` ends when any of its node's processes dies: a raylet taken by the kernel's OOM killer,
    say, or one that lost its head (Ray's reconnect timeout can be shorter than ``gone_after_s``). A node that
    ended while the head still answers is started again, as a new Ray node, at most ``restarts`` times, so one
    crash does not leave the host idle for the rest of the allocation; after that the task fails with the node's
    last exit status. 0 once the head is gone, whether this node ended first or not.
    """
    restarted = 0
    while not wait_while_head_answers(ip, port, gone_after_s, poll_s, node_ended=lambda: node.process.poll() is not None):
        if head_silent_for(ip, port, gone_after_s, poll_s):  # the node ended with its head
            return 0
        status = node.process.returncode
        if restarted == restarts:
            print(f"[ray worker] `ray start` ended with exit status {status} while the head at {ip}:{port} answers, "
                  f"after {restarts} restarts: giving up", flush=True)
            return status or 1
        restarted += 1
        print(f"[ray worker] `ray start` ended with exit status {status} while the head at {ip}:{port} answers: "
              f"starting it again ({restarted} of {restarts})", flush=True)
        node.restart()
    return 0


def wait_for_nodes(address: str, num_nodes: int) -> dict[str, float]:
    """Block until ``num_nodes`` Ray nodes are alive; the cluster's resources."""
    import ray

    ray.init(address=address, log_to_driver=False)
    try:
        wait_until(lambda: sum(node["Alive"] for node in ray.nodes()) >= num_nodes, f"{num_nodes} Ray nodes")
        return ray.cluster_resources()
    finally:
        ray.shutdown()


def use_token_auth(is_head: bool) -> None:
    """Token authentication for this task and its children: ``$RAY_AUTH_TOKEN``, else ``~/.ray/auth_token``."""
    if is_head and not os.environ.get("RAY_AUTH_TOKEN"):
        subprocess.run([RAY, "get-auth-token", "--generate"], stdout=subprocess.DEVNULL, check=True)
    os.environ["RAY_AUTH_MODE"] = "token"


def run_node(rank: int, num_nodes: int, head_host: str, port: int, command: list[str], cwd: str, num_cpus: int, num_gpus: int) -> int:
    """This task's part: a worker until the head goes, or the head that runs ``command``; its exit status."""
    ip = head_ip(head_host, num_nodes)
    address = f"{ip}:{port}"
    is_head = rank == 0
    use_token_auth(is_head)
    if not is_head:
        wait_until(lambda: answers(ip, port), f"the Ray head at {address}")
    with RayNode(address, is_head, num_cpus, num_gpus) as node:
        if not is_head:
            return serve_as_worker(node, ip, port)
        wait_until(lambda: answers(ip, port), f"the Ray head at {address}")
        resources = wait_for_nodes(address, num_nodes)
        print(f"Ray cluster up at {address}: {num_nodes} node(s), {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs", flush=True)
        return subprocess.run(command, cwd=cwd, env=os.environ | {"RAY_ADDRESS": address}).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rank", type=int, required=True, help="this task's rank; 0 is the head")
    parser.add_argument("--nodes", type=int, required=True, help="tasks (hosts) in all")
    parser.add_argument("--head", required=True, help="the head's hostname or address")
    parser.add_argument("--port", type=int, default=6379, help="the head's GCS port (default: %(default)s)")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="CPUs this node offers (default: all)")
    parser.add_argument("--num-gpus", type=int, default=0, help="GPUs this node offers (default: %(default)s)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the command rank 0 runs, e.g. python sweeps/topk.py ...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command rank 0 runs after --")
    try:
        return run_node(args.rank, args.nodes, args.head, args.port, command, os.getcwd(), args.num_cpus, args.num_gpus)
    except HeadAddressError as error:
        parser.error(str(error))


if __name__ == "__main__":
    sys.exit(main())
