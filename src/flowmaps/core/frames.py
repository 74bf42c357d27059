"""Variance-preserving (DDPM / DDIM / diffusers) models in the t-frame: exact conversions, pure tensors.

A VP schedule noises data as ``x_τ = a_τ x1 + s_τ ε`` with ``a_τ = sqrt(ᾱ_τ)``, ``s_τ = sqrt(1 − ᾱ_τ)``
(``τ = 0 … T−1`` the discrete timestep). Ours is ``I_t = (1 − t) σ0 ε + t x1``. Both are lines through the same
(x1, ε) with the same signal-to-noise ratio when

    a/s = t / (σ0 (1 − t)),   i.e.   t = a σ0 / (a σ0 + s) = σ0 / (σ0 + σ_τ),   σ_τ = s/a (Karras' σ),

and then ``x_τ = I_t / n_t`` with ``n_t = sqrt(t² + σ0² (1 − t)²)``, ``a = t/n_t``, ``s = σ0 (1 − t)/n_t``: the VP
input is the t-frame state divided by its scale (finite at both ends, no division by t).

A network predicts ε (``epsilon``), ``v = a ε − s x1`` (``v_prediction``) or x1 (``sample``); each gives both
``x̂1 = E[x1 | x]`` and ``ε̂ = E[ε | x]`` through ``x_τ = a x̂1 + s ε̂``, and the linear-path velocity is

    b_t(x) = E[İ_t | I_t = x] = x̂1 − σ0 ε̂   ( = (x̂1 − x)/(1 − t) ).

The discrete schedule is made continuous by interpolating τ linearly in the log-SNR ``λ_τ = ln(ᾱ_τ/(1 − ᾱ_τ))``;
the teacher covers ``t ∈ [t(T−1), t(0)]``: its largest noise level gives the first time of every solve,
``t0 = t(T−1)`` (as EDM's σ_max does); beyond its smallest noise level the network sees τ = 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from .paths import bcast, sigma_to_t

Prediction = Literal["epsilon", "v_prediction", "sample"]
PREDICTIONS: tuple[str, ...] = ("epsilon", "v_prediction", "sample")


def vp_coefficients(t: Tensor, sigma0: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """``(a, s, n)`` of the VP point with the SNR of time t: ``n = sqrt(t² + σ0²(1−t)²)``, ``a = t/n``,
    ``s = σ0 (1−t)/n`` (so ``a² + s² = 1`` and ``x_τ = I_t / n``)."""
    n = torch.sqrt(t**2 + sigma0**2 * (1 - t) ** 2)
    return t / n, sigma0 * (1 - t) / n, n


def prediction_to_x1_eps(pred: Tensor, x_tau: Tensor, a: Tensor, s: Tensor, kind: str) -> tuple[Tensor, Tensor]:
    """``(x̂1, ε̂)`` from a network output on the VP input ``x_τ = a x1 + s ε`` (``a``, ``s`` broadcast to x):
    ε-prediction ``x̂1 = (x_τ − s ε̂)/a``; v-prediction ``x̂1 = a x_τ − s v̂``, ``ε̂ = s x_τ + a v̂``; sample
    prediction ``ε̂ = (x_τ − a x̂1)/s``."""
    if kind == "epsilon":
        return (x_tau - s * pred) / a, pred
    if kind == "v_prediction":
        return a * x_tau - s * pred, s * x_tau + a * pred
    if kind == "sample":
        return pred, (x_tau - a * pred) / s
    raise ValueError(f"unknown prediction type {kind!r}; choose one of {', '.join(PREDICTIONS)}")


class VPSchedule:
    """A discrete VP schedule ``ᾱ_τ`` (τ = 0 … T−1, decreasing) read in the t-frame with base scale σ0."""

    def __init__(self, alphas_cumprod: Tensor, sigma0: float = 1.0) -> None:
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).reshape(-1)
        if abar.numel() < 2 or not bool(((abar > 0) & (abar < 1)).all()) or bool((abar[1:] >= abar[:-1]).any()):
            raise ValueError("alphas_cumprod must hold at least two values in (0, 1), strictly decreasing")
        self.alphas_cumprod, self.sigma0 = abar, float(sigma0)
        self.log_snr = torch.log(abar / (1 - abar))  # λ_τ, decreasing in τ

    @property
    def steps(self) -> int:
        return self.alphas_cumprod.numel()

    def sigma(self, tau: Tensor | None = None) -> Tensor:
        """Karras' ``σ_τ = s_τ/a_τ = sqrt((1 − ᾱ_τ)/ᾱ_τ)`` at integer τ (every τ if None)."""
        abar = self.alphas_cumprod if tau is None else self.alphas_cumprod[tau]
        return torch.sqrt((1 - abar) / abar)

    def time(self, tau: Tensor | None = None) -> Tensor:
        """``t_τ = σ0/(σ0 + σ_τ)`` at integer τ (every τ if None)."""
        return sigma_to_t(self.sigma(tau), self.sigma0)

    @property
    def t0(self) -> float:
        """The first time: ``t`` of the largest noise level τ = T − 1."""
        return float(self.time(torch.tensor(self.steps - 1)))

    def timestep(self, t: Tensor) -> Tensor:
        """Continuous τ with the SNR of t: ``λ(t) = 2 ln(t/(σ0(1−t)))`` interpolated linearly between the
        schedule's ``λ_τ``, clamped to [0, T−1]."""
        t64 = t.double().clamp(1e-12, 1 - 1e-12)
        lam = 2 * torch.log(t64 / (self.sigma0 * (1 - t64)))
        neg = -self.log_snr.to(t.device)  # increasing in τ
        x = (-lam).clamp(float(neg[0]), float(neg[-1]))
        i = torch.searchsorted(neg, x).clamp(1, self.steps - 1)
        lo, hi = neg[i - 1], neg[i]
        return ((i - 1) + (x - lo) / (hi - lo)).to(t.dtype)


Network = Callable[[Tensor, Tensor, Tensor | None], Tensor]  # net(x_τ, τ, label) -> prediction


def vp_velocity(net: Network, schedule: VPSchedule, kind: str) -> Callable[..., Tensor]:
    """The linear-path velocity ``b(x, t, label=None) = x̂1 − σ0 ε̂`` of a VP network ``net(x_τ, τ, label)``
    (see the module docstring), computed in float64 around the network's own dtype."""
    if kind not in PREDICTIONS:
        raise ValueError(f"unknown prediction type {kind!r}; choose one of {', '.join(PREDICTIONS)}")

    def b(x: Tensor, t: Tensor, label: Tensor | None = None) -> Tensor:
        t64 = t.double().reshape(-1)
        a, s, n = (bcast(c, x) for c in vp_coefficients(t64, schedule.sigma0))
        x_tau = x.double() / n
        pred = net(x_tau.to(x.dtype), schedule.timestep(t64).to(x.dtype), label).double()
        x1, eps = prediction_to_x1_eps(pred, x_tau, a, s, kind)
        return (x1 - schedule.sigma0 * eps).to(x.dtype)

    return b
