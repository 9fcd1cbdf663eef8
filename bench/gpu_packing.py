"""Throughput of 4 CNN trials packed on one GPU (0.25 GPU each) over 1 trial alone, through real sweeps.

Two sweeps on a local Ray instance with the same trial: one trial, then four at
once (the sweep's default GPU share for ``cnn``: four pack onto one GPU). Each
trial's throughput is the median of its per-epoch ``train/images_per_s`` (the
trainer's own timing of its step loop, both domains), the first epoch dropped
(start-up); the packed figure is the sum over the four trials, meaningful when
they ran together (``all_running_s``: how long all four were running). Every trial logs
its GPU ids and node (``gpu_ids``, ``node_id`` tags), so the JSON also says
where each ran.

Run: ``python bench/gpu_packing.py --json bench/results/gpu_packing.json``
(``--device cpu --smoke-test`` checks the script on CPUs, where the ratio means nothing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from galaxy_da.config import load_config

TRIAL = {"model.backbone": "cnn", "data.batch_size": 64, "optim.epochs": 6, "optim.warmup_epochs": 1, "optim.steps_per_epoch": 50,
         "align.method": "laplacian", "selection.eval_every": 5, "tracking.experiment": "gpu-packing"}
SMOKE = {"model.width": 4, "data.batch_size": 16, "optim.epochs": 3, "optim.steps_per_epoch": 3, "data.max_source": 128, "data.max_target": 96}


def run(data: str, trials: int, work: Path, use_gpu: bool, overrides: dict) -> dict:
    from mlflow.tracking import MlflowClient

    from galaxy_da.sweep.settings import SweepSettings
    from galaxy_da.sweep.tuner import run_sweep

    cfg = load_config(None, {**TRIAL, **overrides, "data.path": data})
    settings = SweepSettings(
        name=f"pack{trials}", space={"seed": {"grid": list(range(trials))}}, searcher="random", num_samples=1, max_concurrent=trials,
        grace_period=cfg.optim.epochs, storage_path=str(work / "ray"), tracking_uri=f"sqlite:///{work / 'mlflow.db'}", use_gpu=use_gpu,
    )
    started = time.perf_counter()
    result = run_sweep(cfg, settings)
    wall = time.perf_counter() - started
    client = MlflowClient(result.tracking_uri)
    experiment = client.get_run(result.parent_run_id).info.experiment_id
    rows = []
    for child in client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'"):
        rates = [m.value for m in sorted(client.get_metric_history(child.info.run_id, "train/images_per_s"), key=lambda m: m.step)][1:]
        rows.append({"seed": child.data.tags["seed"], "images_per_s": statistics.median(rates), "gpu_ids": child.data.tags["gpu_ids"],
                     "node_id": child.data.tags["node_id"], "status": child.info.status,
                     "start_s": child.info.start_time / 1000, "end_s": child.info.end_time / 1000})
    overlap = min(r["end_s"] for r in rows) - max(r["start_s"] for r in rows)  # the sum only means something if they ran together
    return {"trials": trials, "complete": result.complete, "wall_s": wall, "images_per_s": sum(r["images_per_s"] for r in rows),
            "all_running_s": overlap, "runs": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="dataset (default: a fresh GalSim benchmark of 1,200 + 1,000 galaxies at 65 px)")
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--smoke-test", action="store_true")
    parser.add_argument("--json", type=Path, default=Path("bench/results/gpu_packing.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="galaxy-da-packing-"))
    data = args.data
    if data is None:
        from galaxy_da.data import synth

        data = str(synth.generate(work / "synth", seed=0, n_source=300 if args.smoke_test else 1200, n_target=250 if args.smoke_test else 1000,
                                  size=33 if args.smoke_test else 65, workers=4, progress=False))
    overrides = {**(SMOKE if args.smoke_test else {}), "device": args.device}
    single = run(data, 1, work / "one", args.device == "cuda", overrides)
    packed = run(data, 4, work / "four", args.device == "cuda", overrides)
    payload = {"command": "python bench/gpu_packing.py" + (" --device cpu --smoke-test" if args.smoke_test else ""),
               "device": args.device, "single": single, "packed": packed, "packed_over_single": packed["images_per_s"] / single["images_per_s"]}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2))
    print(json.dumps({k: payload[k] for k in ("device", "packed_over_single")}), flush=True)


if __name__ == "__main__":
    main()
