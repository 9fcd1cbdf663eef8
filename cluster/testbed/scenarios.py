"""The multi-host scenarios on a bed, shared by the cluster test and ``bench/multihost.py``.

A :class:`Stack` is a bed with its head's services running, the node
environment file on the launching host (the head), and the smoke sweeps' own
dataset (``data/smoke``, rendered once on this machine, outside the bed) uploaded
to S3. Every host offers :data:`HOST_CPUS` Ray CPUs, whatever the machine has, and
its GCS takes a lost host for dead sooner (:data:`RAY_NODE_ENV`). On it:

- :func:`ray_up` / :func:`ray_down`: ``cluster/local.yaml`` with the bed's
  addresses filled in and the checkout sent to every host by Ray's file sync with
  ``cluster/gpu.yaml``'s excludes (:func:`bed_cluster_config`), run from the head;
  every host must then import the whole package from its copy; ``ray down`` is
  followed by ``ray stop`` on every host (:func:`stop_ray_everywhere`);
- :func:`submit`: ``ray submit ... sweeps/topk.py -- ...``, as a user types it;
- :func:`progress`, :func:`audit`: the sweep as the tracking server holds it,
  asked from the head over the bed's network;
- :func:`slurm_nodes`: ``python -m galaxy_da.sweep.nodes`` on every host at once,
  as ``srun`` would start ``cluster/slurm.py``'s tasks.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import yaml

from cluster.testbed.bed import TestBed
from cluster.testbed.host import BASE_ENV, HOME, Host
from cluster.testbed.services import BUCKET, Secrets, Services, admin_env, node_env

SWEEP = "sweeps/topk.py"
DATA = f"s3://{BUCKET}/smoke"
STORAGE = f"s3://{BUCKET}/ray_results"
CLUSTER_YAML = "/tmp/galaxy-da-cluster.yaml"  # on the head
SYNCED_CODE = "~/galaxy-da"  # where Ray's file sync puts the checkout on each host, as cluster/gpu.yaml does
ENV_FILE = ".galaxy-da.env"  # in the launching host's home; ray up copies it to every node
ADMIN_ENV_FILE = ".galaxy-da-admin.env"  # the MLflow admin, in the head's home only (the launching host is the head)
# Tiny trials (the smoke config: 8 steps an epoch, each epoch one Tune step), 4 at a time. The full sweep has 8
# trials of 3 epochs, with ASHA (across hosts, its stops announced through storage); the SLURM sweep 4 such trials,
# never pruned. The fault sweeps 4 trials of 8 epochs, never pruned, and each trial must run every epoch
# (cluster.testbed.checks). A fault hits its trial only once the trial is paused with 2 epochs still to log
# (checks.check_room), else the test fails saying so. Picked once it has logged 1 epoch (tracking restart), 2 (host
# loss: its first checkpoint is registered) or once Tune's saved state holds a checkpoint of it (driver kill: about
# 2 s after it logged the epoch, TUNE_DRIVER_ENV, plus the probe's poll), the trial may log 5, 4 or about 3 more
# epochs (about 2 s each on 2 cores, 4 trials at once) before it is paused; each epoch costs a fault sweep about 2 s.
# The cluster test must fit 12 minutes on 2 cores.
EPOCHS, FAULT_EPOCHS = 3, 8
# Ray CPUs each host offers (--num-cpus), not the machine's core count: 4 trials at once then need at least two hosts,
# and a lost worker leaves room for its trials elsewhere, on any machine.
HOST_CPUS = 2
# Ray's GCS takes a node for dead after health_check_failure_threshold failed checks health_check_period_ms apart
# (5 x 3 s by default). A lost host's address refuses at once, so its trials move after about 5 s instead of 15 s;
# a check that times out still waits health_check_timeout_ms (10 s, unchanged): a loaded, live host is not declared dead.
# Read by Ray's C++ processes (RAY_<config name>) started from the node environment: the GCS on the head.
RAY_NODE_ENV = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "5"}
# The driver's Tune saves the experiment state (what --resume restores) at most 1 s apart, not "auto": at least 10 s
# apart, sooner only once a trial has checkpointed CheckpointConfig.num_to_keep times since the last save. A driver
# killed mid-sweep then loses at most a second of checkpoints, and the driver-kill test finds a restorable trial an
# epoch sooner. Read by Tune's controller (TUNE_GLOBAL_CHECKPOINT_S) in the driver, whose login shell loads the node environment.
TUNE_DRIVER_ENV = {"TUNE_GLOBAL_CHECKPOINT_S": "1"}
NO_PRUNING = ["--grace-period", "0"]
COMMON_ARGS = ["--smoke-test", "--max-concurrent", "4", "--data", DATA, "--storage-path", STORAGE]
SWEEP_ARGS = [*COMMON_ARGS, "--num-samples", "8", f"optim.epochs={EPOCHS}"]
SMALL_ARGS = [*COMMON_ARGS, *NO_PRUNING, "--num-samples", "4", f"optim.epochs={EPOCHS}"]
FAULT_ARGS = [*COMMON_ARGS, *NO_PRUNING, "--num-samples", "4", f"optim.epochs={FAULT_EPOCHS}"]


@dataclass
class Stack:
    bed: TestBed
    services: Services
    keys: Secrets
    env: dict[str, str]  # the node environment: every host's, without an MLflow user
    admin: dict[str, str]  # the MLflow admin's credentials: the head's alone

    @property
    def head(self) -> Host:
        return self.bed.head

    @property
    def venv(self) -> str:
        return str(self.bed.code / ".venv" / "bin")

    def login_env(self) -> dict[str, str]:
        """A shell on a node after ~/.bashrc: the node environment and the venv first on PATH."""
        return self.env | {"PATH": f"{self.venv}:{BASE_ENV['PATH']}"}

    def head_env(self) -> dict[str, str]:
        """A shell on the head after ~/.bashrc: a node's, and the MLflow admin (the driver's, the probes')."""
        return self.login_env() | self.admin

    def on_head(self, argv: list[str], timeout: float = 900, check: bool = True, env: Optional[dict] = None) -> subprocess.CompletedProcess:
        return self.head.run(argv, env=env if env is not None else self.head_env(), cwd=str(self.bed.code), timeout=timeout, check=check)

    def probe(self, *args: str, timeout: float = 300) -> dict:
        out = self.on_head([f"{self.venv}/python", "-m", "cluster.testbed.probe", *args], timeout=timeout).stdout
        return json.loads(out.strip().splitlines()[-1])


