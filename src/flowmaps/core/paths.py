"""Interpolants ``I_t = α_t x0 + β_t x1`` (t = 0 noise, t = 1 data) and the EDM σ ↔ t conversion.

This is the one module where other time conventions meet ours: EDM's variance-exploding
``x_σ = x1 + σ z`` is the linear path up to scale, ``t = 1/(1 + σ/σ0)``, ``I_t = x_σ · t``
(for σ0 = 1: ``I_t = x_σ / (1 + σ)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


def bcast(t: Tensor, x: Tensor) -> Tensor:
    """Reshape a (batch,) time tensor to broadcast against x of shape (batch, *dims)."""
    return t.reshape(t.shape[0], *([1] * (x.dim() - 1)))


@dataclass(frozen=True)
class Interpolant:
    """``I_t = α_t x0 + β_t x1`` with α_0 = β_1 = 1, α_1 = β_0 = 0."""

    name: str

    def alpha(self, t: Tensor) -> Tensor:
        return 1 - t if self.name == "linear" else torch.cos(0.5 * math.pi * t)

    def beta(self, t: Tensor) -> Tensor:
        return t if self.name == "linear" else torch.sin(0.5 * math.pi * t)

    def dalpha(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t) if self.name == "linear" else -0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def dbeta(self, t: Tensor) -> Tensor:
        return torch.ones_like(t) if self.name == "linear" else 0.5 * math.pi * torch.cos(0.5 * math.pi * t)

    def __call__(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """``I_t = α_t x0 + β_t x1``."""
        return bcast(self.alpha(t), x0) * x0 + bcast(self.beta(t), x1) * x1

    def derivative(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """``İ_t = α̇_t x0 + β̇_t x1``, the time derivative of the interpolant (the conditional velocity)."""
        return bcast(self.dalpha(t), x0) * x0 + bcast(self.dbeta(t), x1) * x1

    def std(self, t: Tensor, sigma0: float, sigma_data: float) -> Tensor:
        """Standard deviation of I_t per coordinate for independent x0, x1: ``sqrt(α² σ0² + β² σ_d²)``."""
        return torch.sqrt(self.alpha(t) ** 2 * sigma0**2 + self.beta(t) ** 2 * sigma_data**2)


INTERPOLANTS = ("linear", "trig")


def interpolant(name: str) -> Interpolant:
    """The interpolant called ``name`` (``linear``: α = 1-t, β = t; ``trig``: α = cos(πt/2), β = sin(πt/2))."""
    if name not in INTERPOLANTS:
        raise ValueError(f"unknown interpolant {name!r}; choose one of {', '.join(INTERPOLANTS)}")
    return Interpolant(name)


# ----- EDM (variance exploding) <-> linear path -----------------------------------------------


def sigma_to_t(sigma: Tensor | float, sigma0: float = 1.0) -> Tensor | float:
    """``t = σ0 / (σ0 + σ)``: EDM noise level σ to linear-path time (σ = 0 → t = 1, σ → ∞ → t = 0)."""
    return sigma0 / (sigma0 + sigma)


def t_to_sigma(t: Tensor | float, sigma0: float = 1.0) -> Tensor | float:
    """``σ = σ0 (1 - t) / t``, the inverse of :func:`sigma_to_t`."""
    return sigma0 * (1 - t) / t


def edm_to_linear(x_sigma: Tensor, sigma: Tensor, sigma0: float = 1.0) -> Tensor:
    """``I_t = t x_σ`` with ``t = σ0/(σ0+σ)``: ``x_σ = x1 + σ z`` becomes ``(1-t) σ0 z + t x1``."""
    return bcast(sigma_to_t(sigma, sigma0), x_sigma) * x_sigma


def linear_to_edm(x_t: Tensor, t: Tensor) -> Tensor:
    """``x_σ = I_t / t``, the inverse of :func:`edm_to_linear`."""
    return x_t / bcast(t, x_t)


Denoiser = Callable[[Tensor, Tensor], Tensor]


def denoiser_to_velocity(denoiser: Denoiser, sigma0: float = 1.0) -> Callable[[Tensor, Tensor], Tensor]:
    """Linear-path velocity of an EDM denoiser ``D(x; σ)``: ``b_t(x) = (D(x/t; σ0(1-t)/t) - x) / (1-t)``.

    Proof sketch: ``E[x1 | I_t = x] = D(x/t; σ)`` and ``b = E[x1 - σ0 z | I_t = x]`` with
    ``σ0 z = (x - t x1)/(1-t)``, so ``b = (E[x1|x] - x)/(1-t)``. Undefined at t = 1 (σ = 0).
    """

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        tb = bcast(t, x)
        return (denoiser(x / tb, t_to_sigma(t, sigma0)) - x) / (1 - tb)

    return velocity


def velocity_to_denoiser(velocity: Callable[[Tensor, Tensor], Tensor], sigma0: float = 1.0) -> Denoiser:
    """EDM denoiser of a linear-path velocity, the inverse of :func:`denoiser_to_velocity`:
    ``D(x_σ; σ) = I_t + (1 - t) b_t(I_t)`` with ``t = σ0/(σ0 + σ)``, ``I_t = t x_σ``."""

    def denoiser(x_sigma: Tensor, sigma: Tensor) -> Tensor:
        t = sigma_to_t(sigma, sigma0)
        x = edm_to_linear(x_sigma, sigma, sigma0)
        return x + bcast(1 - t, x) * velocity(x, t)

    return denoiser
