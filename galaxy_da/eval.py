"""Target-domain evaluation of one tracked run: ``python -m galaxy_da.eval --run-id RUN``.

Everything is rebuilt from the run alone: the checkpoint (``checkpoints/best.pt``
or ``last.pt``, loaded with ``weights_only=True``) carries the config, the class
names, the image shape, the normalisation statistics and the dataset's path and
manifest hash. ``--data`` points at another copy of the dataset; a manifest whose
hash differs from the run's is a WARNING naming both hashes, not an error.

Metrics (one flat ``dict[str, float]``, logged back to the run unless ``--no-log``):

- ``eval/src_val/<m>``, ``eval/tgt_test/<m>``: :func:`~galaxy_da.metrics.classification_metrics`
  on the labelled source ``val`` and target ``test`` splits;
- ``eval/<split>/majority_{acc,macro_f1,balanced_acc}``: the trivial predictor that
  always answers the majority class of the source ``train`` counts (manifest);
- ``eval/domain/...``: linear domain probe (``probe_auc``, ``probe_balanced_acc``,
  ``a_distance``), ``sinkhorn`` divergence and per-class ``centroid_dist/<class>``
  between source-val and target-test features (the centroids read target labels);
- ``eval/select/<rule>``: every label-free rule of :data:`~galaxy_da.selection.SELECTION_RULES`
  on (source val, unlabelled target ``adapt``), as training scores a checkpoint;
  ``eval/select/oracle``: the ORACLE (target test macro-F1), for analysis only;
- ``eval/tgt_test/prior/<class>`` and ``eval/label_shift/<estimator>/...``: the true
  target priors beside every label-free estimate (:mod:`galaxy_da.label_shift.evaluation`).

Figures go to the run's ``eval/plots/`` artifacts, with ``eval/metrics.json`` and
``eval/summary.txt``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch

from galaxy_da import strict_json
from galaxy_da.config import TrialConfig, validate
from galaxy_da.data.loader import ChannelStats
from galaxy_da.data.reader import ShardDataset
from galaxy_da.epoch_numbers import shown
from galaxy_da.inference import predict, resolve_device
from galaxy_da.label_shift.evaluation import prior_metrics
from galaxy_da.metrics import (
    class_centroid_distances,
    classification_metrics,
    domain_probe,
    majority_baseline,
    sinkhorn_divergence,
)
from galaxy_da.models.registry import build_model
from galaxy_da.selection import ORACLE, ORACLE_RULES, SELECTION_RULES, Predictions, SelectionInputs
from galaxy_da.tracking import TRACKING_URI_HELP

logger = logging.getLogger("galaxy_da.eval")

# Evaluated labelled splits: metric prefix -> (domain, split).
LABELLED_SPLITS = {"src_val": ("source", "val"), "tgt_test": ("target", "test")}
# Every split an evaluation may predict: prefix -> (domain, split, read with labels).
PREDICTED_SPLITS = {"src_val": ("source", "val", True), "tgt_test": ("target", "test", True), "tgt_adapt": ("target", "adapt", False)}
SPLIT_TITLES = {"src_val": "source val", "tgt_test": "target test"}
EVAL_METRIC = "eval/tgt_test/macro_f1"  # present once a run has been evaluated
DOMAIN_PROBE_KEYS = {"auc": "probe_auc", "balanced_acc": "probe_balanced_acc", "a_distance": "a_distance"}


# --------------------------------------------------------------------------- the run


@dataclass
class LoadedRun:
    """A trained model rebuilt from its run's checkpoint, with what it was trained on."""

    run_id: str
    run_name: str
    tracking_uri: str
    cfg: TrialConfig
    model: torch.nn.Module
    class_names: list[str]
    stats: dict[str, ChannelStats]  # per domain
    manifest_hash: str
    data_path: str
    history: list[dict[str, Any]]  # every epoch the run trained (from last.pt), not only those up to best.pt
    checkpoint: str
    checkpoint_epoch: int