def start_stack(bed: TestBed, ray_start_args: str = f"--num-cpus={HOST_CPUS}") -> Stack:
    """Services up, the node environment file written, the smoke dataset in S3."""
    keys = Secrets()
    services = Services(bed.head, bed.code, keys)
    services.start_all()
    env = node_env(bed.head, keys) | RAY_NODE_ENV | TUNE_DRIVER_ENV | {
        "GALAXY_DA_HOME": str(bed.code), "GALAXY_DA_NO_PROGRESS": "1", "GALAXY_DA_RAY_START_ARGS": ray_start_args}
    stack = Stack(bed, services, keys, env, admin_env(keys))
    write_env_files(stack)
    stack.on_head([f"{stack.venv}/galaxy-da", "upload", str(smoke_dataset(bed.code)), DATA])
    return stack


def smoke_dataset(code: Path) -> Path:
    """The smoke sweeps' dataset (``data/smoke`` in the checkout, the SDSS-like target), as ``--smoke-test`` makes it:
    rendered on this machine the first time (about 20 s of GalSim), outside the bed and its loaded hosts, then kept."""
    made = subprocess.run([str(code / ".venv/bin/python"), "-c", "from galaxy_da.sweep.cli import smoke_data; print(smoke_data())"],
                          cwd=code, capture_output=True, text=True, check=True)
    return code / made.stdout.strip().splitlines()[-1]


def write_env_files(stack: Stack) -> None:
    """The node environment file and the admin's, both in the launching host's (the head's) home, mode 600.

    ``ray up`` copies the first to every node (``file_mounts``); the second stays on
    the head, where ``~/.bashrc`` loads it (``head_setup_commands``). On a cloud
    cluster, whose launching machine is not the head, ``ray rsync-up`` puts it there.
    """
    for name, variables in ((ENV_FILE, stack.env), (ADMIN_ENV_FILE, stack.admin)):
        path = stack.head.root / "home" / name
        path.write_text("".join(f"{key}={shlex.quote(value)}\n" for key, value in variables.items()))
        path.chmod(0o600)


# --------------------------------------------------------------------------- ray up / submit / down


