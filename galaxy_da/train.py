"""One trial: ``train(config, report=callback)`` in a plain process, no launcher.

Per epoch the loop trains ``steps_per_epoch`` steps on labelled source batches
(and, once warm-up is over and the objective needs them, unlabelled target
``adapt`` batches), writes ``last.pt`` and calls ``report(record, checkpoint_dir)``.
On *scored* epochs (:func:`is_scored_epoch`: post-warm-up epochs, every
``selection.eval_every``-th, and the last) it first predicts the splits the
label-free selection rule reads (:data:`~galaxy_da.selection.RULE_READS`), scores
the epoch, and writes ``best.pt`` on improvement. ``record`` holds namespaced
metrics (``train/loss``, ``src_val/macro_f1``, ``schedule/align_weight``, ...),
the ``epoch``, and ``select/<rule>`` on scored epochs only.

With ``selection.audit_rules`` a scored epoch is also scored by every other
label-free rule (``select/<rule>`` for all of :data:`~galaxy_da.selection.SELECTION_RULES`)
and its model is kept as ``scored/epoch-<k>.pt`` (:func:`scored_checkpoint`), so a
study can evaluate each rule's own choice afterwards; ``best.pt``, early stopping
and a sweep's metric stay on ``selection.rule``.

The step loop never waits on the host: the training splits live on the device
(:class:`~galaxy_da.data.loader.BatchStream`), and the losses and diagnostics of
every step stay there until the epoch's one read (:mod:`galaxy_da.step_log`).
``compute.*`` picks the autocast precision, memory layout and ``torch.compile``
(:mod:`galaxy_da.accel`). Inside a ``torch.distributed`` process group of
``resources.workers_per_trial`` workers the same loop trains data-parallel
(:mod:`galaxy_da.distributed`): each worker takes its slice of every global
batch, the lead worker (rank 0) evaluates and writes the checkpoints.

With ``align.label_shift`` each aligning epoch starts by re-estimating the
target class priors from the current model's predictions (no target label) and
weighing the source side of every alignment loss by the class ratios
(:mod:`galaxy_da.label_shift.refresh`); the record carries
``label_shift/prior/<class>`` and ``label_shift/weight/<class>``.

Callbacks cannot change the trial: ``report`` runs with the torch (CPU and CUDA)
and numpy global random states saved and restored, so an analysis hook that
builds a model or samples does not shift the trainer's random stream. Target
labels are never read: the data comes from :meth:`ShardDataset.training_view`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

from galaxy_da.accel import autocast, forward_of, memory_format
from galaxy_da.checkpoint import BEST, LAST, SCORED_DIR, load_checkpoint, save_checkpoint
from galaxy_da.config import ConfigError, TrialConfig
from galaxy_da.data.loader import BatchStream
from galaxy_da.distributed import World, convert_batchnorm
from galaxy_da.inference import predict, resolve_device
from galaxy_da.label_shift.refresh import estimate_target_priors, prior_record
from galaxy_da.metrics import classification_metrics
from galaxy_da.models.registry import build_model
from galaxy_da.objective import Objective, StepKnobs
from galaxy_da.optim import build_optimizer, set_epoch_lr
from galaxy_da.schedules import schedule_value
from galaxy_da.selection import SELECTION_RULES, SelectionInputs, score, splits_read
from galaxy_da.step import TrainingStep
from galaxy_da.step_log import StepLog
from galaxy_da.trial_data import TrialData, load_trial_data

Report = Callable[[dict[str, Any], Path], None]


def scored_checkpoint(epoch: int) -> str:
    """``scored/epoch-<k>.pt``: where the model of scored epoch ``k`` (0-based) is kept, relative to the checkpoint folder."""
    return f"{SCORED_DIR}/epoch-{epoch:03d}.pt"


@dataclass
class TrainResult:
    history: list[dict[str, Any]]
    best_epoch: Optional[int]
    best_score: float
    checkpoint_dir: Path
    stopped_early: bool = False
    manifest_hash: str = ""
    lineage: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------- loop pieces


def epoch_knobs(cfg: TrialConfig, epoch: int) -> StepKnobs:
    """The epoch's knobs: ``align.weight x schedules.align_weight``, ``max(blur_floor, align.blur x schedules.blur)``, GRL strength."""
    epochs, warmup = cfg.optim.epochs, cfg.optim.warmup_epochs
    blur = cfg.align.blur * schedule_value(cfg.schedules.blur, epoch, epochs, warmup)
    return StepKnobs(
        aligning=epoch >= warmup,
        align_weight=cfg.align.weight * schedule_value(cfg.schedules.align_weight, epoch, epochs, warmup),
        blur=max(cfg.align.blur_floor, blur),
        grl_strength=schedule_value(cfg.schedules.grl, epoch, epochs, warmup),
    )


