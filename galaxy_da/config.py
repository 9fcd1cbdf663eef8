"""One typed, validated configuration per trial.

A :class:`TrialConfig` is a nested pydantic model. Every section forbids unknown
keys, so a typo fails before any compute with the dotted path of the key at
fault (``align.topk: must be >= 1, got 0``).

Usage::

    cfg = load_config("configs/smoke.yaml", overrides=["model.backbone=resnet18"])
    cfg.hash()          # stable across processes and key order
    save_config(cfg, "out.yaml")

Search spaces live next to the defaults: :data:`SEARCH_SPACES` maps a dotted
path to a small declarative description that :mod:`galaxy_da.sweep.tuner` turns into a
Ray Tune domain. Sweep files name only the dotted paths they vary.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from galaxy_da.config_errors import ConfigError, did_you_mean, invalid_configuration
from galaxy_da.registries import ALIGNMENT_METHODS, BACKBONES, PRIOR_ESTIMATORS

__all__ = ["ConfigError", "TrialConfig", "load_config", "validate"]

ORACLE_RULE = "oracle"
LABEL_FREE_RULES = ("src_val", "entropy", "dev", "snd")
GROUP_PATTERN = re.compile(r"^[CD]([1-9][0-9]*)$")
# YAML 1.1 (PyYAML) reads these words as booleans, in files and in overrides alike.
YAML_BOOLEAN_WORDS = {True: ("on", "yes", "true"), False: ("off", "no", "false")}


def literal_values(annotation: Any) -> tuple[Any, ...]:
    """Every value a ``Literal`` in ``annotation`` allows, through ``Optional``/``Union``: ``Optional[Literal["a", "b"]] -> ("a", "b")``."""
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    return tuple(value for member in get_args(annotation) for value in literal_values(member))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    @field_validator("*", mode="before")
    @classmethod
    def _boolean_as_word(cls, value: Any, info: ValidationInfo) -> Any:
        """Give back the word YAML read as a boolean, for an option whose allowed words include it.

        ``compute.compile=off`` and ``compute: {compile: off}`` reach pydantic as
        ``False``; ``compile`` allows ``"off"``, so ``False`` becomes ``"off"``
        (``True`` becomes ``"on"``, ``"yes"`` or ``"true"``, whichever is allowed).
        """
        if not isinstance(value, bool):
            return value
        allowed = literal_values(cls.model_fields[info.field_name].annotation)
        return next((word for word in YAML_BOOLEAN_WORDS[value] if word in allowed), value)


class DataConfig(_Section):
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


class ModelConfig(_Section):
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


class ClassLossConfig(_Section):
    """Focal loss with optional class weighting on the labelled source batch."""

    gamma: float = Field(2.0, ge=0.0)
    alpha: Union[None, float, list[float], Literal["class_weights"]] = "class_weights"
    class_weights: Literal["effective_number", "balanced", "none"] = "effective_number"
    beta: float = Field(0.9999, gt=0.0, lt=1.0)


class ScheduleConfig(_Section):
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


class TopKOTConfig(_Section):
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


class AdversarialConfig(_Section):
    """DANN discriminator shape."""

    projection: Optional[int] = Field(128, ge=1)
    hidden: int = Field(256, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)


class AlignConfig(_Section):
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


class SchedulesConfig(_Section):
    align_weight: ScheduleConfig = ScheduleConfig(kind="constant", start=0.1, end=0.1)
    blur: ScheduleConfig = ScheduleConfig(kind="constant", start=0.5, end=0.5)
    grl: ScheduleConfig = ScheduleConfig(kind="sigmoid", start=0.0, end=1.0)


class OptimConfig(_Section):
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


class SelectionConfig(_Section):
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


class ResourcesConfig(_Section):
    """How many worker processes (one device each) a trial spans.

    With W workers each draws ``data.batch_size`` of every global batch, so the
    global batch is ``W * data.batch_size`` and one epoch is one pass over
    source train: W changes the run and is part of the config hash. W > 1 runs
    through Ray Train (``galaxy_da.sweep.ddp``); ``galaxy-da train`` runs W = 1.
    """

    workers_per_trial: int = Field(1, ge=1, le=64)


class ComputeConfig(_Section):
    """Numerics and speed of the training step; see :mod:`galaxy_da.accel`."""

    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    channels_last: Optional[bool] = None  # None: where it helps the backbone (cnn, resnet18)
    compile: Literal["off", "inductor", "aot_eager"] = "off"  # torch.compile of the model, eager if it fails


class TrackingConfig(_Section):
    # default: $MLFLOW_TRACKING_URI or sqlite:///mlflow/mlflow.db; the commands' --tracking-uri sets it
    tracking_uri: Optional[str] = Field(None, json_schema_extra={"flag": "--tracking-uri"})
    experiment: str = "galaxy-da"
    run_name: Optional[str] = None


class TrialConfig(_Section):
    """Everything one trial needs. Sections mirror the package layout."""

    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: ClassLossConfig = ClassLossConfig()
    align: AlignConfig = AlignConfig()
    schedules: SchedulesConfig = SchedulesConfig()
    optim: OptimConfig = OptimConfig()
    selection: SelectionConfig = SelectionConfig()
    resources: ResourcesConfig = ResourcesConfig()
    compute: ComputeConfig = ComputeConfig()
    tracking: TrackingConfig = TrackingConfig()

    def hash(self) -> str:
        """sha256 (first 16 hex digits) of the canonical JSON of what the trial computes.

        Key order never matters, and the ``tracking`` section (where the run is
        logged, what it is called) is left out: it does not change the trial.
        """
        return config_hash(self.model_dump(mode="json", exclude={"tracking"}))

    def hash_without_seed(self) -> str:
        """Groups runs that differ only in their seed."""
        return config_hash(self.model_dump(mode="json", exclude={"tracking", "seed"}))

    def flat(self) -> dict[str, Any]:
        """``{"align.topk": 5, ...}``: the dotted view used for MLflow params and sweeps."""
        return flatten(self.model_dump(mode="json"))


# --------------------------------------------------------------------------- helpers


def config_hash(payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def validate(tree: dict[str, Any], source: str = "config", overrides: Optional[dict[str, str]] = None) -> TrialConfig:
    """Build a :class:`TrialConfig`, turning pydantic errors into one :class:`ConfigError`.

    ``overrides`` maps each dotted key set by an override to how the user wrote
    it; a problem with such a key is blamed on the override, any other on ``source``.
    """
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(tree).__name__}")
    try:
        return TrialConfig.model_validate(tree)
    except ValidationError as exc:
        raise invalid_configuration(exc, TrialConfig, source, overrides or {}) from None


def parse_override(text: str) -> tuple[str, Any]:
    """``"align.topk=8"`` -> ``("align.topk", 8)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected dotted.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    return key, yaml.safe_load(raw) if raw.strip() else None


