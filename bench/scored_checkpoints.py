"""A rule audit read back from a sweep: every scored checkpoint of every trial, scored on target test (ORACLE).

A trial run with ``selection.audit_rules`` holds, for each scored epoch ``k``,
the metrics ``select/<rule>`` of every label-free rule at step ``k`` and the
model as the artifact ``checkpoints/scored/epoch-<k>.pt``. :func:`collect` turns
a sweep's child runs into the rows :mod:`rule_picks` reads, one per (trial,
scored epoch)::

    {"run_id", "trial" (run name), "pruned" (tag stopped_by), "stopped_by", "epoch",
     "scores": {rule: logged select/<rule>, NaN where none was logged}, "target_f1"}

``target_f1`` is the macro-F1 of that epoch's model on the labelled target TEST
split. It reads target labels, so it lives here in bench/, runs after the sweep
has chosen, and never feeds training, selection or pruning.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

from galaxy_da.checkpoint import load_checkpoint
from galaxy_da.config import validate
from galaxy_da.data.loader import ChannelStats
from galaxy_da.data.reader import ImageSet
from galaxy_da.inference import predict
from galaxy_da.models.registry import build_model
from galaxy_da.checkpoint import SCORED_DIR

ARTIFACTS = f"checkpoints/{SCORED_DIR}"
STOP_TAG = "stopped_by"


def target_macro_f1(state: dict[str, Any], test: ImageSet, device: torch.device = torch.device("cpu")) -> float:
    """ORACLE: macro-F1 on the labelled target test split of the model in a (scored) checkpoint, normalised as it trained."""
    cfg = validate(state["config"], "scored checkpoint config")
    channels, height, _ = state["image_shape"]
    model = build_model(cfg.model, len(state["class_names"]), channels, height)
    model.load_state_dict(state["model"], strict=True)
    stats = state["norm_stats"]["target"]
    return predict(model, test, ChannelStats(tuple(stats["mean"]), tuple(stats["std"])), cfg.data.eval_batch_size, device).macro_f1()


def latest_per_step(history) -> dict[int, float]:
    """``{step: value}`` of a metric's history, the newest point where a step was logged twice (a re-trained epoch)."""
    return {point.step: point.value for point in sorted(history, key=lambda point: point.timestamp)}


def trial_checkpoints(client, run, rules: Sequence[str], test: ImageSet) -> list[dict[str, Any]]:
    """The rows of one trial run, in epoch order; :class:`LookupError` when it kept no scored checkpoint."""
    run_id, tags = run.info.run_id, run.data.tags
    if not client.list_artifacts(run_id, ARTIFACTS):
        raise LookupError(f"no {ARTIFACTS}/ artifacts (a trial without selection.audit_rules, or one stopped before its first scored epoch)")
    logged = {rule: latest_per_step(client.get_metric_history(run_id, f"select/{rule}")) for rule in rules}
    rows = []
    with tempfile.TemporaryDirectory(prefix="galaxy-da-scored-") as tmp:
        for path in sorted(Path(client.download_artifacts(run_id, ARTIFACTS, tmp)).glob("epoch-*.pt")):
            state = load_checkpoint(path)
            epoch = int(state["epoch"])
            rows.append({
                "run_id": run_id, "trial": run.info.run_name or run_id[:8], "pruned": STOP_TAG in tags,
                "stopped_by": tags.get(STOP_TAG), "epoch": epoch,
                "scores": {rule: logged[rule].get(epoch, math.nan) for rule in rules},
                "target_f1": target_macro_f1(state, test),
            })
    return rows


def collect(client, parent_run_id: str, rules: Sequence[str], test: ImageSet) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every scored checkpoint of the sweep's FINISHED child runs (pruned ones included), and why any run has none."""
    from galaxy_da.sweep.leaderboard import child_runs

    experiment_id = client.get_run(parent_run_id).info.experiment_id
    rows, skipped = [], {}
    for run in child_runs(client, experiment_id, parent_run_id):
        if run.info.status != "FINISHED":
            skipped[run.info.run_id] = f"status {run.info.status}"
            continue
        try:
            rows += trial_checkpoints(client, run, rules, test)
        except LookupError as exc:
            skipped[run.info.run_id] = str(exc)
    return rows, skipped