def load_run(run_id: str, tracking_uri: Optional[str] = None, checkpoint: str = "best") -> LoadedRun:
    """Download ``checkpoints/<checkpoint>.pt`` and rebuild the config and model (strict load).

    The training history comes from ``last.pt``: ``best.pt`` holds the epochs up to the best one only.
    """
    from mlflow.tracking import MlflowClient

    from galaxy_da.tracking import default_tracking_uri, load_run_checkpoint

    tracking_uri = tracking_uri or default_tracking_uri()
    state = load_run_checkpoint(run_id, checkpoint, tracking_uri)
    last = state if checkpoint == "last" else load_run_checkpoint(run_id, "last", tracking_uri)
    run = MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    cfg = validate(state["config"], source=f"run {run_id} checkpoint config")
    channels, height, _ = state["image_shape"]
    model = build_model(cfg.model, len(state["class_names"]), channels, height)
    model.load_state_dict(state["model"], strict=True)
    return LoadedRun(
        run_id=run_id,
        run_name=run.info.run_name or run_id[:8],
        tracking_uri=tracking_uri,
        cfg=cfg,
        model=model,
        class_names=list(state["class_names"]),
        stats={domain: ChannelStats(tuple(s["mean"]), tuple(s["std"])) for domain, s in state["norm_stats"].items()},
        manifest_hash=run.data.tags.get("data_manifest_hash") or state["data_manifest_hash"],
        data_path=state["data_path"],
        history=list(last["history"]),
        checkpoint=checkpoint,
        checkpoint_epoch=int(state["epoch"]),
    )


def open_dataset_for(run: LoadedRun, data: Optional[str] = None, check_hashes: bool = True) -> ShardDataset:
    """The run's dataset (its target survey ``data.target``), or ``data``; warns when its manifest is not the one the run trained on.

    Every shard read is checked against the manifest's sha256 unless ``check_hashes`` is False.
    """
    dataset = ShardDataset(data or run.data_path, check_hashes=check_hashes, target=run.cfg.data.target)
    if dataset.manifest_hash != run.manifest_hash:
        logger.warning(
            "dataset %s has manifest sha256 %s, but run %s was trained on manifest sha256 %s; "
            "the metrics describe a different dataset",
            dataset.uri, dataset.manifest_hash, run.run_id, run.manifest_hash,
        )
    if dataset.class_names != run.class_names:
        raise ValueError(f"dataset {dataset.uri} has classes {dataset.class_names}; the run was trained on {run.class_names}")
    return dataset


# --------------------------------------------------------------------------- metrics


@dataclass
class Evaluation:
    """A run's predictions on the evaluated splits and every metric computed from them."""

    run: LoadedRun
    predictions: dict[str, Predictions]  # keys of LABELLED_SPLITS, plus "tgt_adapt" (unlabelled)
    majority_class: str
    metrics: dict[str, float]

    @property
    def title(self) -> str:
        return f"{self.run.run_name} ({self.run.checkpoint}.pt, epoch {shown(self.run.checkpoint_epoch)})"  # numbered from 1


def predict_splits(run: LoadedRun, dataset: ShardDataset, device: str = "auto", prefixes: Iterable[str] = PREDICTED_SPLITS) -> dict[str, Predictions]:
    """Eval-mode outputs on the splits of ``prefixes`` (:data:`PREDICTED_SPLITS`; target adapt without labels).

    ``device`` is this machine's choice, not the run's: a run trained on CUDA
    evaluates on a CPU-only machine (checkpoints load onto the CPU first).
    """
    device = resolve_device(device)
    model = run.model.to(device)
    batch = run.cfg.data.eval_batch_size
    view = dataset.evaluation_view()
    outputs = {}
    for prefix in prefixes:
        domain, split, labelled = PREDICTED_SPLITS[prefix]
        images = view.labelled(domain, split) if labelled else view.target(split)
        outputs[prefix] = predict(model, images, run.stats[domain], batch, device)
    return outputs


