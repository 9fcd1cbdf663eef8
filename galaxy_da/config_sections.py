"""The sections of a trial config, one pydantic model each, with their defaults and bounds.

``data``, ``model``, ``loss``, ``align`` (with ``align.ot`` and ``align.adversarial``),
``schedules`` (each a :class:`ScheduleConfig`), ``optim``, ``selection``,
``resources``, ``compute`` and ``tracking``; :class:`galaxy_da.config_trial.TrialConfig`
holds them. Names that choose from a registry (backbones, alignment methods,
schedules, prior estimators, selection rules) are checked against it.
"""

from __future__ import annotations

import re
from typing import Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from galaxy_da.config_section import Section
from galaxy_da.registries import ALIGNMENT_METHODS, BACKBONES, PRIOR_ESTIMATORS

ORACLE_RULE = "oracle"
LABEL_FREE_RULES = ("src_val", "entropy", "dev", "snd")
GROUP_PATTERN = re.compile(r"^[CD]([1-9][0-9]*)$")


class DataConfig(Section):
    """Where the shards are and how batches are drawn from them."""

    path: str = "data/synth"
    target: str = Field("sdss", min_length=1)  # which of the dataset's target surveys to adapt to (manifest ``targets``: sdss, desi)
    batch_size: int = Field(64, ge=2)
    eval_batch_size: int = Field(256, ge=1)
    normalization: Literal["per_domain", "shared", "none"] = "per_domain"
    augment: bool = True  # 8-fold dihedral augmentation of source training images
    verify_hashes: bool = True  # check each shard's sha256 against the manifest as it is read
    max_source: Optional[int] = Field(None, ge=1)  # subsample for smoke runs
    max_target: Optional[int] = Field(None, ge=1)


class ModelConfig(Section):
    """Backbone choice and its knobs. ``group`` is only read by ``steerable``."""

    backbone: str = "cnn"
    group: str = "C8"
    width: int = Field(16, ge=1)
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    trainable_stages: int = Field(4, ge=0, le=4)  # resnet18: stages (layer1..4) that train
    pretrained_path: Optional[str] = None  # torchvision-format resnet18 state_dict
    class_scales: bool = False  # the reference's trainable per-class logit scales

    @field_validator("group")
    @classmethod
    def _group(cls, value: str) -> str:
        if not GROUP_PATTERN.match(value):
            raise ValueError(f"must be C<N> (rotations) or D<N> (rotations and flips), N >= 1; got {value!r}")
        return value

    @field_validator("backbone")
    @classmethod
    def _backbone(cls, value: str) -> str:
        if value not in BACKBONES:
            raise ValueError(f"unknown backbone {value!r}; choose from {sorted(BACKBONES)}")
        return value


class ClassLossConfig(Section):
    """Focal loss with optional class weighting on the labelled source batch."""

    gamma: float = Field(2.0, ge=0.0)
    alpha: Union[None, float, list[float], Literal["class_weights"]] = "class_weights"
    class_weights: Literal["effective_number", "balanced", "none"] = "effective_number"
    beta: float = Field(0.9999, gt=0.0, lt=1.0)


class ScheduleConfig(Section):
    """A scalar that changes over epochs; see :mod:`galaxy_da.schedules`.

    ``kind`` names a schedule in the registry. Progress runs from 0 at the end of
    warm-up to 1 at the last epoch; ``start`` and ``end`` are the values there.
    """

    kind: str = "constant"
    start: float = 1.0
    end: float = 1.0
    rate: float = Field(0.95, gt=0.0)  # exponential: start * rate**(epoch - warmup)
    step_every: int = Field(10, ge=1)  # step: epochs between drops
    step_factor: float = Field(0.5, gt=0.0)
    power: float = Field(2.0, gt=0.0)  # polynomial
    sharpness: float = Field(10.0, gt=0.0)  # sigmoid: 1/temperature of the ramp
    floor: Optional[float] = None

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        from galaxy_da.schedules import SCHEDULES

        if value not in SCHEDULES:
            raise ValueError(f"unknown schedule {value!r}; choose from {sorted(SCHEDULES)}")
        return value


class TopKOTConfig(Section):
    """OT top-k soft matching: ``cost_weight*OT + match_weight*MSE + topk_weight*TopK``.

    ``weight`` adds it on top of ``align.method`` (the reference's recipe); it is
    also usable alone as ``align.method: topk_ot``. ``k`` is ``align.topk``.
    """

    weight: float = Field(0.0, ge=0.0)  # 0 switches the add-on off
    epsilon: float = Field(0.05, gt=0.0)
    epsilon_mode: Literal["relative", "absolute"] = "relative"  # relative: x median pairwise cost
    max_iter: int = Field(1000, ge=1)
    tol: float = Field(1e-9, gt=0.0)
    cost_weight: float = Field(0.25, ge=0.0)
    match_weight: float = Field(0.5, ge=0.0)
    topk_weight: float = Field(0.05, ge=0.0)


class AdversarialConfig(Section):
    """DANN discriminator shape."""

    projection: Optional[int] = Field(128, ge=1)
    hidden: int = Field(256, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)


