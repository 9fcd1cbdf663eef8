"""How a sweep runs: its settings, its result, and the resources of one trial.

No Ray import: the sweep CLI builds settings and checks them before Ray starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from galaxy_da.config import ConfigError, TrialConfig
from galaxy_da.sweep.space import Space


# CPU of a multi-worker trial's actor, which only drives its Ray Train run and logs to MLflow
# (a Tune trial's placement group cannot be empty); the workers ask for their own resources.
DRIVER_CPU = 0.01

# GPUs per one-worker trial when the sweep uses GPUs; backbones not listed take one whole GPU.
# Four small CNN trials share a GPU (they are bound by step overhead, not FLOPs).
GPU_SHARE: dict[str, float] = {"cnn": 0.25, "resnet18": 1.0, "steerable": 1.0}


@dataclass
class SweepSettings:
    """How a sweep runs: its search space, budget, pruning, resources and where things go."""

    name: str
    space: Space
    num_samples: int = 8
    max_concurrent: int = 2
    searcher: str = "optuna"
    seed: int = 0
    scheduler: str = "asha"  # asha | pbt | pb2 (galaxy_da.sweep.schedulers)
    grace_period: Optional[int] = None  # ASHA's first rung in epochs; None: the first epoch after warm-up
    reduction_factor: int = 2
    perturbation_interval: int = 2  # PBT/PB2: epochs between exploit/explore steps
    quantile_fraction: float = 0.25  # PBT/PB2: the bottom fraction copies the top fraction
    resample_probability: float = 0.25  # PBT: chance that an explored knob is drawn afresh
    synchronous: bool = False  # PBT/PB2: perturb only once every member has reached the same epoch
    mutations: Optional[Space] = None  # PBT/PB2: the knobs they may change (default: the whole space)
    max_failures: int = 1
    cpus_per_trial: float = 1.0
    gpu_share: dict[str, float] = field(default_factory=lambda: dict(GPU_SHARE))
    use_gpu: Optional[bool] = None  # None: when the cluster has or can add GPU nodes (galaxy_da.sweep.gpus)
    autoscaler_config: Optional[str] = None  # the autoscaler YAML to read node types from (None: ~/ray_bootstrap_config.yaml)
    storage_path: str = "ray_results"
    tracking_uri: Optional[str] = None  # None: the base config's, else the default store
    optuna_storage: Optional[str] = None  # e.g. sqlite:///ray_results/optuna.db, for a persistent study
    address: Optional[str] = None  # None: $RAY_ADDRESS, a live cluster on this node, else a fresh local one
    num_cpus: Optional[int] = None  # local Ray only
    smoke: bool = False  # a smoke test: running it again replaces its previous run instead of refusing

    def __post_init__(self) -> None:
        for key in ("num_samples", "max_concurrent"):
            if getattr(self, key) < 1:
                raise ConfigError(f"sweep setting {key} (--{key.replace('_', '-')}): must be >= 1, got {getattr(self, key)}")

    @property
    def storage_uri(self) -> str:
        """``storage_path`` as Ray and pyarrow need it: a URI, or an absolute local path."""
        return self.storage_path if "://" in self.storage_path else str(Path(self.storage_path).resolve())

    @property
    def experiment_path(self) -> str:
        return f"{self.storage_uri.rstrip('/')}/{self.name}"

    @property
    def parent_run_name(self) -> str:
        """The sweep's MLflow parent run is named after the sweep."""
        return f"sweep-{self.name}"


@dataclass
class SweepResult:
    parent_run_id: str
    experiment_path: str
    complete: bool
    leaderboard: list[dict[str, Any]]
    tracking_uri: str


# --------------------------------------------------------------------------- trials


def resources_for(cfg: TrialConfig, settings: SweepSettings, has_gpu: bool) -> dict[str, float]:
    """Ray resources of a trial's actor.

    One worker: ``cpus_per_trial`` CPUs and, with GPUs, the backbone's share
    (:data:`GPU_SHARE`). W > 1 workers (``resources.workers_per_trial``): the actor
    only drives the Ray Train run (:data:`DRIVER_CPU`); each worker asks for
    ``cpus_per_trial`` CPUs and one whole GPU (NCCL needs a device per rank).
    """
    if cfg.resources.workers_per_trial > 1:
        return {"cpu": DRIVER_CPU}
    resources = {"cpu": settings.cpus_per_trial}
    if has_gpu:
        resources["gpu"] = settings.gpu_share.get(cfg.model.backbone, 1.0)
    return resources
