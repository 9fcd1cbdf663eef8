"""How a sweep runs: its settings, its result, and the resources of one trial.

No Ray import: the sweep CLI builds settings and checks them before Ray starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from galaxy_da.config import TrialConfig
from galaxy_da.sweep.space import Space


# GPUs per trial when the cluster has GPUs; backbones not listed take one whole GPU.
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
    mutations: Optional[Space] = None  # PBT/PB2: the knobs they may change (default: the whole space)
    max_failures: int = 1
    cpus_per_trial: float = 1.0
    gpu_share: dict[str, float] = field(default_factory=lambda: dict(GPU_SHARE))
    use_gpu: Optional[bool] = None  # None: when the Ray cluster has GPUs
    storage_path: str = "ray_results"
    tracking_uri: Optional[str] = None  # None: the base config's, else the default store
    optuna_storage: Optional[str] = None  # e.g. sqlite:///ray_results/optuna.db, for a persistent study
    address: Optional[str] = None  # None: $RAY_ADDRESS, a live cluster on this node, else a fresh local one
    num_cpus: Optional[int] = None  # local Ray only

    @property
    def storage_uri(self) -> str:
        """``storage_path`` as Ray and pyarrow need it: a URI, or an absolute local path."""
        return self.storage_path if "://" in self.storage_path else str(Path(self.storage_path).resolve())

    @property
    def experiment_path(self) -> str:
        return f"{self.storage_uri.rstrip('/')}/{self.name}"


@dataclass
class SweepResult:
    parent_run_id: str
    experiment_path: str
    complete: bool
    leaderboard: list[dict[str, Any]]
    tracking_uri: str


# --------------------------------------------------------------------------- trials


def resources_for(cfg: TrialConfig, settings: SweepSettings, has_gpu: bool) -> dict[str, float]:
    """Ray resources of one trial: a backbone's GPU share, or CPUs only."""
    resources = {"cpu": settings.cpus_per_trial}
    if has_gpu:
        resources["gpu"] = settings.gpu_share.get(cfg.model.backbone, 1.0)
    return resources
