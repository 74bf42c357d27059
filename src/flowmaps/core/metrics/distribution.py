"""Sample-based distances between a target set and a model's samples."""

from __future__ import annotations

import numpy as np
import ot
import torch
from torch import Tensor


def _histogram2d(x: Tensor, bins: int, bounds: tuple[float, float], name: str) -> Tensor:
    """Bin counts of ``x`` (N, 2) on a bins x bins grid over bounds², divided by N (not the in-range count)."""
    if x.ndim != 2 or x.shape[1] != 2 or x.shape[0] == 0:
        raise ValueError(f"kl_histogram: {name} must have shape (N, 2) with N >= 1, got {tuple(x.shape)}")
    lo, hi = bounds
    counts, _ = torch.histogramdd(x.detach().cpu().double(), bins=[bins, bins], range=[lo, hi, lo, hi])
    return counts / x.shape[0]


def kl_histogram(
    target: Tensor,
    model: Tensor,
    bins: int = 50,
    bounds: tuple[float, float] = (-1.0, 1.0),
    eps: float = 1e-10,
) -> float:
    """KL(target || model) = Σ_b p_b log(p_b / max(q_b, eps)) over the bins with p_b > 0.

    p and q are 2-D histograms on a bins x bins grid over bounds², each divided by its TOTAL
    sample count, so samples outside the bounds lower the in-range mass (spilling is penalised).
    Empty model bins are floored at eps (large but finite); KL(x || x) is exactly 0.
    """
    p = _histogram2d(target, bins, bounds, "target")
    q = _histogram2d(model, bins, bounds, "model").clamp_min(eps)
    mask = p > 0
    return float((p[mask] * (p[mask] / q[mask]).log()).sum())


def _flat(x: Tensor, max_n: int) -> Tensor:
    """First ``max_n`` rows of ``x`` as float64 (n, D)."""
    return x[:max_n].detach().reshape(min(len(x), max_n), -1).double()


def wasserstein2(x: Tensor, y: Tensor, max_n: int = 4000) -> float:
    """Exact W2 = sqrt(min_π Σ π_ij |x_i - y_j|²) between uniform empirical measures (``ot.emd2``).

    Only the first ``max_n`` samples of each set are used: pass shuffled samples.
    """
    a, b = _flat(x, max_n).cpu().numpy(), _flat(y, max_n).cpu().numpy()
    cost = ot.dist(a, b, metric="sqeuclidean")
    w2sq = ot.emd2(ot.unif(len(a)), ot.unif(len(b)), cost, numItermax=10_000_000)
    return float(np.sqrt(max(float(w2sq), 0.0)))


def _mean_dist(a: Tensor, b: Tensor, chunk: int = 1024) -> Tensor:
    """E|A - B| over all pairs, computed ``chunk`` rows at a time."""
    total = sum(torch.cdist(a[i : i + chunk], b).sum() for i in range(0, len(a), chunk))
    return total / (len(a) * len(b))


def energy_distance(x: Tensor, y: Tensor, max_n: int = 4000) -> float:
    """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (V-statistic) on the first ``max_n`` samples."""
    a, b = _flat(x, max_n), _flat(y, max_n)
    return float(2 * _mean_dist(a, b) - _mean_dist(a, a) - _mean_dist(b, b))