def split_metrics(predictions: dict[str, Predictions], class_names: list[str], train_counts: list[int]) -> dict[str, float]:
    """Classification metrics and the majority-class baseline of every labelled split."""
    metrics: dict[str, float] = {}
    for prefix in LABELLED_SPLITS:
        outputs = predictions[prefix]
        scores = classification_metrics(outputs.labels, outputs.probs, class_names)
        baseline = majority_baseline(train_counts, outputs.labels, class_names)
        metrics |= {f"eval/{prefix}/{key}": value for key, value in scores.items()}
        metrics |= {f"eval/{prefix}/majority_{key}": baseline[key] for key in ("acc", "macro_f1", "balanced_acc")}
    return metrics


def probe_metrics(source: Predictions, target: Predictions) -> dict[str, float]:
    """A linear domain probe between source-val and target-test features (AUC, balanced acc, proxy A-distance)."""
    probe = domain_probe(source.features, target.features)
    return {f"eval/domain/{name}": probe[key] for key, name in DOMAIN_PROBE_KEYS.items()}


def distance_metrics(source: Predictions, target: Predictions, class_names: list[str]) -> dict[str, float]:
    """Sinkhorn divergence and per-class centroid distances between source-val and target-test features."""
    metrics = {"eval/domain/sinkhorn": sinkhorn_divergence(source.features, target.features)}
    centroids = class_centroid_distances(source.features, source.labels, target.features, target.labels, class_names)
    return metrics | {f"eval/domain/{key}": value for key, value in centroids.items()}


def selection_scores(predictions: dict[str, Predictions]) -> dict[str, float]:
    """Every label-free rule on (source val, target adapt), and the ORACLE on target test."""
    label_free = SelectionInputs(source_val=predictions["src_val"], target=predictions["tgt_adapt"])
    scores = {f"eval/select/{rule}": float(fn(label_free)) for rule, fn in SELECTION_RULES.items()}
    with_oracle = SelectionInputs(predictions["src_val"], predictions["tgt_adapt"], target_test=predictions["tgt_test"])
    scores |= {f"eval/select/{rule}": float(fn(with_oracle)) for rule, fn in ORACLE_RULES.items()}
    return scores


@dataclass(frozen=True)
class MetricGroup:
    """A group of evaluation metrics: the splits whose predictions it reads, and how it computes them."""

    reads: tuple[str, ...]
    compute: Callable[[dict[str, Predictions], list[str], list[int]], dict[str, float]]


METRIC_GROUPS: dict[str, MetricGroup] = {
    "splits": MetricGroup(("src_val", "tgt_test"), lambda p, names, counts: split_metrics(p, names, counts)),
    "probe": MetricGroup(("src_val", "tgt_test"), lambda p, names, counts: probe_metrics(p["src_val"], p["tgt_test"])),
    "distances": MetricGroup(("src_val", "tgt_test"), lambda p, names, counts: distance_metrics(p["src_val"], p["tgt_test"], names)),
    "select": MetricGroup(("src_val", "tgt_adapt", "tgt_test"), lambda p, names, counts: selection_scores(p)),
    "priors": MetricGroup(("src_val", "tgt_adapt", "tgt_test"), lambda p, names, counts: prior_metrics(p, names)),
}
ALL_GROUPS = tuple(METRIC_GROUPS)


def evaluate_loaded(run: LoadedRun, dataset: ShardDataset, device: str = "auto", groups: Sequence[str] = ALL_GROUPS) -> Evaluation:
    """The metrics of ``groups`` (always ``splits``); only the splits they read are predicted."""
    unknown = sorted(set(groups) - set(METRIC_GROUPS))
    if unknown:
        raise ValueError(f"unknown metric groups {unknown}; choose from {list(METRIC_GROUPS)}")
    groups = ["splits", *(g for g in groups if g != "splits")]
    prefixes = [p for p in PREDICTED_SPLITS if any(p in METRIC_GROUPS[g].reads for g in groups)]
    predictions = predict_splits(run, dataset, device, prefixes)
    train_counts = dataset.counts("source", "train")
    metrics = {"eval/checkpoint_epoch": float(run.checkpoint_epoch)}
    for group in groups:
        metrics |= METRIC_GROUPS[group].compute(predictions, run.class_names, train_counts)
    majority = run.class_names[int(np.argmax(train_counts))]
    return Evaluation(run, predictions, majority, metrics)


