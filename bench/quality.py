"""The quality benchmark: does alignment help on the synthetic sim-to-survey shift, and by how much?

Every method trains the same backbone for the same epoch budget
(``configs/benchmark.yaml``) with several seeds, and its checkpoint is chosen
by the config's label-free rule. Each run is then evaluated on the labelled
target test split (``galaxy_da.eval``). Beside it, for analysis only, the
ORACLE choice: the epoch whose checkpoint scores best on target test labels,
computed after each epoch by a hook that training never sees.

Rows: majority class (no training), source-only, target-oracle (trained on the
target adapt labels of a target-as-source copy: an upper bound, not a method),
DANN, Sinkhorn, energy, Laplacian, top-k OT added to the best of those three
(best by the label-free selection score, never by target labels), and the
reference's best recipe. Everything is logged to MLflow as one sweep: a parent
run with one child run per (method, seed).

Run: ``python bench/quality.py --data data/quality --seeds 0 1 2 --workers 2``
(renders the dataset, 3000 source + 2500 target, when it is missing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibrate_synth import write_target_as_source  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REPORTED = {
    "tgt acc": "eval/tgt_test/acc",
    "tgt bal. acc": "eval/tgt_test/balanced_acc",
    "tgt macro-F1": "eval/tgt_test/macro_f1",
    "recall E": "eval/tgt_test/recall/elliptical",
    "recall I": "eval/tgt_test/recall/irregular",
    "recall S": "eval/tgt_test/recall/spiral",
    "ECE": "eval/tgt_test/ece_15",
    "probe AUC": "eval/domain/probe_auc",
    "A-dist": "eval/domain/a_distance",
    "src val acc": "eval/src_val/acc",
    "oracle-chosen tgt F1": "oracle/tgt_test_macro_f1_best_epoch",
}


def oracle_hook(cfg, history: list[dict[str, float]]):
    """After each epoch, score ``last.pt`` on target TEST labels (analysis only; returns nothing to training)."""
    import torch

    from galaxy_da.checkpoint import LAST, load_checkpoint
    from galaxy_da.data.loader import ChannelStats
    from galaxy_da.data.reader import ShardDataset
    from galaxy_da.inference import predict
    from galaxy_da.metrics import macro_f1
    from galaxy_da.models.registry import build_model

    test = ShardDataset(cfg.data.path).evaluation_view().labelled("target", "test")

    def hook(record: dict[str, Any], checkpoint_dir: Path) -> None:
        state = load_checkpoint(checkpoint_dir / LAST)
        channels, height, _ = state["image_shape"]
        model = build_model(cfg.model, len(state["class_names"]), channels, height)
        model.load_state_dict(state["model"])
        stats = ChannelStats(**{k: tuple(v) for k, v in state["norm_stats"]["target"].items()})
        logits = predict(model, test, stats, cfg.data.eval_batch_size, torch.device("cpu")).logits
        history.append({"epoch": record["epoch"], "f1": macro_f1(test.labels, logits.argmax(1), len(state["class_names"]))})

    return hook


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One (method, seed): train with MLflow tracking, evaluate the selected checkpoint, score the oracle choice."""
    import torch

    torch.set_num_threads(job["threads"])
    from galaxy_da.config import load_config
    from galaxy_da.eval import evaluate_run
    from galaxy_da.trial import run_trial

    cfg = load_config(REPO / "configs" / "benchmark.yaml", job["overrides"])
    oracle_epochs: list[dict[str, float]] = []
    started = time.perf_counter()
    outcome = run_trial(cfg, parent_run_id=job["parent_run_id"], extra_report=oracle_hook(cfg, oracle_epochs),
                        extra_tags={"benchmark.method": job["method"]})
    metrics = evaluate_run(outcome.run_id, cfg.tracking.tracking_uri, log=True)
    best_oracle = max(oracle_epochs, key=lambda row: row["f1"])
    metrics["oracle/tgt_test_macro_f1_best_epoch"] = best_oracle["f1"]
    metrics["oracle/best_epoch"] = best_oracle["epoch"]
    from galaxy_da.tracking import RunTracker

    RunTracker(cfg, run_id=outcome.run_id).log_metrics({k: v for k, v in metrics.items() if k.startswith("oracle/")})
    return {"method": job["method"], "seed": job["seed"], "run_id": outcome.run_id, "best_epoch": outcome.best_epoch,
            "selection_score": outcome.best_score, "seconds": time.perf_counter() - started,
            "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}}


def run_all(jobs: list[dict[str, Any]], workers: int) -> list[dict[str, Any]]:
    if workers == 1:
        return [run_job(job) for job in jobs]
    import multiprocessing

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(run_job, jobs))


