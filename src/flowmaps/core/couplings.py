"""Couplings of noise x0 and data x1 within a minibatch.

Every coupling returns a *permutation* of x1 (no pair is duplicated or dropped). With several processes a
plan covers only the local batch of each rank.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
import ot
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

COUPLINGS = ("independent", "ot", "sinkhorn")


def _cost(x0: Tensor, x1: Tensor) -> np.ndarray:
    """Squared Euclidean cost matrix ``C_ij = |x0_i - x1_j|²`` (float64, on the CPU for POT)."""
    a, b = x0.detach().flatten(1).double().cpu(), x1.detach().flatten(1).double().cpu()
    return torch.cdist(a, b).pow(2).numpy()


def ot_permutation(x0: Tensor, x1: Tensor) -> Tensor:
    """Exact minibatch OT: the permutation π minimizing ``Σ_i |x0_i - x1_π(i)|²``.

    POT's network simplex returns an optimal vertex of the plans with uniform marginals, and those vertices are
    permutations (Birkhoff–von Neumann); the Hungarian algorithm solves the rare plan that is not one."""
    cost = _cost(x0, x1)
    n = cost.shape[0]
    cols = ot.emd(ot.unif(n), ot.unif(n), cost).argmax(1)
    if len(np.unique(cols)) != n:
        _, cols = linear_sum_assignment(cost)
    return torch.as_tensor(cols, device=x1.device)


def sinkhorn_permutation(x0: Tensor, x1: Tensor, reg: float = 0.05, generator: torch.Generator | None = None) -> Tensor:
    """Entropic OT: a permutation drawn from the Sinkhorn plan P (POT).

    The draw maximizes ``Σ_i log P_iπ(i) + g_iπ(i)`` with Gumbel noise g (a perturb-and-MAP sample), so
    pairs follow P while staying one-to-one. ``reg`` is relative to the mean cost.
    """
    cost = _cost(x0, x1)
    n = cost.shape[0]
    w = np.full(n, 1.0 / n)
    plan = ot.sinkhorn(w, w, cost / cost.mean(), reg, method="sinkhorn_log", numItermax=5000, stopThr=1e-6)
    u = torch.rand(n, n, generator=generator, dtype=torch.float64).numpy().clip(1e-12, 1 - 1e-12)
    gumbel = -np.log(-np.log(u))
    _, cols = linear_sum_assignment(-(np.log(plan + 1e-300) + gumbel))
    return torch.as_tensor(cols, device=x1.device)


def couple(coupling: str, x0: Tensor, x1: Tensor, label: Tensor | None = None, frac: float = 1.0,
           block: int = 0, **kw) -> tuple[Tensor, Tensor, Tensor | None]:
    """Pairs ``(x0, x1[π], label[π])`` under ``coupling`` (independent: π = id); the labels follow their data.

    With ``frac < 1`` only the batch's first ``k = round(frac · n)`` pairs are coupled, among themselves, and the
    rest stay independent: the mixture ``frac · π_c + (1 − frac) · π_ind`` of two couplings of the same marginals,
    itself one (for a shuffled batch), at the cost of a plan on k points. With ``block = b > 0`` the coupled pairs
    are planned in consecutive blocks of b points, each among itself: minibatch OT at batch b (every pair coupled)
    inside a larger gradient batch, at the cost of k / b plans on b points, solved side by side."""
    if coupling not in COUPLINGS:
        raise ValueError(f"unknown coupling {coupling!r}; choose one of {', '.join(COUPLINGS)}")
    n = x0.shape[0]
    k = round(frac * n)
    if coupling == "independent" or k < 2:
        return x0, x1, label
    b = block if block > 0 else k
    spans = [(i, min(i + b, k)) for i in range(0, k, b)]
    plan = ot_permutation if coupling == "ot" else partial(sinkhorn_permutation, **kw)

    def offset_plan(span: tuple[int, int]) -> Tensor:
        i, j = span
        return i + (plan(x0[i:j], x1[i:j]) if j - i > 1 else torch.zeros(1, dtype=torch.long, device=x1.device))

    # Exact plans are deterministic and POT's network simplex releases the GIL: the blocks share torch's
    # intra-op threads. Sinkhorn draws from one generator, so its blocks stay in order.
    workers = min(len(spans), torch.get_num_threads()) if coupling == "ot" else 1
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(offset_plan, spans))
    else:
        parts = [offset_plan(s) for s in spans]
    perm = torch.cat([*parts, torch.arange(k, n, device=x1.device)])
    return x0, x1[perm], None if label is None else label[perm]