def is_scored_epoch(cfg: TrialConfig, epoch: int) -> bool:
    """Whether ``epoch`` (0-based) is evaluated and may be selected.

    Never inside warm-up (a warm-up model is a source-only model, not the adapted
    one, and a sweep must not judge alignment before it has run); then every
    ``selection.eval_every``-th epoch counted from the first post-warm-up one, and
    always the last epoch.
    """
    warmup, epochs = cfg.optim.warmup_epochs, cfg.optim.epochs
    if epoch < warmup:
        return False
    return (epoch - warmup + 1) % cfg.selection.eval_every == 0 or epoch == epochs - 1


def scored_rules(cfg: TrialConfig) -> tuple[str, ...]:
    """The rules a scored epoch is scored by: ``selection.rule``, and every label-free rule with ``selection.audit_rules``."""
    return tuple(SELECTION_RULES) if cfg.selection.audit_rules else (cfg.selection.rule,)


def evaluate_epoch(
    cfg: TrialConfig, model: torch.nn.Module, data: TrialData, device: torch.device, layout: torch.memory_format = torch.contiguous_format
) -> dict[str, float]:
    """``select/<rule>`` for each of :func:`scored_rules`, and source-val metrics when one of them reads source val.

    Only the splits those rules read are predicted, each once (target labels are never seen).
    """
    rules = scored_rules(cfg)
    batch, reads = cfg.data.eval_batch_size, splits_read(rules)
    run = functools.partial(predict, batch_size=batch, device=device, precision=cfg.compute.precision, memory_format=layout)
    source_val = run(model, data.source_val, data.source_stats) if "source_val" in reads else None
    target = run(model, data.target_adapt, data.target_stats) if "target" in reads else None
    record = {}
    if source_val is not None:
        probs = torch.softmax(torch.from_numpy(source_val.logits), dim=1).numpy()
        metrics = classification_metrics(source_val.labels, probs, data.view.class_names)
        record = {f"src_val/{k}": metrics[k] for k in ("acc", "balanced_acc", "macro_f1", "ece_15")}
    inputs = SelectionInputs(source_val=source_val, target=target)
    return record | {f"select/{rule}": score(rule, inputs) for rule in rules}


@contextlib.contextmanager
def isolated_rng(device: torch.device) -> Iterator[None]:
    """Run a callback without touching the trainer's random streams (torch CPU/CUDA, numpy)."""
    numpy_state = np.random.get_state()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield
    np.random.set_state(numpy_state)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


# --------------------------------------------------------------------------- the trial


