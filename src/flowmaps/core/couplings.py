"""Couplings of noise x0 and data x1 within a minibatch.

Every coupling returns a *permutation* of x1 (no pair is duplicated or dropped). With several processes a
plan covers only the local batch of each rank.
"""

from __future__ import annotations

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


def couple(coupling: str, x0: Tensor, x1: Tensor, label: Tensor | None = None,
           **kw) -> tuple[Tensor, Tensor, Tensor | None]:
    """Pairs ``(x0, x1[π], label[π])`` under ``coupling`` (independent: π = id); the labels follow their data."""
    if coupling == "independent":
        return x0, x1, label
    if coupling == "ot":
        perm = ot_permutation(x0, x1)
    elif coupling == "sinkhorn":
        perm = sinkhorn_permutation(x0, x1, **kw)
    else:
        raise ValueError(f"unknown coupling {coupling!r}; choose one of {', '.join(COUPLINGS)}")
    return x0, x1[perm], None if label is None else label[perm]