def mean_std(values: list[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "–"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def table(results: list[dict[str, Any]], majority: dict[str, float], order: list[str]) -> str:
    header = "| method | n | " + " | ".join(REPORTED) + " |"
    lines = [header, "|" + "---|" * (len(REPORTED) + 2)]
    lines.append("| majority class (spiral) | – | " + " | ".join(
        f"{majority.get(key, float('nan')):.3f}" if key in majority else "–" for key in REPORTED.values()) + " |")
    for method in order:
        rows = [r for r in results if r["method"] == method]
        cells = [mean_std([r["metrics"].get(metric, float("nan")) for r in rows]) for metric in REPORTED.values()]
        label = method + (" (upper bound: trained on target labels)" if method == "target_oracle" else "")
        lines.append(f"| {label} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/quality")
    parser.add_argument("--n-source", type=int, default=3000)
    parser.add_argument("--n-target", type=int, default=2500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2, help="trials at once (each uses --threads threads)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--json", type=Path, default=Path("bench/results/quality.json"))
    parser.add_argument("overrides", nargs="*", help="dotted overrides of configs/benchmark.yaml for every method")
    args = parser.parse_args()
    started = time.perf_counter()

    from galaxy_da.data import synth
    from galaxy_da.sweep.tracking_server import tracking_server
    from galaxy_da.tracking import default_tracking_uri

    data = Path(args.data)
    if not (data / "manifest.json").is_file():
        synth.generate(data, seed=0, n_source=args.n_source, n_target=args.n_target, workers=2)
    oracle_data = data.with_name(data.name + "-target-as-source")
    if not (oracle_data / "manifest.json").is_file():
        write_target_as_source(str(data), oracle_data, seed=0)
    # concurrent trials log through one tracking server, never straight into the sqlite file
    with tracking_server(args.tracking_uri or default_tracking_uri()) as tracking_uri:
        study(args, data, oracle_data, tracking_uri, started)


def study(args: argparse.Namespace, data: Path, oracle_data: Path, tracking_uri: str, started: float) -> None:
    from galaxy_da.config import load_config
    from galaxy_da.data.reader import ShardDataset
    from galaxy_da.metrics import majority_baseline
    from galaxy_da.recipes import DISTANCE_RECIPES, RECIPES, with_topk
    from galaxy_da.tracking import RunTracker

    base = load_config(REPO / "configs" / "benchmark.yaml", [f"data.path={data}", *args.overrides])
    base.tracking.tracking_uri = tracking_uri
    base.tracking.run_name = "quality-benchmark"
    parent = RunTracker(base, extra_tags={"sweep": "quality-benchmark", "seeds": " ".join(map(str, args.seeds))})
    common = {"data.path": str(data), "tracking.tracking_uri": tracking_uri}
    shared = {"parent_run_id": parent.run_id, "threads": args.threads}

    def make_jobs(methods: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        from galaxy_da.recipes import recipe_overrides

        jobs = []
        for method, (align, extra) in methods.items():
            for seed in args.seeds:
                overrides = {**common, **recipe_overrides(align), **extra, "seed": seed, "tracking.run_name": f"{method}-s{seed}"}
                jobs.append({**shared, "method": method, "seed": seed,
                             "overrides": [f"{k}={json.dumps(v)}" for k, v in overrides.items()] + args.overrides})
        return jobs

    first = {name: (RECIPES[name], {}) for name in ("source_only", "dann", *DISTANCE_RECIPES, "reference_recipe")}
    first["target_oracle"] = (RECIPES["source_only"], {"data.path": str(oracle_data)})
    results = run_all(make_jobs(first), args.workers)
    # top-k OT joins the distance whose label-free selection score is best on average (no target labels involved)
    best_distance = max(DISTANCE_RECIPES, key=lambda m: np.mean([r["selection_score"] for r in results if r["method"] == m]))
    topk_name = f"{best_distance}+topk_ot"
    results += run_all(make_jobs({topk_name: (with_topk(best_distance), {})}), args.workers)

    dataset = ShardDataset(str(data))
    test_labels = dataset.evaluation_view().labelled("target", "test").labels
    majority = majority_baseline(dataset.counts("source", "train"), test_labels, dataset.class_names)
    majority_metrics = {"eval/tgt_test/acc": majority["acc"], "eval/tgt_test/balanced_acc": majority["balanced_acc"],
                        "eval/tgt_test/macro_f1": majority["macro_f1"]}
    order = ["source_only", "target_oracle", "dann", *DISTANCE_RECIPES, topk_name, "reference_recipe"]
    wall = time.perf_counter() - started
    command = "python bench/quality.py " + " ".join(sys.argv[1:])
    markdown = table(results, majority_metrics, order)
    parent.log_text(markdown, "leaderboard.md")
    parent.log_metrics({"wall_seconds": wall})
    parent.finish()
    payload = {"command": command, "wall_seconds": wall, "data": str(data), "manifest_sha256": dataset.manifest_hash,
               "seeds": args.seeds, "best_distance_by_label_free_score": best_distance, "parent_run_id": parent.run_id,
               "majority": majority, "results": results, "table_markdown": markdown}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=1, default=str))
    print(f"`{command}` — wall time {wall / 60:.1f} min, MLflow parent run {parent.run_id}\n")
    print(markdown)


if __name__ == "__main__":
    main()