# --------------------------------------------------------------------------- summary and logging


SUMMARY_ROWS = ("acc", "balanced_acc", "macro_f1", "roc_auc_macro", "auprc_macro", "ece_15", "brier")


def _cell(value: Optional[float]) -> str:
    return f"{value:>12.4f}" if value is not None else f"{'':>12}"


def format_summary(evaluation: Evaluation) -> str:
    """A readable table: metric rows; source val, target test and majority-on-target-test columns."""
    metrics, names = evaluation.metrics, evaluation.run.class_names
    rows = list(SUMMARY_ROWS[:3]) + [f"recall/{n}" for n in names] + [f"precision/{n}" for n in names] + list(SUMMARY_ROWS[3:])
    domain = {f"  {key.removeprefix('eval/domain/')}": value for key, value in metrics.items() if key.startswith("eval/domain/")}
    select = {key.removeprefix("eval/select/"): value for key, value in metrics.items() if key.startswith("eval/select/")}
    width = max(len(label) for label in [*rows, *domain, *(f"  {rule}" for rule in select)]) + 2  # every value in one column
    lines = [
        f"run {evaluation.run.run_id}: {evaluation.title}",
        f"{'metric':<{width}}{'source val':>12}{'target test':>12}  majority ({evaluation.majority_class})",
    ]
    for row in rows:
        majority = metrics.get(f"eval/tgt_test/majority_{row}")
        lines.append(f"{row:<{width}}{_cell(metrics[f'eval/src_val/{row}'])}{_cell(metrics[f'eval/tgt_test/{row}'])}  {_cell(majority)}")
    if domain:
        lines.append("domain gap (source val vs target test features):")
        lines += [f"{label:<{width}}{_cell(value)}" for label, value in domain.items()]
    if select:
        lines.append("selection scores of this checkpoint on the full splits (higher = better):")
    for rule, value in select.items():
        flag = "  <- ORACLE: reads target test labels, analysis only" if rule == ORACLE else "  (label-free)"
        lines.append(f"{'  ' + rule:<{width}}{_cell(value)}{flag}")
    return "\n".join(lines)


def log_evaluation(evaluation: Evaluation, dataset: ShardDataset, summary: str, plots: bool = True) -> None:
    """Metrics, tags, ``metrics.json``, ``summary.txt`` and (unless ``plots`` is False) the figures into the run, under ``eval/``."""
    from galaxy_da.tracking import RunTracker

    run = evaluation.run
    tracker = RunTracker(run.cfg, tracking_uri=run.tracking_uri, run_id=run.run_id)
    tracker.log_metrics(evaluation.metrics)
    tracker.set_tags({
        "eval.checkpoint": run.checkpoint,
        "eval.data_path": dataset.uri,
        "eval.data_manifest_hash": dataset.manifest_hash,
    })
    tracker.log_text(strict_json.dumps(evaluation.metrics, indent=1), "eval/metrics.json")
    tracker.log_text(summary + "\n", "eval/summary.txt")
    if not plots:
        return
    with tempfile.TemporaryDirectory() as tmp:
        from galaxy_da.eval_figures import write_figures

        for path in write_figures(evaluation, Path(tmp)):
            tracker.log_artifact(path, "eval/plots")