class Trainer:
    """One trial, one epoch at a time: :meth:`epochs` yields each epoch's record.

    ``checkpoint_dir`` receives ``last.pt`` every epoch and ``best.pt`` at each
    improvement of the selection score (scored epochs only, see
    :func:`is_scored_epoch`). ``resume`` continues from ``last.pt`` exactly.
    Driving the generator from outside (a Ray Tune class trainable calls
    ``next`` once per step) leaves the caller in charge between epochs.
    """

    def __init__(
        self,
        cfg: TrialConfig,
        *,
        checkpoint_dir: Optional[str | Path] = None,
        resume: bool = False,
        data: Optional[TrialData] = None,
        device: Optional[torch.device] = None,
    ) -> None:
        self.cfg = cfg
        self.device = device = device or resolve_device(cfg.device)
        self.world = world = World.current()  # data-parallel workers of this trial (1 outside a process group)
        if world.size != cfg.resources.workers_per_trial:
            raise ConfigError(
                f"resources.workers_per_trial is {cfg.resources.workers_per_trial} but this trial runs on {world.size} worker(s): "
                "multi-worker trials run in sweeps (Ray Train), one process runs workers_per_trial=1"
            )
        if cfg.selection.audit_rules and world.size > 1:
            raise ConfigError("selection.audit_rules: a multi-worker trial does not hand its scored/ checkpoints back; "
                              "audit the rules with resources.workers_per_trial=1")
        self.checkpoint_dir = Path(checkpoint_dir or tempfile.mkdtemp(prefix="galaxy-da-ckpt-"))
        self.data = data = data or load_trial_data(cfg)
        _seed_everything(cfg.seed)
        channels, height, _ = data.view.image_shape
        self.layout = layout = memory_format(cfg.model.backbone, cfg.compute.channels_last)
        model = build_model(cfg.model, len(data.view.class_names), channels, height).to(device)
        self.model = convert_batchnorm(model, world).to(memory_format=layout)
        self.objective = Objective(cfg, self.model.feature_dim, data.train_counts).to(device)
        scales = [p for name, p in self.model.named_parameters() if name.endswith("class_scales")]
        decayed = [p for p in self.model.parameters() if all(p is not s for s in scales)] + self.objective.module_parameters()
        self.optimizer = build_optimizer(cfg.optim, decayed, self.objective.weight_parameters() + scales)
        precision = functools.partial(autocast, device, cfg.compute.precision)
        self.step = world.parallel(TrainingStep(self.model, self.objective, world, forward_of(self.model, cfg.compute.compile), precision))
        shard, batch = (world.rank, world.size), cfg.data.batch_size
        self.source = BatchStream(data.source_train, batch, data.source_stats, cfg.seed * 2 + 1, cfg.data.augment, device, shard, layout)
        self.target = BatchStream(data.target_adapt, batch, data.target_stats, cfg.seed * 2 + 2, False, device, shard, layout)
        self.steps = cfg.optim.steps_per_epoch or max(1, len(self.source) // self.source.global_batch)
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"epoch": None, "score": -math.inf, "stale": 0}
        self.next_epoch = 0
        self.stopped_early = False
        self.lineage: list[dict[str, Any]] = []  # population-based training: the copies this state descends from
        self.restored_config: Optional[dict[str, Any]] = None  # the config of the checkpoint resumed from
        if resume and (self.checkpoint_dir / LAST).is_file():
            self._restore(load_checkpoint(self.checkpoint_dir / LAST))

    @property
    def finished(self) -> bool:
        """Every epoch trained, or early-stopped by ``selection.patience``."""
        return self.stopped_early or self.next_epoch >= self.cfg.optim.epochs

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.source.load_state_dict(state["streams"]["source"])
        self.target.load_state_dict(state["streams"]["target"])
        torch.set_rng_state(state["rng"])
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.history, self.best, self.next_epoch = list(state["history"]), dict(state["best"]), state["epoch"] + 1
        self.stopped_early = bool(state.get("stopped_early", False))
        self.lineage, self.restored_config = list(state.get("lineage", [])), state["config"]

    def model_state(self, epoch: int) -> dict[str, Any]:
        """The model after ``epoch`` and what rebuilds and evaluates it without the config file (a scored checkpoint)."""
        data = self.data
        return {
            "model": self.model.state_dict(),
            "epoch": epoch,
            "config": self.cfg.model_dump(mode="json"),
            "config_hash": self.cfg.hash(),
            "class_names": data.view.class_names,
            "image_shape": list(data.view.image_shape),
            "norm_stats": {"source": data.source_stats.as_dict(), "target": data.target_stats.as_dict()},
            "data_manifest_hash": data.view.manifest_hash,
            "data_path": self.cfg.data.path,
        }

    def snapshot(self, epoch: int) -> dict[str, Any]:
        """Everything needed to resume exactly, and to rebuild the model without the config file."""
        device = self.device
        return {
            **self.model_state(epoch),
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "streams": {"source": self.source.state_dict(), "target": self.target.state_dict()},
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "stopped_early": self.stopped_early,
            "history": self.history,
            "lineage": self.lineage,
            "best": self.best,
        }

    def result(self) -> TrainResult:
        return TrainResult(self.history, self.best["epoch"], self.best["score"], self.checkpoint_dir, self.stopped_early,
                           self.data.view.manifest_hash, self.lineage)

    def epochs(self, until_epoch: Optional[int] = None) -> Iterator[dict[str, Any]]:
        """Train epoch after epoch (up to ``until_epoch`` epochs in all); yield each epoch's record.

        ``last.pt`` (and ``best.pt`` on improvement) is written before the record is
        yielded, and the caller's code between two epochs runs under
        :func:`isolated_rng`.
        """
        last_epoch = min(self.cfg.optim.epochs, until_epoch or self.cfg.optim.epochs)
        while not self.finished and self.next_epoch < last_epoch:
            record = self._run_epoch(self.next_epoch)
            with isolated_rng(self.device):  # whatever the caller does with the record cannot shift training
                yield record

    def _train_steps(self, epoch: int, knobs: StepKnobs) -> dict[str, Any]:
        """``steps`` optimiser steps; nothing in the loop reads a value back from the device (see :mod:`galaxy_da.step_log`)."""
        optimizer, cfg = self.optimizer, self.cfg
        draw_target = knobs.aligning and self.objective.uses_target
        self.step.train()
        log = StepLog(self.steps, self.device)
        sources = self.source.epoch(self.steps)
        targets = self.target.epoch(self.steps) if draw_target else None
        started = time.perf_counter()
        for step in range(self.steps):
            source_images, source_labels = next(sources)
            parts = self.step(source_images, source_labels, next(targets)[0] if targets else None, knobs)
            optimizer.zero_grad(set_to_none=True)
            parts["total"].backward()
            if cfg.optim.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.optim.grad_clip)
            optimizer.step()
            self.objective.after_step()
            log.record(step, parts, self.objective.diagnostics())
        record = log.read(epoch, self.world)  # the epoch's one wait for the device
        elapsed = time.perf_counter() - started
        images = self.steps * self.source.global_batch * (2 if draw_target else 1)
        return {"train/step_s": elapsed, "train/images_per_s": images / elapsed, **record}

    def _refresh_class_ratios(self) -> dict[str, float]:
        """Re-estimate the target priors with the current model (lead worker, shared) and set the objective's class ratios."""
        data = self.data
        estimate = estimate_target_priors(self.cfg, self.model, data, self.device, self.layout) if self.world.lead else None
        previous = self.objective.class_ratios.cpu().numpy()
        ratios, record = prior_record(self.world.share(estimate), data.train_counts, data.view.class_names, previous, self.cfg.align.ratio_momentum)
        self.objective.set_class_ratios(ratios)
        return record

    def _run_epoch(self, epoch: int) -> dict[str, Any]:
        cfg, rule_key = self.cfg, f"select/{self.cfg.selection.rule}"
        lr = set_epoch_lr(self.optimizer, cfg.optim, epoch)
        knobs = epoch_knobs(cfg, epoch)
        priors = self._refresh_class_ratios() if knobs.aligning and self.objective.weighs_classes else {}
        record: dict[str, Any] = {"epoch": epoch, "lr": lr, **priors, **self._train_steps(epoch, knobs)}
        record.update({
            "schedule/align_weight": knobs.align_weight,
            "schedule/blur": knobs.blur,
            "schedule/grl": knobs.grl_strength,
            "schedule/topk": float(cfg.align.topk),
            "schedule/aligning": float(knobs.aligning),
        })
        improved, scored = False, is_scored_epoch(cfg, epoch)
        if scored:  # the lead worker evaluates; every worker takes its score
            scores = evaluate_epoch(cfg, self.model, self.data, self.device, self.layout) if self.world.lead else None
            record.update(self.world.share(scores))
            improved = record[rule_key] > self.best["score"]
            stale = 0 if improved else self.best["stale"] + 1
            self.best = {"epoch": epoch, "score": record[rule_key], "stale": 0} if improved else {**self.best, "stale": stale}
            self.stopped_early = cfg.selection.patience is not None and self.best["stale"] >= cfg.selection.patience
        record["best/epoch"], record["best/score"] = self.best["epoch"], self.best["score"]
        self.history.append(record)
        self.next_epoch = epoch + 1
        if self.world.lead:
            if scored and cfg.selection.audit_rules:
                save_checkpoint(self.model_state(epoch), self.checkpoint_dir / scored_checkpoint(epoch))
            if improved:
                save_checkpoint(self.snapshot(epoch), self.checkpoint_dir / BEST)
            save_checkpoint(self.snapshot(epoch), self.checkpoint_dir / LAST)
        return record


def train(
    cfg: TrialConfig,
    report: Optional[Report] = None,
    *,
    checkpoint_dir: Optional[str | Path] = None,
    resume: bool = False,
    until_epoch: Optional[int] = None,
    data: Optional[TrialData] = None,
) -> TrainResult:
    """Train one trial in a plain loop, calling ``report(record, checkpoint_dir)`` after each epoch.

    ``until_epoch`` stops after that many epochs without ending the schedule
    (time-sliced jobs); a later ``resume`` goes on. See :class:`Trainer`.
    """
    trainer = Trainer(cfg, checkpoint_dir=checkpoint_dir, resume=resume, data=data)
    for record in trainer.epochs(until_epoch):
        if report is not None:
            report(record, trainer.checkpoint_dir)
    return trainer.result()
