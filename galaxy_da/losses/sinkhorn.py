r"""Log-domain Sinkhorn in torch whose convergence test never makes the host wait.

A solver that stops when its error is small must look at the error, and on a
GPU reading a number back (``.item()``) drains the queue: the host waits for the
device on every check. Here the check is made *on the device* every
:data:`CHECK_EVERY` iterations and, once it passes, ``torch.where`` freezes the
potentials, so everything computed after that point is discarded and the
result is exactly that of a solver that stopped at that check. The host learns
about convergence through :class:`ConvergencePoll` (a non-blocking copy and a
CUDA event it queries, never waits on) and stops queueing blocks when it has
seen it; how late it notices changes the work done, never the result.
"""

from __future__ import annotations

import collections
import math
from typing import Optional

import torch
import torch.nn.functional as F

CHECK_EVERY = 10  # Sinkhorn iterations between two convergence checks


class ConvergencePoll:
    """Has a boolean device flag been true yet? Learnt without ever waiting for the device.

    :meth:`push` queues a copy of the flag; :meth:`seen` is True once a copy
    that has *already arrived* on the host says true. On the CPU the flag is
    already on the host; on CUDA it is copied, non-blocking, into pinned memory
    and a recorded event tells (``query()``, which never blocks) when the copy
    has landed.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.pending: collections.deque = collections.deque()

    def push(self, flag: torch.Tensor) -> None:
        if not self.cuda:
            self.pending.append((flag, None))
            return
        host = torch.empty((), dtype=torch.bool, pin_memory=True)
        host.copy_(flag, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.pending.append((host, event))

    def seen(self) -> bool:
        while self.pending and (self.pending[0][1] is None or self.pending[0][1].query()):
            host, _ = self.pending.popleft()
            if bool(host):
                return True
        return False


def entropic_plan(
    cost: torch.Tensor, epsilon: torch.Tensor, *, max_iter: int, tol: float, source_masses: Optional[torch.Tensor] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The converged entropic OT plan between the source masses and the uniform target (no graph: a constant).

    Solves :math:`\min_{P \in U(a, b)} \langle P, C\rangle - \varepsilon H(P)` with
    :math:`a` = ``source_masses`` (n,) summing to 1 (:math:`1/n` when None; a zero
    mass gives a zero row) and :math:`b = 1/m` by log-domain Sinkhorn; with
    :math:`M = -C/\varepsilon`, one iteration is

    .. math:: \log v_j \leftarrow \log b_j - \mathrm{LSE}_i(M_{ij} + \log u_i),\qquad
              \log u_i \leftarrow \log a_i - \mathrm{LSE}_j(M_{ij} + \log v_j).

    After every :data:`CHECK_EVERY` iterations the column error
    :math:`\lVert P^\top 1 - b\rVert_2` of :math:`P = \mathrm{diag}(u)\,e^{M}\mathrm{diag}(v)`
    is compared with ``tol`` on the device; from the first check that passes
    :math:`v` is frozen (see the module docstring), and at most ``max_iter``
    iterations (rounded up to a whole block) run. Then one row half-step

    .. math:: P_{ij} = a_i\,\mathrm{softmax}_j\big(\log v_j - C_{ij}/\varepsilon\big)

    gives rows that sum to :math:`a` exactly; the column error is the solver's.
    Every step is a softmax or logsumexp, so the plan is finite for any
    :math:`\varepsilon > 0`. The plan carries no graph: losses use it as a fixed
    weight.

    Shapes: ``cost`` (n, m), ``epsilon`` scalar tensor, ``source_masses`` (n,) or None -> (plan (n, m), the
    iterations run until the passing check as a scalar tensor; the whole budget
    when ``tol`` was never reached).
    """
    n, m = cost.shape
    poll = ConvergencePoll(cost.device)
    with torch.no_grad():
        scaled = -cost.detach() / epsilon
        masses = cost.new_full((n,), 1.0 / n) if source_masses is None else source_masses.detach().to(cost.dtype)
        log_a, log_b = masses.log(), -math.log(m)
        log_u, log_v = cost.new_zeros(n), cost.new_zeros(m)
        done = torch.zeros((), dtype=torch.bool, device=cost.device)
        iterations = torch.zeros((), dtype=torch.long, device=cost.device)
        for _ in range(math.ceil(max_iter / CHECK_EVERY)):
            frozen_v = log_v
            for _ in range(CHECK_EVERY):
                log_v = log_b - torch.logsumexp(scaled + log_u[:, None], dim=0)
                log_u = log_a - torch.logsumexp(scaled + log_v[None, :], dim=1)
            log_v = torch.where(done, frozen_v, log_v)
            iterations = torch.where(done, iterations, iterations + CHECK_EVERY)
            columns = torch.logsumexp(scaled + log_u[:, None] + log_v[None, :], dim=0).exp()
            done = done | (torch.linalg.vector_norm(columns - 1.0 / m) < tol)
            poll.push(done)
            if poll.seen():
                break
        plan = masses[:, None] * F.softmax(log_v[None, :] + scaled, dim=1)
    return plan, iterations


def marginal_error(plan: torch.Tensor, source_masses: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Largest deviation of the plan's row sums from the source masses (uniform when None) and of its column sums from uniform, relative to a uniform mass (a scalar tensor)."""
    n, m = plan.shape
    masses = plan.new_full((n,), 1.0 / n) if source_masses is None else source_masses.to(plan.dtype)
    rows = ((plan.sum(1) - masses) * n).abs().max()
    cols = (plan.sum(0) * m - 1.0).abs().max()
    return torch.maximum(rows, cols)
