"""2-D toy distributions, sampled fresh on every call from an optional ``torch.Generator``, and their source."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from ..core.options import Options
from .sources import Source

Sampler = Callable[..., torch.Tensor]


def _device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def checker(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform on the 8 cells with ``(ix + iy) % 2 == 0`` of a 4x4 grid of side-0.5 cells on [-1, 1]^2.

    Cell ``k`` in 0..7 has ``iy = k // 2`` and ``ix = 2 (k % 2) + iy % 2``; ``x = -1 + 0.5 (i + u)``, ``u ~ U[0, 1)``.
    """
    dev = _device(generator)
    k = torch.randint(0, 8, (n,), generator=generator, device=dev)
    iy = k // 2
    ix = 2 * (k % 2) + iy % 2
    cell = torch.stack([ix, iy], dim=1).float()
    u = torch.rand(n, 2, generator=generator, device=dev)
    return -1.0 + 0.5 * (cell + u)


def eight_gaussians(
    n: int, generator: torch.Generator | None = None, radius: float = 1.0, std: float = 0.1
) -> torch.Tensor:
    """Equal mixture of N(r (cos θ_k, sin θ_k), std² I) with θ_k = k π / 4, k = 0..7."""
    dev = _device(generator)
    theta = torch.randint(0, 8, (n,), generator=generator, device=dev).float() * (math.pi / 4)
    centers = radius * torch.stack([theta.cos(), theta.sin()], dim=1)
    return centers + std * torch.randn(n, 2, generator=generator, device=dev)


def moons(n: int, generator: torch.Generator | None = None, noise: float = 0.05) -> torch.Tensor:
    """Two interleaved half circles, θ ~ U[0, π]: upper (cos θ, sin θ), lower (1 - cos θ, 1/2 - sin θ).

    Mapped by ``(p - (1/2, 1/4)) / 1.5`` onto x ∈ [-1, 1], y ∈ [-1/2, 1/2], then N(0, noise² I) is added.
    """
    dev = _device(generator)
    theta = math.pi * torch.rand(n, generator=generator, device=dev)
    lower = torch.randint(0, 2, (n,), generator=generator, device=dev).bool()
    x = torch.where(lower, 1.0 - theta.cos(), theta.cos())
    y = torch.where(lower, 0.5 - theta.sin(), theta.sin())
    p = (torch.stack([x, y], dim=1) - torch.tensor([0.5, 0.25], device=dev)) / 1.5
    return p + noise * torch.randn(n, 2, generator=generator, device=dev)


def spirals(
    n: int, generator: torch.Generator | None = None, turns: float = 1.5, noise: float = 0.03
) -> torch.Tensor:
    """Two interleaved spirals ``±(θ / θ_max) (-cos θ, sin θ)`` with θ = θ_max √u, θ_max = 2π turns.

    The radius reaches 1 at θ_max; N(0, noise² I) is added.
    """
    dev = _device(generator)
    theta_max = 2 * math.pi * turns
    theta = theta_max * torch.rand(n, generator=generator, device=dev).sqrt()
    sign = 2.0 * torch.randint(0, 2, (n, 1), generator=generator, device=dev).float() - 1.0
    p = sign * (theta / theta_max).unsqueeze(1) * torch.stack([-theta.cos(), theta.sin()], dim=1)
    return p + noise * torch.randn(n, 2, generator=generator, device=dev)


def rings(n: int, generator: torch.Generator | None = None, radii: tuple[float, ...] = (0.4, 1.0),
          noise: float = 0.03) -> torch.Tensor:
    """Concentric rings: radius ``r_k`` (chosen with probability ∝ r_k, so the density along each ring is the
    same), angle ``θ ~ U[0, 2π)``, then N(0, noise² I)."""
    dev = _device(generator)
    r = torch.tensor(radii, device=dev)
    k = torch.multinomial(r / r.sum(), n, replacement=True, generator=generator)
    theta = 2 * math.pi * torch.rand(n, generator=generator, device=dev)
    p = r[k].unsqueeze(1) * torch.stack([theta.cos(), theta.sin()], dim=1)
    return p + noise * torch.randn(n, 2, generator=generator, device=dev)