def evaluate_run(
    run_id: str, tracking_uri: Optional[str] = None, data: Optional[str] = None, checkpoint: str = "best", log: bool = True,
    device: str = "auto", plots: bool = True, check_hashes: bool = True, groups: Sequence[str] = ALL_GROUPS, echo: bool = True,
) -> dict[str, float]:
    """Evaluate one tracked run on its dataset (or ``data``) and return its ``eval/...`` metrics.

    ``groups``: which :data:`METRIC_GROUPS` to compute (a benchmark computes only
    what its table reads). Logs metrics (and figures, unless ``plots`` is False:
    the benchmarks' many runs skip the t-SNE) back to the run unless ``log`` is
    False; prints the summary unless ``echo`` is False. Raises ``LookupError``
    for an unknown run or a run without that checkpoint.
    """
    run = load_run(run_id, tracking_uri, checkpoint)
    dataset = open_dataset_for(run, data, check_hashes)
    evaluation = evaluate_loaded(run, dataset, device, groups)
    summary = format_summary(evaluation)
    if echo:
        print(summary, flush=True)
    if log:
        log_evaluation(evaluation, dataset, summary, plots)
    return evaluation.metrics


# --------------------------------------------------------------------------- command line


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-id", required=True, help="MLflow run id of a trained trial")
    parser.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    parser.add_argument("--data", help="dataset path or URI (default: the one the run was trained on)")
    parser.add_argument(
        "--checkpoint", choices=("best", "last"), default="best",
        help="the run's checkpoint to evaluate: best (best.pt, the epoch its label-free selection.rule chose) "
        "or last (last.pt, the last epoch it trained) (default: %(default)s)",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to evaluate, whatever the run trained on (default: %(default)s)")
    parser.add_argument("--no-log", action="store_true", help="do not log metrics and plots back to the run")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write every metric to this JSON file")
    parser.add_argument("--no-verify-hashes", action="store_true", help="do not check each shard's sha256 against the manifest")


def closing_lines(args: argparse.Namespace) -> list[str]:
    """Where the evaluation went (the run's ``eval/`` metrics and ``eval/plots/`` artifacts), then the next command."""
    from galaxy_da.tracking import default_tracking_uri, mlflow_client, ui_command

    tracking_uri = args.tracking_uri or default_tracking_uri()
    lines = [f"metrics also written to {args.json}"] if args.json else []
    if args.no_log:
        return lines + ["metrics and plots were not logged to the run (--no-log)",
                        "next: evaluate again without --no-log to keep them in the run"]
    lines.append(f"logged to run {args.run_id} in {tracking_uri}: metrics eval/*, eval/summary.txt and eval/metrics.json; "
                 "the plots are the run's artifacts under eval/plots/")
    look = f"{ui_command(tracking_uri)}   (run {args.run_id}, Artifacts: eval/plots/)"
    parent = mlflow_client(tracking_uri).get_run(args.run_id).data.tags.get("mlflow.parentRunId")
    if not parent:
        return lines + [f"next: {look}"]
    uri_flag = f" --tracking-uri {args.tracking_uri}" if args.tracking_uri else ""
    return lines + [f"look at the plots: {look}", f"next: galaxy-da report --sweep {parent}{uri_flag}   (every trial of its sweep, side by side)"]


def run(args: argparse.Namespace) -> int:
    """``galaxy-da eval`` / ``python -m galaxy_da.eval``."""
    logging.basicConfig(format="%(levelname)s: %(message)s", stream=sys.stderr)
    metrics = evaluate_run(
        args.run_id, args.tracking_uri, args.data, args.checkpoint, log=not args.no_log, device=args.device,
        check_hashes=not args.no_verify_hashes,
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(strict_json.dumps(metrics, indent=1))
    print("\n".join(closing_lines(args)))
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m galaxy_da.eval ...`` is ``galaxy-da eval ...`` (same flags, same error handling)."""
    from galaxy_da.commands import standalone

    return standalone("python -m galaxy_da.eval", sys.modules[__name__], "evaluate a run on the target domain", argv)


if __name__ == "__main__":
    sys.exit(main())
