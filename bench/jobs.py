"""Trained-and-evaluated trials for the studies, run in parallel processes: the study runner.

One job = one ``galaxy-da train`` run (same config file, same dotted overrides,
so every row of BENCHMARKS.md reproduces with the printed command), logged to
MLflow under a parent run, then evaluated by ``galaxy_da.eval`` on the target
test labels. An :class:`oracle.OracleTrace` scores the in-memory model on target
test after each *scored* epoch (those the label-free rule may pick) for the
ORACLE column; it never reaches training or selection.

Cheap by construction: one pool of worker processes serves every :func:`run_all`
call of a study (:func:`_pool`: starting a worker costs a torch import, ~4 s, and a
study runs its jobs in several phases); each worker reads (and sha256-checks) each
split once for all its jobs (:func:`galaxy_da.data.reader.cached_reads`); the final
evaluation computes only the metric groups the tables read (:data:`EVAL_GROUPS`:
the labelled splits and the domain probe; no target-adapt pass, no DEV/SND
fits, no plots; a study that reads more, such as the estimated target priors,
names its groups in :func:`make_job`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Optional

from galaxy_da.data.reader import cached_reads

REPO = Path(__file__).resolve().parents[1]
BENCHMARK_CONFIG = REPO / "configs" / "benchmark.yaml"
EVAL_GROUPS = ("splits", "probe")  # what the study tables read (galaxy_da.eval.METRIC_GROUPS)
_WORKER_READS = contextlib.ExitStack()  # a worker process keeps its split reads for its lifetime


def train_command(config: Path, overrides: dict[str, Any]) -> str:
    """The ``galaxy-da train`` command line that reproduces a job (tracking settings left out)."""
    shown = " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in overrides.items() if not k.startswith("tracking."))
    return f"galaxy-da train --config {config.relative_to(REPO)} {shown}"


def make_job(method: str, seed: int, overrides: dict[str, Any], *, parent_run_id: Optional[str], tracking_uri: str,
             config: Path = BENCHMARK_CONFIG, threads: int = 1, groups: tuple[str, ...] = EVAL_GROUPS) -> dict[str, Any]:
    """One job; ``groups``: the evaluation's metric groups (:data:`EVAL_GROUPS`, plus e.g. ``priors`` where a table reads them)."""
    overrides = {**overrides, "seed": seed}
    return {
        "method": method, "seed": seed, "config": str(config), "parent_run_id": parent_run_id, "threads": threads, "groups": list(groups),
        "overrides": {**overrides, "tracking.tracking_uri": tracking_uri, "tracking.run_name": f"{method}-s{seed}"},
        "command": train_command(config, overrides),
    }


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train (tracked), evaluate the label-free choice on target test, and trace the ORACLE choice."""
    import torch

    sys.path.insert(0, str(REPO / "bench"))
    torch.set_num_threads(job["threads"])
    from galaxy_da.config import load_config
    from galaxy_da.eval import evaluate_run
    from galaxy_da.tracking import RunTracker
    from galaxy_da.trial import run_trial
    from oracle import OracleTrace

    cfg = load_config(job["config"], [f"{k}={json.dumps(v)}" for k, v in job["overrides"].items()])
    started = time.perf_counter()
    trace = OracleTrace(cfg)
    outcome = run_trial(cfg, parent_run_id=job["parent_run_id"], extra_report=trace, extra_tags={"benchmark.method": job["method"]})
    metrics = evaluate_run(outcome.run_id, cfg.tracking.tracking_uri, log=True, plots=False, groups=job["groups"], echo=False)
    oracle = trace.best_scored()
    metrics |= {"oracle/tgt_test_macro_f1_best_epoch": oracle["macro_f1"], "oracle/best_epoch": oracle["epoch"]}
    RunTracker(cfg, run_id=outcome.run_id).log_metrics({k: v for k, v in metrics.items() if k.startswith("oracle/")})
    return {
        "method": job["method"], "seed": job["seed"], "run_id": outcome.run_id, "command": job["command"],
        "best_epoch": outcome.best_epoch, "selection_score": outcome.best_score, "seconds": time.perf_counter() - started,
        "epochs_trained": len(outcome.history),
        "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}, "oracle_epochs": trace.epochs,
    }


def run_all(jobs: list[dict[str, Any]], workers: int, done: Optional[Path] = None) -> list[dict[str, Any]]:
    """Every job, ``workers`` at a time in worker processes (one torch thread each by default); a line per finished job.

    The processes (spawned, so no state of the caller leaks in) are kept for the next call with the same
    ``workers`` and ended when the study's process exits.

    With ``done`` (a JSON-lines file), each result is appended as soon as its job ends, and a job
    whose method and command are already there is not run again: an interrupted benchmark
    continues where it stopped (its earlier runs stay under their first MLflow parent).
    """
    finished = _finished(done)
    results = {i: finished[_key(job)] for i, job in enumerate(jobs) if _key(job) in finished}
    todo = [(i, job) for i, job in enumerate(jobs) if i not in results]
    if results:
        print(f"{len(results)} of {len(jobs)} jobs already done ({done})", flush=True)

    def keep(i: int, result: dict[str, Any]) -> None:
        results[i] = _announce(result, len(results), len(jobs))
        if done is not None:
            with done.open("a") as stream:
                stream.write(json.dumps(result, default=str) + "\n")

    if workers == 1:
        with cached_reads():
            for i, job in todo:
                keep(i, run_job(job))
    elif todo:
        futures = {_pool(workers).submit(run_job, job): i for i, job in todo}
        for future in as_completed(futures):
            keep(futures[future], future.result())
    return [results[i] for i in range(len(jobs))]


@functools.cache
def _pool(workers: int) -> ProcessPoolExecutor:
    """The study's pool of ``workers`` spawned processes, started on first use (the standard library ends it at exit)."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_keep_reads)


def _keep_reads() -> None:
    """Pool initializer: this worker reads each split once for all the jobs it runs."""
    _WORKER_READS.enter_context(cached_reads())


def _key(job_or_result: dict[str, Any]) -> str:
    return f"{job_or_result['method']} :: {job_or_result['command']}"


def _finished(done: Optional[Path]) -> dict[str, dict[str, Any]]:
    if done is None or not done.is_file():
        return {}
    return {_key(result): result for result in map(json.loads, done.read_text().splitlines()) if result}


def _announce(result: dict[str, Any], index: int, total: int) -> dict[str, Any]:
    f1 = result["metrics"].get("eval/tgt_test/macro_f1", float("nan"))
    print(f"[{index + 1}/{total}] {result['method']} seed {result['seed']}: target macro-F1 {f1:.3f} ({result['seconds']:.0f} s)", flush=True)
    return result
