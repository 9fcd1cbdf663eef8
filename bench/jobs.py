"""Trained-and-evaluated trials for the quality benchmarks, run in parallel processes.

One job = one ``galaxy-da train`` run (same config file, same dotted overrides,
so every row of BENCHMARKS.md reproduces with the printed command), logged to
MLflow under a parent run, then evaluated by ``galaxy_da.eval`` on the target
test labels. An :class:`oracle.OracleTrace` scores every epoch on target test for
the ORACLE column; it never reaches training or selection.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
BENCHMARK_CONFIG = REPO / "configs" / "benchmark.yaml"


def train_command(config: Path, overrides: dict[str, Any]) -> str:
    """The ``galaxy-da train`` command line that reproduces a job (tracking settings left out)."""
    shown = " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in overrides.items() if not k.startswith("tracking."))
    return f"galaxy-da train --config {config.relative_to(REPO)} {shown}"


def make_job(method: str, seed: int, overrides: dict[str, Any], *, parent_run_id: Optional[str], tracking_uri: str,
             config: Path = BENCHMARK_CONFIG, threads: int = 1) -> dict[str, Any]:
    overrides = {**overrides, "seed": seed}
    return {
        "method": method, "seed": seed, "config": str(config), "parent_run_id": parent_run_id, "threads": threads,
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
    trace = OracleTrace(cfg)
    started = time.perf_counter()
    outcome = run_trial(cfg, parent_run_id=job["parent_run_id"], extra_report=trace, extra_tags={"benchmark.method": job["method"]})
    metrics = evaluate_run(outcome.run_id, cfg.tracking.tracking_uri, log=True, plots=False)
    oracle = trace.best_scored()
    metrics |= {"oracle/tgt_test_macro_f1_best_epoch": oracle["macro_f1"], "oracle/best_epoch": oracle["epoch"]}
    RunTracker(cfg, run_id=outcome.run_id).log_metrics({k: v for k, v in metrics.items() if k.startswith("oracle/")})
    return {
        "method": job["method"], "seed": job["seed"], "run_id": outcome.run_id, "command": job["command"],
        "best_epoch": outcome.best_epoch, "selection_score": outcome.best_score, "seconds": time.perf_counter() - started,
        "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}, "oracle_epochs": trace.epochs,
    }


def run_all(jobs: list[dict[str, Any]], workers: int) -> list[dict[str, Any]]:
    """Every job, ``workers`` at a time in fresh processes (one torch thread each by default); a line per finished job."""
    if workers == 1:
        return [_announce(run_job(job), i, len(jobs)) for i, job in enumerate(jobs)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return [_announce(result, i, len(jobs)) for i, result in enumerate(pool.map(run_job, jobs))]


def _announce(result: dict[str, Any], index: int, total: int) -> dict[str, Any]:
    f1 = result["metrics"].get("eval/tgt_test/macro_f1", float("nan"))
    print(f"[{index + 1}/{total}] {result['method']} seed {result['seed']}: target macro-F1 {f1:.3f} ({result['seconds']:.0f} s)", flush=True)
    return result
