r"""Data parallelism over plain ``torch.distributed``: gathers with gradients, and global-batch BatchNorm.

A trial that spans W workers (``resources.workers_per_trial``) must train the
model that one worker would train on the W-times larger global batch. Three
things make that hold; the launcher (Ray Train's ``TorchTrainer``, see
:mod:`galaxy_da.sweep.ddp`) only starts the process group, and nothing here
imports Ray:

- **Gradients** are averaged by ``DistributedDataParallel``; every loss is a
  mean over the worker's slice, and the slices are equal, so the average is
  the gradient of the global mean.
- **Alignment losses** compare the two domains' feature distributions, which
  a worker's slice alone does not represent: :meth:`World.gather` all-gathers
  the features of every worker (rank order = the order of the one-worker
  batch) and each worker computes the same loss :math:`L` on them. The
  gather's backward all-reduces (sums) the gradient, so worker r receives
  :math:`\sum_{r'} \partial L/\partial F_r = W\,\partial L/\partial F_r`, and
  DDP's division by W leaves exactly :math:`\partial L/\partial\theta`.
- **BatchNorm** statistics must be those of the global batch:
  :class:`GlobalBatchNorm` all-reduces the per-channel sums (two passes:
  mean, then the centred second moment) with the same sum-backward, so its
  forward *and* backward equal BatchNorm on the global batch. torch's own
  ``SyncBatchNorm`` is not used because it refuses CPU tensors, and the CPU
  tests (gloo) must run the same code as the GPUs (NCCL).

These collectives use a process group of their own, so their order never
interleaves with DDP's bucketed gradient all-reduces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


class _AllGather(torch.autograd.Function):
    """Concatenate every worker's (n, ...) tensor along dim 0; backward: the summed gradient's own slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group, ctx.rows = group, tensor.shape[0]
        ctx.rank = dist.get_rank(group)
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, tensor.contiguous(), group=group)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows], None


class _AllReduceSum(torch.autograd.Function):
    """Sum over workers; backward: the sum of the gradients (every worker's loss depends on the total)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        total = tensor.contiguous().clone()
        dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


@dataclass(frozen=True)
class World:
    """This worker's place among the W workers of one trial (W = 1: no process group, every method a no-op)."""

    rank: int = 0
    size: int = 1
    group: Any = None  # for features and BatchNorm statistics, apart from DDP's

    @classmethod
    def current(cls) -> "World":
        """From the initialised default process group (a collective call: every worker must make it), else a lone worker."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return cls()
        return cls(dist.get_rank(), dist.get_world_size(), dist.new_group())

    @property
    def lead(self) -> bool:
        """Rank 0: the worker that evaluates and writes checkpoints."""
        return self.rank == 0

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """(n, ...) on each worker -> (W n, ...) in rank order, differentiable (see the module docstring)."""
        return tensor if self.size == 1 else _AllGather.apply(tensor, self.group)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Differentiable sum over workers."""
        return tensor if self.size == 1 else _AllReduceSum.apply(tensor, self.group)

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """Mean over workers of a tensor that needs no gradient (epoch logs)."""
        if self.size == 1:
            return tensor
        total = tensor.clone()
        dist.all_reduce(total, group=self.group)
        return total / self.size

    def share(self, value: Any) -> Any:
        """Rank 0's picklable ``value`` on every worker."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def collect(self, value: Any) -> list[Any]:
        """Every worker's picklable ``value``, in rank order."""
        if self.size == 1:
            return [value]
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value, group=self.group)
        return values

    def parallel(self, module: nn.Module) -> nn.Module:
        """``module`` under ``DistributedDataParallel`` (W > 1). Unused parameters are expected: the
        discriminator and loss weights sit idle during warm-up. Buffers are not broadcast: with
        :class:`GlobalBatchNorm` every worker's running statistics are already the same."""
        if self.size == 1:
            return module
        return nn.parallel.DistributedDataParallel(module, find_unused_parameters=True, forward_sync_buffers=False)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    r"""BatchNorm over the global batch of all workers, for inputs (B, C, ...) of any rank.

    Training: with :math:`S_1 = \sum x`, :math:`N` the global count per channel,
    :math:`\mu = \mathrm{sum}_W(S_1)/N` and :math:`\sigma^2 = \mathrm{sum}_W(\sum (x-\mu)^2)/N`
    (biased; the running variance gets :math:`N/(N-1)` times it, as in
    ``nn.BatchNorm``), :math:`y = \gamma (x-\mu)/\sqrt{\sigma^2+\epsilon} + \beta`, computed in
    float32 whatever the autocast dtype. The sums are differentiable across
    workers, so the gradient is that of BatchNorm on the global batch.
    Evaluation (or ``track_running_stats`` inference) uses the running
    statistics, with no communication. The state_dict keys are BatchNorm's,
    so checkpoints move freely between one and many workers.
    """

    def __init__(self, num_features: int, world: World, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.world = world

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training or not self.track_running_stats):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        x32 = x.float()
        count = float(x.numel() // x.shape[1] * self.world.size)  # the workers' slices are equal
        mean = self.world.sum(x32.sum(dims)) / count
        centred = x32 - mean.view(shape)
        var = self.world.sum(centred.pow(2).sum(dims)) / count
        if self.training and self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), count)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: float) -> None:
        self.num_batches_tracked.add_(1)
        momentum = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked
        unbiased = var * count / max(count - 1.0, 1.0)
        self.running_mean.mul_(1 - momentum).add_(momentum * mean)
        self.running_var.mul_(1 - momentum).add_(momentum * unbiased)


def convert_batchnorm(module: nn.Module, world: World) -> nn.Module:
    """Replace every ``nn.BatchNorm*d`` in ``module`` (e2cnn's inner ones too) by :class:`GlobalBatchNorm`, keeping its state.

    Returns ``module`` itself when W = 1.
    """
    if world.size == 1:
        return module
    return _convert(module, world)


def _convert(module: nn.Module, world: World) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        replacement = GlobalBatchNorm(
            module.num_features, world, eps=module.eps, momentum=module.momentum,
            affine=module.affine, track_running_stats=module.track_running_stats,
        ).to(next(module.buffers(), torch.empty(0)).device)
        replacement.load_state_dict(module.state_dict())
        replacement.train(module.training)
        if module.affine:
            replacement.weight.requires_grad_(module.weight.requires_grad)
            replacement.bias.requires_grad_(module.bias.requires_grad)
        return replacement
    for name, child in module.named_children():
        setattr(module, name, _convert(child, world))
    return module

