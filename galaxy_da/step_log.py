"""An epoch's per-step losses and diagnostics, kept on the device and read once at its end.

Reading a loss (``.item()``) inside the step loop makes the host wait for the
device every step; on a GPU that idles it between steps, and the small
backbones are bound by exactly that overhead. So each step only writes its
values into a row of a device tensor, and :meth:`StepLog.read` copies the whole
(steps, K) table to the host once per epoch (after averaging it over the
data-parallel workers), checks it, and summarises it.

The NaN check is therefore made at the end of the epoch, but it still names the
first bad step and component, in the same words as a per-step check would.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

from galaxy_da.distributed import World


class NonFiniteLossError(FloatingPointError):
    """A loss component became NaN or Inf; the trial stops rather than carry on."""


def loss_key(name: str) -> str:
    """``total`` -> ``train/loss``, other components -> ``train/loss_<name>``."""
    return "train/loss" if name == "total" else f"train/loss_{name}"


class StepLog:
    """Rows of per-step scalars: the loss components, then the diagnostics.

    Which names there are is fixed by the first :meth:`record`; shapes: each
    value a scalar tensor (or a float), the table (steps, K) float64 on ``device``.
    """

    def __init__(self, steps: int, device: torch.device) -> None:
        self.steps, self.device = steps, device
        self.losses: list[str] = []
        self.diagnostics: list[str] = []
        self.table: Optional[torch.Tensor] = None

    def record(self, step: int, losses: dict[str, torch.Tensor], diagnostics: dict[str, Any]) -> None:
        """Write step ``step``'s row: device ops only, nothing is read back."""
        if self.table is None:
            self.losses, self.diagnostics = list(losses), list(diagnostics)
            self.table = torch.zeros(self.steps, len(self.losses) + len(self.diagnostics), dtype=torch.float64, device=self.device)
        values = [losses[name].detach() for name in self.losses] + [torch.as_tensor(diagnostics[name]) for name in self.diagnostics]
        self.table[step] = torch.stack([value.to(self.device, torch.float64).reshape(()) for value in values])

    def read(self, epoch: int, world: World) -> dict[str, Any]:
        """The one host read of the epoch: epoch means, diagnostic maxima and per-step diagnostics.

        Values are averaged over the workers first (equal slices: the global
        means). Raises :class:`NonFiniteLossError` naming the first step with a
        NaN or Inf loss component.
        """
        table = world.mean(self.table).cpu()
        losses, diagnostics = table[:, : len(self.losses)], table[:, len(self.losses) :]
        bad = (~torch.isfinite(losses)).any(dim=1).nonzero()
        if len(bad):
            step = int(bad[0])
            row = dict(zip(self.losses, losses[step].tolist()))
            name = next(name for name, value in row.items() if not math.isfinite(value))
            raise NonFiniteLossError(
                f"epoch {epoch}, step {step}: loss component '{name}' is {row[name]} "
                f"(all components: { {k: round(v, 6) for k, v in row.items()} })"
            )
        record: dict[str, Any] = {loss_key(name): value for name, value in zip(self.losses, losses.mean(0).tolist())}
        record.update(zip(self.diagnostics, diagnostics.mean(0).tolist()))
        record.update((f"{name}_max", value) for name, value in zip(self.diagnostics, diagnostics.max(0).values.tolist()))
        record["steps"] = [dict(zip(self.diagnostics, row)) for row in diagnostics.tolist()]
        return record