def bed_cluster_config(code: Path, head_ip: str, worker_ips: list[str]) -> dict:
    """``cluster/local.yaml`` with the bed's addresses, and the checkout copied to every host as a cloud cluster copies it.

    As in ``cluster/gpu.yaml``: ``file_mounts`` sends the checkout to ``~/galaxy-da``
    on each host through Ray's rsync, with ``gpu.yaml``'s ``rsync_exclude`` (read
    from that file: one list for both). Each host's login shell then imports
    ``galaxy_da`` from that copy (``PYTHONPATH``) and runs there; only the venv stays
    the shared one (the hosts cannot install packages). A package folder that the
    excludes drop fails ``import`` on every host, as it would on the cloud.
    """
    config = yaml.safe_load((code / "cluster" / "local.yaml").read_text())
    config["provider"].update(head_ip=head_ip, worker_ips=list(worker_ips))
    config["file_mounts"][SYNCED_CODE] = str(code)
    config["rsync_exclude"] = yaml.safe_load((code / "cluster" / "gpu.yaml").read_text())["rsync_exclude"]
    config["setup_commands"].append(
        "grep -q 'galaxy-da synced code' ~/.bashrc || printf '%s\\n' '# galaxy-da synced code' "
        "'export PYTHONPATH=\"$HOME/galaxy-da\"' 'cd \"$HOME/galaxy-da\"' >> ~/.bashrc"
    )
    return config


def write_cluster_yaml(stack: Stack, workers: list[Host]) -> str:
    """:func:`bed_cluster_config` for the bed's head and ``workers``; its path on the head."""
    config = bed_cluster_config(stack.bed.code, stack.head.address, [w.address for w in workers])
    (stack.head.root / "tmp" / CLUSTER_YAML.removeprefix("/tmp/")).write_text(yaml.safe_dump(config))
    return CLUSTER_YAML


def check_synced_code(stack: Stack, hosts: list[Host]) -> None:
    """Every host's login shell imports the whole package (``galaxy_da.data`` included) from its synced copy."""
    probe = "import galaxy_da.data, galaxy_da.sweep.trainable as m; print(m.__file__)"
    for host in hosts:
        out = host.run(["bash", "--login", "-c", "-i", f"source ~/.bashrc && python -c '{probe}'"], env={"TERM": "dumb"}).stdout
        where = out.strip().splitlines()[-1] if out.strip() else ""
        if not where.startswith(f"{HOME}/{SYNCED_CODE.removeprefix('~/')}/"):
            raise AssertionError(f"on {host.hostname}: galaxy_da comes from {where!r}, not the synced {SYNCED_CODE}")


def ray_up(stack: Stack, workers: list[Host], timeout_s: float = 600) -> float:
    """``ray up`` from the head; seconds until every node has joined."""
    began = time.monotonic()
    stack.on_head(["ray", "up", "-y", "--no-config-cache", write_cluster_yaml(stack, workers)], timeout=timeout_s)
    stack.probe("nodes", f"{stack.head.address}:6379", str(1 + len(workers)), str(timeout_s), timeout=timeout_s + 60)
    elapsed = time.monotonic() - began
    check_synced_code(stack, [stack.head, *workers])
    check_no_admin_secret(stack, workers)
    return elapsed


def check_no_admin_secret(stack: Stack, hosts: list[Host]) -> None:
    """No file in these hosts' homes and no process on them holds the MLflow admin's password (the head's driver alone needs it)."""
    secret = stack.keys.mlflow_password.encode()
    for host in hosts:
        home = host.root / "home"
        holders = [str(path.relative_to(home)) for path in home.rglob("*") if path.is_file() and not path.is_symlink() and secret in path.read_bytes()]
        holders += [f"pid {pid}" for pid in host.pids() if secret in process_environment(pid)]
        if holders:
            raise AssertionError(f"{host.hostname} holds the MLflow admin's password: {holders}")