def wave(n: int, generator: torch.Generator | None = None, noise: float = 0.02) -> torch.Tensor:
    """A thin curve: ``(x, 0.6 sin(2.5 π x))`` with ``x ~ U[−1, 1]``, then N(0, noise² I)."""
    dev = _device(generator)
    x = 2 * torch.rand(n, generator=generator, device=dev) - 1
    p = torch.stack([x, 0.6 * torch.sin(2.5 * math.pi * x)], dim=1)
    return p + noise * torch.randn(n, 2, generator=generator, device=dev)


_CLUSTERS = (  # (weight, center x, center y, std): very different scales and weights
    (0.45, -0.45, -0.35, 0.25), (0.25, 0.55, 0.55, 0.08), (0.15, 0.6, -0.55, 0.03), (0.1, -0.55, 0.65, 0.12),
    (0.05, 0.05, 0.1, 0.015))


def clusters(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Five Gaussian clusters of weights 0.45 … 0.05 and standard deviations 0.25 … 0.015."""
    dev = _device(generator)
    c = torch.tensor(_CLUSTERS, device=dev)
    k = torch.multinomial(c[:, 0], n, replacement=True, generator=generator)
    return c[k, 1:3] + c[k, 3:4] * torch.randn(n, 2, generator=generator, device=dev)


TOY: dict[str, Sampler] = {
    "checker": checker,
    "8gaussians": eight_gaussians,
    "moons": moons,
    "spirals": spirals,
    "rings": rings,
    "wave": wave,
    "clusters": clusters,
}

_BOUNDS: dict[str, tuple[float, float]] = {
    "checker": (-1.0, 1.0),
    "8gaussians": (-1.5, 1.5),
    "moons": (-1.25, 1.25),
    "spirals": (-1.25, 1.25),
    "rings": (-1.25, 1.25),
    "wave": (-1.25, 1.25),
    "clusters": (-1.5, 1.5),
}


def _check_name(name: str) -> None:
    if name not in TOY:
        raise ValueError(f"unknown toy set {name!r}; valid names: {', '.join(sorted(TOY))}")


def sample_toy(name: str, n: int, generator: torch.Generator | None = None, **kw: float) -> torch.Tensor:
    """Draw ``n`` fresh float32 samples of shape (n, 2) from toy set ``name`` (``kw`` go to its sampler)."""
    _check_name(name)
    return TOY[name](n, generator, **kw).float()


def toy_bounds(name: str) -> tuple[float, float]:
    """Square range ``(lo, hi)`` covering the support of ``name`` at default parameters, for plots and histograms."""
    _check_name(name)
    return _BOUNDS[name]


class ToySource(Source):
    """Fresh draws of a toy set; its standard deviation is measured on 100,000 draws."""

    def __init__(self, name: str) -> None:
        self.name, self.shape, self.bounds = name, (2,), toy_bounds(name)
        self.sigma_data = float(sample_toy(name, 100_000, torch.Generator().manual_seed(0)).std())

    def sample(self, n: int) -> dict[str, Tensor]:
        return {"x1": sample_toy(self.name, n)}

    def reference(self, n: int, seed: int = 1234) -> Tensor:
        return sample_toy(self.name, n, torch.Generator().manual_seed(seed))


class ToyData(Options):
    """``data.kind: toy`` — a 2-D set by ``name``."""

    kind: Literal["toy"] = "toy"
    name: Literal["checker", "8gaussians", "moons", "spirals", "rings", "wave", "clusters"] = "checker"

    def build(self, nested: Callable[[Any], Source]) -> Source:
        return ToySource(self.name)