Overrides = Union[dict[str, Any], list[str], None]


def override_items(overrides: Overrides) -> list[tuple[str, Any, str]]:
    """``(dotted key, value, how it was written)`` for a dict or a list of ``key=value`` strings."""
    if not overrides:
        return []
    if isinstance(overrides, dict):
        return [(key, value, f"{key}={json.dumps(value)}") for key, value in overrides.items()]
    return [(*parse_override(text), text) for text in overrides]


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``tree[a][b][c] = value`` for ``key = "a.b.c"``, checking each section exists."""
    node = tree
    parts = key.split(".")
    known: Any = TrialConfig().model_dump()
    for depth, part in enumerate(parts[:-1]):
        sections = [name for name, value in known.items() if isinstance(value, dict)] if isinstance(known, dict) else []
        known = known.get(part) if isinstance(known, dict) else None
        if not isinstance(known, dict):
            section = ".".join(parts[:depth])
            hint = did_you_mean(part, sections, f"{section}." if section else "")
            raise ConfigError(f"override {key}: {'.'.join(parts[: depth + 1])}: not a config section{hint}")
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(parts[: depth + 1])}: expected a mapping, got {node!r}")
    node[parts[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: Overrides) -> dict[str, Any]:
    """Return a copy of ``tree`` with dotted overrides (a dict or ``key=value`` strings) applied."""
    tree = json.loads(json.dumps(tree))  # deep copy, JSON-safe
    for key, value, _ in override_items(overrides):
        set_dotted(tree, key, value)
    return tree


def load_config(path: str | Path | None = None, overrides: Overrides = None) -> TrialConfig:
    """Load YAML (or defaults when ``path`` is None), apply dotted overrides, validate.

    An error names its origin: ``override align.topkk=3: align.topkk: unknown key;
    did you mean align.topk?``, or the file for a key the file set.
    """
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        source = str(path)
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    origins = {key: f"override {text}" for key, _, text in override_items(overrides)}
    return validate(apply_overrides(tree, overrides), source, origins)


def config_to_yaml(cfg: TrialConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def save_config(cfg: TrialConfig, path: str | Path) -> None:
    Path(path).write_text(config_to_yaml(cfg))
