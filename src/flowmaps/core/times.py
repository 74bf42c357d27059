"""Training times: (s, t) pairs for flow-map objectives and EDM's log-normal noise levels.

Pairs are uniform on the triangle ``0 ≤ s ≤ t ≤ 1`` (or the square ``[0, 1]²``) restricted to the band
``|t − s| ≤ δ``; a fraction η of the batch sits on the diagonal ``s = t``. The largest gap δ may be annealed
linearly from ``gap_start`` to 1 over ``anneal_steps`` training steps. Or both times are logit-normal, as
MeanFlow trains. A share of the pairs may lie on the steps of the few-step samplers (:func:`grid_pairs`).
EDM's noise levels are ``ln σ ~ N(P_mean, P_std²)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def max_gap(step: int, gap_start: float = 1.0, anneal_steps: int = 0) -> float:
    """``δ(step) = gap_start + (1 − gap_start) · min(step / anneal_steps, 1)`` (1 without annealing)."""
    if anneal_steps <= 0:
        return 1.0
    return gap_start + (1.0 - gap_start) * min(step / anneal_steps, 1.0)


def band_pairs(n: int, delta: float = 1.0, square: bool = False, device=None) -> tuple[Tensor, Tensor]:
    """(s, t) uniform on ``{0 ≤ s ≤ t ≤ 1, t − s ≤ δ}`` (``square``: on ``{|t − s| ≤ δ}``, both orders).

    The gap ``d = t − s`` has density ∝ ``1 − d`` on [0, δ], drawn by inverting its CDF
    ``(2d − d²)/(2δ − δ²)``; then ``s ~ U[0, 1 − d]``.
    """
    if not 0 < delta <= 1:
        raise ValueError(f"the largest gap |t - s| must lie in (0, 1], got {delta}")
    u = torch.rand(n, device=device)
    d = 1 - torch.sqrt(1 - u * (2 * delta - delta**2))
    s = torch.rand(n, device=device) * (1 - d)
    t = s + d
    if square:
        swap = torch.rand(n, device=device) < 0.5
        s, t = torch.where(swap, t, s), torch.where(swap, s, t)
    return s, t


def sample_times(n: int, eta: float = 0.0, delta: float = 1.0, square: bool = False,
                 device=None) -> tuple[Tensor, Tensor, int]:
    """``(s, t, n_diag)``: the first ``n_diag = round(η n)`` pairs on the diagonal (``s = t ~ U[0, 1]``), the
    rest from :func:`band_pairs`."""
    if not 0 <= eta <= 1:
        raise ValueError(f"the diagonal fraction eta must lie in [0, 1], got {eta}")
    n_diag = min(n, math.floor(eta * n + 0.5))
    diag = torch.rand(n_diag, device=device)
    s_off, t_off = band_pairs(n - n_diag, delta, square, device)
    return torch.cat([diag, s_off]), torch.cat([diag, t_off]), n_diag


def grid_pairs(n: int, steps: list[int], device=None) -> tuple[Tensor, Tensor]:
    """(s, t) on the steps of the uniform N-step samplers: N uniform on ``steps``, the step k uniform on
    {0, …, N − 1}, ``s = k/N`` and t uniform on ``(s, s + 1/N]``. With steps (1, 2, 4) the starts 0, 1/4, 1/2, 3/4
    have weights 7 : 1 : 3 : 1."""
    if not steps or min(steps) < 1:
        raise ValueError(f"grid steps must be positive step counts, got {steps}")
    counts = torch.tensor(steps, dtype=torch.float32, device=device)[torch.randint(len(steps), (n,), device=device)]
    s = torch.floor(torch.rand(n, device=device) * counts) / counts
    return s, s + (1 - torch.rand(n, device=device)) / counts


def logit_normal_times(n: int, eta: float = 0.0, mean: float = 0.0, std: float = 1.0, square: bool = False,
                       device=None) -> tuple[Tensor, Tensor, int]:
    """``(s, t, n_diag)`` from the logit-normal ``σ(N(mean, std²))`` (σ the logistic function): the first
    ``n_diag = round(η n)`` pairs on the diagonal, ``s = t``; the rest the ordered pair of two independent draws,
    ``s = min``, ``t = max`` (``square``: each pair in either order)."""
    if not 0 <= eta <= 1:
        raise ValueError(f"the diagonal fraction eta must lie in [0, 1], got {eta}")
    n_diag = min(n, math.floor(eta * n + 0.5))
    a, b = torch.sigmoid(mean + std * torch.randn(2, n, device=device))
    s, t = torch.minimum(a, b), torch.maximum(a, b)
    s, t = torch.cat([a[:n_diag], s[n_diag:]]), torch.cat([a[:n_diag], t[n_diag:]])
    if square:
        swap = torch.rand(n, device=device) < 0.5
        s, t = torch.where(swap, t, s), torch.where(swap, s, t)
    return s, t, n_diag


def karras_sigma(u: Tensor, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> Tensor:
    """EDM's ρ-schedule at positions ``u`` ∈ [0, 1]: ``σ(u) = (σ_max^{1/ρ} + u (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ``
    (u = 0: σ_max, u = 1: σ_min). Its sampler's levels are ``u = i/(N − 1)``; training on ``u ~ U[0, 1]`` draws
    noise levels with the density the sampler spends its steps at, σ_max included."""
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (a + u * (b - a)) ** rho


def lognormal_sigma(n: int, p_mean: float = -1.2, p_std: float = 1.2, device=None) -> Tensor:
    """EDM's training noise levels: ``ln σ ~ N(P_mean, P_std²)`` (map to t with :func:`paths.sigma_to_t`)."""
    return (p_mean + p_std * torch.randn(n, device=device)).exp()