class AlignConfig(Section):
    """Feature alignment between the source and target batches."""

    method: str = "none"
    weighting: Literal["fixed", "trainable"] = "fixed"
    normalize_features: bool = True
    weight: float = Field(1.0, ge=0.0)  # scales the alignment-weight schedule (schedules.align_weight)
    blur: float = Field(1.0, gt=0.0)  # scales the blur schedule (schedules.blur): kernel width / OT blur
    blur_floor: float = Field(0.01, gt=0.0)
    entropy_weight: float = Field(0.0, ge=0.0)
    topk: int = Field(5, ge=1)
    ot: TopKOTConfig = TopKOTConfig()
    adversarial: AdversarialConfig = AdversarialConfig()
    eta_init: tuple[float, float] = (0.1, 1.0)  # trainable weights: initial (eta_cls, eta_align)
    # none, or a target-prior estimator (registries.PRIOR_ESTIMATORS) whose class ratios q/p weight the source side
    label_shift: str = "none"
    # the ratios applied are a moving average, w <- m w + (1 - m) q^/p from w = 1 (IWDAN's reference code: m = 0.5);
    # 0 applies each epoch's estimate alone (galaxy_da.label_shift.refresh)
    ratio_momentum: float = Field(0.5, ge=0.0, lt=1.0)
    # unbalanced Sinkhorn (GeomLoss reach, rho = reach^2): a property of the OT problem, so its own key (see galaxy_da.label_shift)
    reach: Optional[float] = Field(None, gt=0.0)

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if value not in ALIGNMENT_METHODS:
            raise ValueError(f"unknown alignment method {value!r}; choose from {sorted(ALIGNMENT_METHODS)}")
        return value

    @field_validator("label_shift")
    @classmethod
    def _label_shift(cls, value: str) -> str:
        if value != "none" and value not in PRIOR_ESTIMATORS:
            raise ValueError(f"unknown label-shift estimator {value!r}; choose from {['none', *PRIOR_ESTIMATORS]}")
        return value

    @model_validator(mode="after")
    def _reach_is_sinkhorns(self) -> "AlignConfig":
        if self.reach is not None and self.method != "sinkhorn":
            raise ValueError(f"reach (unbalanced OT) applies to method 'sinkhorn' only; method is {self.method!r}")
        return self


class SchedulesConfig(Section):
    align_weight: ScheduleConfig = ScheduleConfig(kind="constant", start=0.1, end=0.1)
    blur: ScheduleConfig = ScheduleConfig(kind="constant", start=0.5, end=0.5)
    grl: ScheduleConfig = ScheduleConfig(kind="sigmoid", start=0.0, end=1.0)


class OptimConfig(Section):
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-2, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    lr_schedule: Literal["cosine", "step", "exponential", "constant"] = "cosine"
    min_lr: float = Field(1e-5, ge=0.0)
    epochs: int = Field(20, ge=1)
    warmup_epochs: int = Field(0, ge=0)
    grad_clip: Optional[float] = Field(10.0, gt=0.0)
    steps_per_epoch: Optional[int] = Field(None, ge=1)  # default: one pass over source train

    @model_validator(mode="after")
    def _warmup_fits(self) -> "OptimConfig":
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be < epochs ({self.epochs})")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must be <= lr ({self.lr})")
        return self


class SelectionConfig(Section):
    """Label-free checkpoint selection and early stopping.

    ``rule`` alone picks ``best.pt``, drives early stopping and is a sweep's metric.
    ``audit_rules`` is for studies of the rules themselves: at each scored epoch the
    trainer also scores *every* label-free rule (``select/<rule>`` for each of
    :data:`LABEL_FREE_RULES`; none reads a target label) and keeps that epoch's model
    as ``scored/epoch-<k>.pt`` in the checkpoint folder, so each rule's own choice of
    epoch and trial can be evaluated after the sweep. It changes no weight and no
    choice; it costs a forward pass over source val and target adapt and DEV's
    ~20 small logistic fits (about 1 s) per scored epoch.
    """

    rule: str = "src_val"
    patience: Optional[int] = Field(None, ge=1)  # scored epochs without improvement before stopping
    eval_every: int = Field(1, ge=1)  # score every k-th post-warm-up epoch (and the last)
    audit_rules: bool = False  # also score every label-free rule and keep each scored epoch's model

    @field_validator("rule")
    @classmethod
    def _rule(cls, value: str) -> str:
        if value == ORACLE_RULE:
            raise ValueError(
                "'oracle' reads target test labels; it is for analysis only and can never select "
                f"checkpoints or sweep trials. Choose from {list(LABEL_FREE_RULES)}"
            )
        if value not in LABEL_FREE_RULES:
            raise ValueError(f"unknown selection rule {value!r}; choose from {list(LABEL_FREE_RULES)}")
        return value


class ResourcesConfig(Section):
    """How many worker processes (one device each) a trial spans.

    With W workers each draws ``data.batch_size`` of every global batch, so the
    global batch is ``W * data.batch_size`` and one epoch is one pass over
    source train: W changes the run and is part of the config hash. W > 1 runs
    through Ray Train (``galaxy_da.sweep.ddp``); ``galaxy-da train`` runs W = 1.
    """

    workers_per_trial: int = Field(1, ge=1, le=64)


class ComputeConfig(Section):
    """Numerics and speed of the training step; see :mod:`galaxy_da.accel`."""

    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    channels_last: Optional[bool] = None  # None: where it helps the backbone (cnn, resnet18)
    compile: Literal["off", "inductor", "aot_eager"] = "off"  # torch.compile of the model, eager if it fails


class TrackingConfig(Section):
    # default: $MLFLOW_TRACKING_URI or sqlite:///mlflow/mlflow.db; the commands' --tracking-uri sets it
    tracking_uri: Optional[str] = Field(None, json_schema_extra={"flag": "--tracking-uri"})
    experiment: str = "galaxy-da"
    run_name: Optional[str] = None

