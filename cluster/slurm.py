"""Submit a sweep driver (any script in sweeps/) as a SLURM job through submitit.

    python cluster/slurm.py sweeps/topk.py --data /shared/synth            # on a SLURM login node
    python cluster/slurm.py --gpus 4 --cpus 32 --time-min 720 sweeps/backbones.py
    python cluster/slurm.py --cluster local --wait sweeps/topk.py --smoke-test   # no SLURM: a local job

The job runs the script with this Python on one allocation; the script starts a
Ray instance there and spreads its trials over the allocation's GPUs and CPUs.
Without SLURM, submitit's AutoExecutor falls back to a local process
(``--cluster local``; ``debug`` runs in this process). ``slurm_*`` settings are
ignored locally. Logs and the job's pickles go to ``--folder``. A sweep of the
same ``--name`` that was cut by the time limit continues with ``--resume``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import submitit
from submitit.helpers import CommandFunction

ROOT = Path(__file__).resolve().parents[1]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("script", type=Path, help="the sweep script, e.g. sweeps/topk.py")
    parser.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments of the script")
    parser.add_argument("--cluster", choices=["slurm", "local", "debug"], help="default: SLURM when available, else local")
    parser.add_argument("--folder", type=Path, default=Path("slurm_logs/%j"), help="submitit logs (default: %(default)s)")
    parser.add_argument("--partition", help="SLURM partition")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs on the node (default: %(default)s)")
    parser.add_argument("--cpus", type=int, default=8, help="CPUs for the job (default: %(default)s)")
    parser.add_argument("--mem-gb", type=int, default=64)
    parser.add_argument("--time-min", type=int, default=240, help="time limit in minutes (default: %(default)s)")
    parser.add_argument("--wait", action="store_true", help="wait for the job and print its output")
    return parser.parse_args(argv)


def make_executor(args: argparse.Namespace) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=args.folder, cluster=args.cluster)
    executor.update_parameters(
        name=f"galaxy-da-{args.script.stem}", timeout_min=args.time_min, cpus_per_task=args.cpus,
        gpus_per_node=args.gpus, mem_gb=args.mem_gb, tasks_per_node=1, nodes=1,
        slurm_partition=args.partition,
    )
    return executor


def submit(args: argparse.Namespace) -> submitit.Job:
    script = args.script if args.script.is_absolute() else Path.cwd() / args.script
    if not script.is_file():
        raise FileNotFoundError(f"{script}: no such sweep script")
    command = CommandFunction([sys.executable, str(script), *args.script_args], cwd=str(Path.cwd()), verbose=True)
    return make_executor(args).submit(command)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    job = submit(args)
    print(f"submitted job {job.job_id} ({type(job).__name__}); logs in {job.paths.folder}", flush=True)
    if args.wait:
        print(job.result(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
