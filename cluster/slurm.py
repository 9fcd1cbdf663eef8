"""Run a sweep script (any of sweeps/) on a SLURM allocation, with a Ray cluster spanning its nodes.

    python cluster/slurm.py sweeps/topk.py --data /shared/synth                    # on a SLURM login node
    python cluster/slurm.py --partition gpu --nodes 4 --gpus-per-node 4 --cpus-per-node 32 \\
        --time-min 720 sweeps/backbones.py --data /shared/synth --max-concurrent 16
    python cluster/slurm.py --cluster local --wait sweeps/topk.py --smoke-test      # no SLURM: one local node

One submitit job, one task per node. Every task starts a Ray node inside the
allocation (``ray start --block``): task 0 the head (``--port``), the others
workers that join it. Task 0 waits until all nodes have joined, runs the script
with ``RAY_ADDRESS`` pointing at the head (the sweep's driver, Optuna and the
MLflow client live there), then stops its Ray node; the workers see the head go
and stop theirs. Ray's token authentication is on (the token lives in
``~/.ray/auth_token`` on the shared home). Each node keeps Ray's files in its own temporary folder, so
other Ray instances on the same host are neither joined nor stopped.

Without SLURM, submitit's AutoExecutor falls back to a local process
(``--cluster local``, one node; ``debug`` runs in this process); ``slurm_*``
settings are then ignored. Logs and the job's pickles go to ``--folder``. A
sweep of the same ``--name`` that was cut by the time limit continues with
``--resume``. Data and ``--storage-path`` must be on storage every node sees.
"""

from __future__ import annotations

import argparse
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

import submitit

RAY = str(Path(sys.executable).with_name("ray"))  # the ray CLI of this environment
JOIN_TIMEOUT_S = 300.0  # how long the head waits for the workers, and a worker for the head
POLL_S = 2.0


# --------------------------------------------------------------------------- one Ray node per task


def head_ip(hostname: str) -> str:
    return socket.gethostbyname(hostname)


def answers(ip: str, port: int) -> bool:
    """Whether something listens on ``ip:port`` (the head's GCS)."""
    try:
        with socket.create_connection((ip, port), timeout=2):
            return True
    except OSError:
        return False


def wait_until(condition, what: str, timeout_s: float = JOIN_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout_s:.0f} s")
        time.sleep(POLL_S)


@dataclass
class RayNode:
    """``ray start --block`` in a subprocess; terminating it stops every Ray process it started."""

    address: str  # the head's ip:port
    is_head: bool
    num_cpus: int
    num_gpus: int

    def start(self) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must fit in 107 bytes
        ip, port = self.address.rsplit(":", 1)
        role = ["--head", f"--port={port}", f"--node-ip-address={ip}", "--include-dashboard=false"] if self.is_head else [f"--address={self.address}"]
        command = [RAY, "start", "--block", *role, f"--num-cpus={self.num_cpus}", f"--num-gpus={self.num_gpus}", f"--temp-dir={self.temp_dir}", "--disable-usage-stats"]
        print(f"[ray {'head' if self.is_head else 'worker'}] {' '.join(command)}", flush=True)
        self.process = subprocess.Popen(command)

    def stop(self, timeout_s: float = 60.0) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> "RayNode":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_for_nodes(address: str, num_nodes: int) -> dict[str, float]:
    """Block until ``num_nodes`` Ray nodes are alive; the cluster's resources."""
    import ray

    ray.init(address=address, log_to_driver=False)
    try:
        wait_until(lambda: sum(node["Alive"] for node in ray.nodes()) >= num_nodes, f"{num_nodes} Ray nodes")
        return ray.cluster_resources()
    finally:
        ray.shutdown()


def use_token_auth(generate: bool) -> None:
    """Ray's token authentication for this task and its children, with the token in ~/.ray/auth_token.

    The head creates the token if there is none; the workers read the same file
    (a shared home), and so do the sweep's driver and trials.
    """
    if generate:
        subprocess.run([RAY, "get-auth-token", "--generate"], stdout=subprocess.DEVNULL, check=True)
    os.environ["RAY_AUTH_MODE"] = "token"


@dataclass
class RaySweepJob:
    """The submitit job function: run on every task of the allocation."""

    command: list[str]  # the sweep script and its arguments, run by task 0
    cwd: str
    port: int
    num_cpus: int
    num_gpus: int

    def __call__(self) -> int:
        env = submitit.JobEnvironment()
        ip = head_ip(env.hostnames[0])
        address = f"{ip}:{self.port}"
        is_head = env.global_rank == 0
        use_token_auth(generate=is_head)
        if not is_head:
            wait_until(lambda: answers(ip, self.port), f"the Ray head at {address}")
        with RayNode(address, is_head, self.num_cpus, self.num_gpus):
            if not is_head:
                wait_until(lambda: not answers(ip, self.port), "the sweep's end", timeout_s=float("inf"))
                return 0
            wait_until(lambda: answers(ip, self.port), f"the Ray head at {address}")
            resources = wait_for_nodes(address, env.num_nodes)
            print(f"Ray cluster up at {address}: {env.num_nodes} node(s), {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs", flush=True)
            subprocess.run(self.command, cwd=self.cwd, env=os.environ | {"RAY_ADDRESS": address}, check=True)
        return 0


# --------------------------------------------------------------------------- submission


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("script", type=Path, help="the sweep script, e.g. sweeps/topk.py")
    parser.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments of the script")
    parser.add_argument("--cluster", choices=["slurm", "local", "debug"], help="default: SLURM when available, else local")
    parser.add_argument("--folder", type=Path, default=Path("slurm_logs/%j"), help="submitit logs (default: %(default)s)")
    parser.add_argument("--partition", help="SLURM partition")
    parser.add_argument("--nodes", type=int, default=1, help="nodes of the allocation, one Ray node each (default: %(default)s)")
    parser.add_argument("--gpus-per-node", type=int, default=1, help="(default: %(default)s)")
    parser.add_argument("--cpus-per-node", type=int, default=8, help="(default: %(default)s)")
    parser.add_argument("--mem-gb", type=int, default=64, help="memory per node (default: %(default)s)")
    parser.add_argument("--time-min", type=int, default=240, help="time limit in minutes (default: %(default)s)")
    parser.add_argument("--port", type=int, default=6379, help="the Ray head's port (default: %(default)s)")
    parser.add_argument("--wait", action="store_true", help="wait for the job and show its output")
    return parser.parse_args(argv)


def make_executor(args: argparse.Namespace) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=args.folder, cluster=args.cluster)
    executor.update_parameters(
        name=f"galaxy-da-{args.script.stem}", timeout_min=args.time_min, nodes=args.nodes, tasks_per_node=1,
        cpus_per_task=args.cpus_per_node, gpus_per_node=args.gpus_per_node, mem_gb=args.mem_gb, slurm_partition=args.partition,
    )
    return executor


def submit(args: argparse.Namespace) -> submitit.Job:
    script = args.script.resolve()
    if not script.is_file():
        raise FileNotFoundError(f"{script}: no such sweep script")
    job = RaySweepJob([sys.executable, str(script), *args.script_args], str(Path.cwd()), args.port, args.cpus_per_node, args.gpus_per_node)
    return make_executor(args).submit(job)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    job = submit(args)
    print(f"submitted job {job.job_id} ({type(job).__name__}, {args.nodes} node(s)); logs in {job.paths.folder}", flush=True)
    if args.wait:
        job.wait()
        print(job.stdout() or "", job.stderr() or "", sep="\n", flush=True)
        job.result()  # raises if the sweep failed
    return 0


if __name__ == "__main__":
    sys.exit(main())
