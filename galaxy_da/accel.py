"""How a step runs fast: autocast precision, memory layout and ``torch.compile`` (``compute.*``).

Each choice is a small registry keyed by its config value, resolved against
the trial's device and backbone, so the CPU and the GPU take the same code path
with different entries.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Optional

import torch
from torch import nn

# compute.precision -> the autocast dtype on a device (None: plain fp32).
PRECISIONS: dict[str, Callable[[torch.device], Optional[torch.dtype]]] = {
    "auto": lambda device: torch.bfloat16 if device.type == "cuda" else None,  # CPU convs are faster in fp32
    "fp32": lambda device: None,
    "bf16": lambda device: torch.bfloat16,
}

# Backbones whose convolutions run faster in channels_last (bench/train_step.py:
# +16% cnn, +8% resnet18 on CPU; the steerable nets' expanded filters lose 15%).
CHANNELS_LAST_HELPS: dict[str, bool] = {"cnn": True, "resnet18": True, "steerable": False}


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """The forward's autocast context for ``compute.precision`` (a no-op for fp32).

    Under bf16 the convolutions and matmuls run in bfloat16; the losses cast
    logits and features back to float32 (see :class:`~galaxy_da.objective.Objective`).
    """
    dtype = PRECISIONS[precision](device)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def memory_format(backbone: str, channels_last: Optional[bool]) -> torch.memory_format:
    """``compute.channels_last`` (None: where it helps ``backbone``) as a memory format for the model and its batches."""
    wanted = CHANNELS_LAST_HELPS.get(backbone, False) if channels_last is None else channels_last
    return torch.channels_last if wanted else torch.contiguous_format


class CompiledOrEager:
    """Call ``torch.compile(module, backend=backend)``; if compiling fails, warn once and run ``module`` eagerly from then on.

    Compilation happens at the first call (and again for a new input shape), so
    a missing C++ compiler or an unsupported op shows up there, before any
    computation with side effects. Not an ``nn.Module``: the compiled wrapper is
    called, while the parameters, the state_dict and DDP's hooks stay those of
    ``module``.
    """

    def __init__(self, module: nn.Module, backend: str) -> None:
        self.module = module
        self.backend = backend
        self.compiled: Optional[Callable[..., Any]] = None
        try:
            self.compiled = torch.compile(module, backend=backend)
        except Exception as error:  # an unknown or broken backend
            self._fall_back(error)

    def _fall_back(self, error: Exception) -> None:
        warnings.warn(f"compute.compile={self.backend!r} failed ({type(error).__name__}: {str(error)[:300]}); running eagerly", RuntimeWarning, stacklevel=3)
        self.compiled = None

    def __call__(self, *args: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as error:
                self._fall_back(error)
        return self.module(*args)


def forward_of(module: nn.Module, compile_backend: str) -> Callable[..., Any]:
    """What the step calls to run ``module``: the module itself (``compute.compile: off``) or :class:`CompiledOrEager`."""
    return module if compile_backend == "off" else CompiledOrEager(module, compile_backend)
