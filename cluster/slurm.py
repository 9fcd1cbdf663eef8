"""Run a sweep script (any of sweeps/) on a SLURM allocation, with a Ray cluster spanning its nodes.

    python cluster/slurm.py sweeps/topk.py --data /shared/synth                    # on a SLURM login node
    python cluster/slurm.py --partition gpu --nodes 4 --gpus-per-node 4 --cpus-per-node 32 \\
        --time-min 720 sweeps/backbones.py --data /shared/synth --max-concurrent 16
    python cluster/slurm.py --cluster local --wait sweeps/topk.py --smoke-test      # no SLURM: one local node

One submitit job, one task per node; each task runs :func:`galaxy_da.sweep.nodes.run_node`
(the Ray-node logic, also runnable without SLURM as ``python -m galaxy_da.sweep.nodes``):
task 0 starts a Ray head (``--port``), the others workers that join it. Task 0
waits until all nodes have joined, runs the script with ``RAY_ADDRESS`` pointing
at the head (the sweep's driver, Optuna and the MLflow client live there), then
stops its Ray node; the workers see the head go and stop theirs. Ray's token
authentication is on (``$RAY_AUTH_TOKEN``, else ``~/.ray/auth_token`` on the
shared home). Each node keeps Ray's files in its own temporary folder, so other
Ray instances on the same host are neither joined nor stopped.

Without SLURM, submitit's AutoExecutor falls back to a local process
(``--cluster local``, one node; ``debug`` runs in this process); ``slurm_*``
settings are then ignored. Logs and the job's pickles go to ``--folder``. A
sweep of the same ``--name`` that was cut by the time limit continues with
``--resume``. Data and ``--storage-path`` must be on storage every node sees.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import submitit

from galaxy_da.sweep.nodes import run_node


@dataclass
class RaySweepJob:
    """The submitit job function: on every task, this task's Ray node (:func:`galaxy_da.sweep.nodes.run_node`)."""

    command: list[str]  # the sweep script and its arguments, run by task 0
    cwd: str
    port: int
    num_cpus: int
    num_gpus: int

    def __call__(self) -> int:
        env = submitit.JobEnvironment()
        status = run_node(env.global_rank, env.num_nodes, env.hostnames[0], self.port, self.command, self.cwd, self.num_cpus, self.num_gpus)
        if status != 0:
            raise RuntimeError(f"the sweep exited with status {status}")
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
    args = parser.parse_args(argv)
    if not args.script.is_file():
        parser.error(f"{args.script}: no such sweep script")
    return args


def make_executor(args: argparse.Namespace) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=args.folder, cluster=args.cluster)
    executor.update_parameters(
        name=f"galaxy-da-{args.script.stem}", timeout_min=args.time_min, nodes=args.nodes, tasks_per_node=1,
        cpus_per_task=args.cpus_per_node, gpus_per_node=args.gpus_per_node, mem_gb=args.mem_gb, slurm_partition=args.partition,
    )
    return executor


def submit(args: argparse.Namespace) -> submitit.Job:
    script = args.script.resolve()
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