def process_environment(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone meanwhile
        return b""


def ray_down(stack: Stack) -> None:
    """``ray down`` from the head, then ``ray stop`` on every host: ``ray down`` stops the head, and a worker's raylet
    would wait out Ray's GCS reconnect timeout (a minute) before it exits."""
    stack.on_head(["ray", "down", "-y", CLUSTER_YAML], timeout=300)
    stop_ray_everywhere(stack)


RAY_PROCESSES = ("/raylet", "/gcs_server")  # a host with neither runs no Ray node


def stop_ray_everywhere(stack: Stack, timeout_s: float = 60) -> None:
    """``ray stop --force`` on every live host (each sees its own processes only); fails if a Ray node is left."""
    hosts = [host for host in stack.bed.hosts if host.alive]
    for host in hosts:
        host.run(["ray", "stop", "--force"], env=stack.login_env(), timeout=timeout_s, check=False)
    deadline = time.monotonic() + timeout_s
    while (left := [h.hostname for h in hosts if any(h.find(name) for name in RAY_PROCESSES)]) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        raise AssertionError(f"Ray still running on {left} {timeout_s:.0f} s after ray stop")


def submit_command(name: str, args: list[str], *extra: str) -> list[str]:
    return ["ray", "submit", "--no-config-cache", CLUSTER_YAML, SWEEP, "--", *args, "--name", name, *extra]


@dataclass
class Submission:
    returncode: int
    output: str
    wall_s: float

    @property
    def summary(self) -> dict:
        lines = [line for line in self.output.splitlines() if line.startswith('{"sweep"')]
        if not lines:
            raise AssertionError(f"no sweep summary in the output:\n{self.output[-4000:]}")
        return json.loads(lines[-1])


def start_submit(stack: Stack, name: str, *extra: str, args: list[str] = SWEEP_ARGS) -> subprocess.Popen:
    return stack.head.popen(submit_command(name, args, *extra), env=stack.head_env(), cwd=str(stack.bed.code),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, began: float, timeout_s: float = 900) -> Submission:
    output, _ = process.communicate(timeout=timeout_s)
    return Submission(process.returncode, output, time.monotonic() - began)


@contextlib.contextmanager
def left_to_finish_on_error(process: subprocess.Popen, timeout_s: float = 900) -> Iterator[None]:
    """If the block fails (a fault found no trial to hit), the sweep of ``process`` still runs to its end before the
    error goes on, so the next scenario finds the cluster idle; the sweep's output is printed (pytest shows it)."""
    try:
        yield
    except Exception:
        output, _ = process.communicate(timeout=timeout_s)
        print(f"[cluster] the sweep's output (exit {process.returncode}), last 6000 characters:\n{(output or '')[-6000:]}", flush=True)
        raise


def submit(stack: Stack, name: str, *extra: str, args: list[str] = SWEEP_ARGS, timeout_s: float = 900) -> Submission:
    began = time.monotonic()
    return finish(start_submit(stack, name, *extra, args=args), began, timeout_s)


# --------------------------------------------------------------------------- what MLflow holds


def progress(stack: Stack, name: str) -> dict:
    return stack.probe("progress", name)


def audit(stack: Stack, parent_run_id: str) -> dict:
    return stack.probe("audit", parent_run_id)


def wait_for(stack: Stack, name: str, condition: str, *args: str, timeout_s: float = 600) -> dict:
    """Block until ``condition`` (``probe.CONDITIONS``) picks a trial of the sweep; its child run (``progress``'s
    record). Fails if the sweep ends first."""
    state = stack.probe("wait", name, condition, *args, timeout=timeout_s)
    if not state["met"]:
        raise AssertionError(f"sweep {name} ended before {condition} {' '.join(args)}: {state}")
    return state["chosen"]


# --------------------------------------------------------------------------- SLURM's node logic on every host


def slurm_nodes(stack: Stack, hosts: list[Host], name: str, args: list[str] = SMALL_ARGS, timeout_s: float = 900) -> tuple[list[Submission], float]:
    """``python -m galaxy_da.sweep.nodes`` on each host (rank = position; rank 0 runs the sweep, and alone holds the
    MLflow admin); their results.

    As ``srun`` would, the job ends with rank 0: a worker still there two minutes
    later (it stops once the head is gone) is killed and reported with status -9.
    """
    began = time.monotonic()
    sweep = [f"{stack.venv}/python", SWEEP, *args, "--name", name]
    processes = [
        host.popen([f"{stack.venv}/python", "-m", "galaxy_da.sweep.nodes", "--rank", str(rank), "--nodes", str(len(hosts)),
                    "--head", hosts[0].hostname, "--num-cpus", str(HOST_CPUS), "--", *sweep],
                   env=stack.head_env() if rank == 0 else stack.login_env(), cwd=str(stack.bed.code),
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank, host in enumerate(hosts)
    ]
    results = [finish(processes[0], began, timeout_s)]
    wall_s = time.monotonic() - began
    for process in processes[1:]:
        try:
            results.append(finish(process, began, 120))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            results.append(finish(process, began, 30))
    return results, wall_s
