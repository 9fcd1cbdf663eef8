"""One trial: ``train(config, report=callback)`` in a plain process, no launcher.

Per epoch the loop trains ``steps_per_epoch`` steps on labelled source batches
(and, once warm-up is over and the objective needs them, unlabelled target
``adapt`` batches), evaluates the source ``val`` split and the target ``adapt``
images, scores the epoch with the configured label-free selection rule, writes
``last.pt`` (and ``best.pt`` on improvement), and calls
``report(record, checkpoint_dir)``. ``record`` holds namespaced metrics
(``train/loss``, ``src_val/macro_f1``, ``schedule/align_weight``, ...) and the
``epoch``. Target labels are never read: the data comes from
:meth:`ShardDataset.training_view`.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from galaxy_da.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from galaxy_da.config import TrialConfig
from galaxy_da.data.loader import BatchStream, ChannelStats
from galaxy_da.data.reader import ImageSet, ShardDataset
from galaxy_da.inference import autocast, predict, resolve_device
from galaxy_da.metrics import classification_metrics
from galaxy_da.models.registry import build_model
from galaxy_da.objective import Objective, StepKnobs
from galaxy_da.optim import build_optimizer, set_epoch_lr
from galaxy_da.schedules import schedule_value
from galaxy_da.selection import SelectionInputs, score

Report = Callable[[dict[str, Any], Path], None]


class NonFiniteLossError(FloatingPointError):
    """A loss component became NaN or Inf; the trial stops rather than carry on."""


@dataclass
class TrainResult:
    history: list[dict[str, Any]]
    best_epoch: Optional[int]
    best_score: float
    checkpoint_dir: Path
    stopped_early: bool = False
    manifest_hash: str = ""


# --------------------------------------------------------------------------- data


def _subsample(data: ImageSet, limit: Optional[int], seed: int) -> ImageSet:
    if limit is None or len(data) <= limit:
        return data
    keep = np.sort(np.random.default_rng(seed).permutation(len(data))[:limit])
    return ImageSet(data.images[keep], None if data.labels is None else data.labels[keep], data.object_ids[keep])


NORMALISATIONS: dict[str, Callable[[ImageSet, ImageSet], tuple[ChannelStats, ChannelStats]]] = {
    "per_domain": lambda src, tgt: (ChannelStats.of(src.images), ChannelStats.of(tgt.images)),
    "shared": lambda src, tgt: (ChannelStats.of(np.concatenate([src.images, tgt.images])),) * 2,
    "none": lambda src, tgt: (ChannelStats.identity(src.images.shape[1]),) * 2,
}


@dataclass
class TrialData:
    dataset: ShardDataset
    source_train: ImageSet
    source_val: ImageSet
    target_adapt: ImageSet
    source_stats: ChannelStats
    target_stats: ChannelStats

    @property
    def train_counts(self) -> list[int]:
        return np.bincount(self.source_train.labels, minlength=len(self.dataset.class_names)).tolist()


def load_trial_data(cfg: TrialConfig) -> TrialData:
    """Source train/val with labels, target adapt without; statistics from training splits only."""
    dataset = ShardDataset(cfg.data.path, check_hashes=cfg.data.verify_hashes)
    view = dataset.training_view()
    source_train = _subsample(view.source("train"), cfg.data.max_source, cfg.seed)
    source_val = _subsample(view.source("val"), cfg.data.max_source, cfg.seed + 1)
    target_adapt = _subsample(view.target("adapt"), cfg.data.max_target, cfg.seed + 2)
    source_stats, target_stats = NORMALISATIONS[cfg.data.normalization](source_train, target_adapt)
    return TrialData(dataset, source_train, source_val, target_adapt, source_stats, target_stats)


# --------------------------------------------------------------------------- loop pieces


def epoch_knobs(cfg: TrialConfig, epoch: int) -> StepKnobs:
    epochs, warmup = cfg.optim.epochs, cfg.optim.warmup_epochs
    blur = schedule_value(cfg.schedules.blur, epoch, epochs, warmup)
    return StepKnobs(
        aligning=epoch >= warmup,
        align_weight=schedule_value(cfg.schedules.align_weight, epoch, epochs, warmup),
        blur=max(cfg.align.blur_floor, blur),
        grl_strength=schedule_value(cfg.schedules.grl, epoch, epochs, warmup),
    )


def _check_finite(parts: dict[str, torch.Tensor], step: int, epoch: int) -> None:
    for name, value in parts.items():
        if not torch.isfinite(value).all():
            raise NonFiniteLossError(
                f"epoch {epoch}, step {step}: loss component '{name}' is {value.item()} "
                f"(all components: { {k: round(v.item(), 6) for k, v in parts.items()} })"
            )


def evaluate_epoch(cfg: TrialConfig, model: torch.nn.Module, data: TrialData, device: torch.device) -> dict[str, float]:
    """Source-val metrics and the label-free selection score (target labels unseen)."""
    batch = cfg.data.eval_batch_size
    source_val = predict(model, data.source_val, data.source_stats, batch, device)
    target = predict(model, data.target_adapt, data.target_stats, batch, device)
    probs = torch.softmax(torch.from_numpy(source_val.logits), dim=1).numpy()
    metrics = classification_metrics(source_val.labels, probs, data.dataset.class_names)
    record = {f"src_val/{k}": metrics[k] for k in ("acc", "balanced_acc", "macro_f1", "ece_15")}
    record[f"select/{cfg.selection.rule}"] = score(cfg.selection.rule, SelectionInputs(source_val=source_val, target=target))
    return record


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


# --------------------------------------------------------------------------- the trial


def train(
    cfg: TrialConfig,
    report: Optional[Report] = None,
    *,
    checkpoint_dir: Optional[str | Path] = None,
    resume: bool = False,
    until_epoch: Optional[int] = None,
    data: Optional[TrialData] = None,
) -> TrainResult:
    """Train one trial.

    ``checkpoint_dir`` receives ``last.pt`` every epoch and ``best.pt`` at each
    improvement of the selection score (post-warm-up epochs only: a warm-up
    model is a source-only model, not the adapted one). ``resume`` continues
    from ``last.pt`` exactly. ``until_epoch`` stops after that many epochs
    without ending the schedule (time-sliced jobs); a later ``resume`` goes on.
    """
    device = resolve_device(cfg.device)
    checkpoint_dir = Path(checkpoint_dir or tempfile.mkdtemp(prefix="galaxy-da-ckpt-"))
    data = data or load_trial_data(cfg)
    _seed_everything(cfg.seed)
    channels, height, _ = data.dataset.image_shape
    model = build_model(cfg.model, len(data.dataset.class_names), channels, height).to(device)
    objective = Objective(cfg, model.feature_dim, data.train_counts).to(device)
    scales = [p for name, p in model.named_parameters() if name.endswith("class_scales")]
    decayed = [p for p in model.parameters() if all(p is not s for s in scales)] + objective.module_parameters()
    optimizer = build_optimizer(cfg.optim, decayed, objective.weight_parameters() + scales)
    source = BatchStream(data.source_train, cfg.data.batch_size, data.source_stats, cfg.seed * 2 + 1, cfg.data.augment, device)
    target = BatchStream(data.target_adapt, cfg.data.batch_size, data.target_stats, cfg.seed * 2 + 2, False, device)
    steps = cfg.optim.steps_per_epoch or max(1, len(source) // source.batch_size)
    rule_key = f"select/{cfg.selection.rule}"

    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": None, "score": -math.inf, "stale": 0}
    start_epoch = 0
    if resume and (checkpoint_dir / LAST).is_file():
        state = load_checkpoint(checkpoint_dir / LAST)
        model.load_state_dict(state["model"])
        objective.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        source.load_state_dict(state["streams"]["source"])
        target.load_state_dict(state["streams"]["target"])
        torch.set_rng_state(state["rng"])
        history, best, start_epoch = list(state["history"]), dict(state["best"]), state["epoch"] + 1

    def snapshot(epoch: int) -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "objective": objective.state_dict(),
            "optimizer": optimizer.state_dict(),
            "streams": {"source": source.state_dict(), "target": target.state_dict()},
            "rng": torch.get_rng_state(),
            "epoch": epoch,
            "history": history,
            "best": best,
            "config": cfg.model_dump(mode="json"),
            "config_hash": cfg.hash(),
            "class_names": data.dataset.class_names,
            "image_shape": list(data.dataset.image_shape),
            "norm_stats": {"source": data.source_stats.as_dict(), "target": data.target_stats.as_dict()},
            "data_manifest_hash": data.dataset.manifest_hash,
            "data_path": cfg.data.path,
        }

    stopped_early = False
    last_epoch = min(cfg.optim.epochs, until_epoch or cfg.optim.epochs)
    for epoch in range(start_epoch, last_epoch):
        lr = set_epoch_lr(optimizer, cfg.optim, epoch)
        knobs = epoch_knobs(cfg, epoch)
        draw_target = knobs.aligning and objective.uses_target
        model.train()
        objective.train()
        sums: dict[str, float] = defaultdict(float)
        maxima: dict[str, float] = defaultdict(lambda: -math.inf)
        per_step: list[dict[str, float]] = []
        started = time.perf_counter()
        for step in range(steps):
            source_images, source_labels = source.next()
            images = source_images
            if draw_target:
                target_images, _ = target.next()
                images = torch.cat([source_images, target_images])
            with autocast(device):
                logits, features = model(images)
            n_source = source_images.shape[0]
            parts = objective(
                logits[:n_source], source_labels, features[:n_source],
                logits[n_source:] if draw_target else None,
                features[n_source:] if draw_target else None,
                knobs,
            )
            _check_finite(parts, step, epoch)
            optimizer.zero_grad(set_to_none=True)
            parts["total"].backward()
            if cfg.optim.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.optim.grad_clip)
            optimizer.step()
            objective.after_step()
            for name, value in parts.items():
                sums[f"train/loss_{name}" if name != "total" else "train/loss"] += value.item()
            diagnostics = objective.diagnostics()
            per_step.append(diagnostics)
            for name, value in diagnostics.items():
                sums[name] += value
                maxima[f"{name}_max"] = max(maxima[f"{name}_max"], value)
        elapsed = time.perf_counter() - started
        record: dict[str, Any] = {"epoch": epoch, "lr": lr, "train/step_s": elapsed, "train/images_per_s": steps * images.shape[0] / elapsed}
        record.update({k: v / steps for k, v in sums.items()})
        record.update(maxima)
        record["steps"] = per_step  # per-step diagnostics (solver convergence...), logged with the global step
        record.update({
            "schedule/align_weight": knobs.align_weight,
            "schedule/blur": knobs.blur,
            "schedule/grl": knobs.grl_strength,
            "schedule/aligning": float(knobs.aligning),
        })
        record.update(evaluate_epoch(cfg, model, data, device))
        history.append(record)

        eligible = knobs.aligning or cfg.optim.warmup_epochs == 0
        improved = eligible and record[rule_key] > best["score"]
        if improved:
            best = {"epoch": epoch, "score": record[rule_key], "stale": 0}
        elif eligible:
            best["stale"] += 1
        record["best/epoch"], record["best/score"] = best["epoch"], best["score"]
        if improved:
            save_checkpoint(snapshot(epoch), checkpoint_dir / BEST)
        save_checkpoint(snapshot(epoch), checkpoint_dir / LAST)
        if report is not None:
            report(record, checkpoint_dir)
        if cfg.selection.patience is not None and best["stale"] >= cfg.selection.patience:
            stopped_early = True
            break

    return TrainResult(history, best["epoch"], best["score"], checkpoint_dir, stopped_early, data.dataset.manifest_hash)
