"""The flow-map wrapper: every model is ``X_{s,t}(x) = x + (t - s) v_θ(x, s, t)``.

``form`` says which part of the (s, t) square a network was trained on:

- ``velocity``: the diagonal, ``v(x, t, t) = b_t(x)`` (flow matching, EDM teachers); a step is an Euler step;
- ``flowmap``: the triangle s ≤ t (or the square), a step is ``X_{s,u}``;
- ``endpoint``: the edge t = 1, ``f(x, s) = X_{s,1}(x)`` (lines matching, consistency models); a step follows
  the straight line to the predicted endpoint, ``X_{s,u}(x) = x + (u - s)(f(x, s) - x)/(1 - s)``.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import Tensor, nn

from .options import Options
from .paths import Interpolant, bcast

FORMS = ("velocity", "flowmap", "endpoint")


class ModelOptions(Options):
    """What every network shares: the time embedding and the classes of a class-conditional model."""

    time_dim: int = Field(32, ge=2, description="sinusoidal features per time (s and t − s)")
    max_freq: float = Field(1000.0, ge=1, description="largest time-embedding frequency over π (flow maps: small)")
    num_classes: int = Field(0, ge=0, description="classes of a class-conditional model (0: unconditional)")
    cond_drop: float = Field(0.0, ge=0, lt=1, description="label dropout for classifier-free guidance: each "
                             "training label becomes the null class ∅ (index num_classes) with this probability")

    @property
    def label_embeddings(self) -> int:
        """Rows of the label embedding: the classes, plus the null class ∅ when trained with label dropout."""
        return self.num_classes + (self.num_classes > 0 and self.cond_drop > 0)


def drop_labels(label: Tensor, p: float, null_class: int) -> Tensor:
    """Label dropout: each label becomes ``null_class`` with probability p (global RNG)."""
    return torch.where(torch.rand(label.shape, device=label.device) < p, torch.full_like(label, null_class), label)


def sinusoidal(tau: Tensor, dim: int, max_freq: float = 1000.0) -> Tensor:
    """``[sin(ω_k τ), cos(ω_k τ)]`` with ω_k = π · F^{k/(dim/2 - 1)}, F = ``max_freq``: periods from 2 down to 2/F.

    ``∂_τ`` of the embedding grows like π F, so flow maps trained through time derivatives (JVP losses) use a
    small F (``model.max_freq``).
    """
    half = dim // 2
    omega = math.pi * torch.logspace(0, math.log10(max_freq), half, device=tau.device, dtype=tau.dtype)
    arg = tau[:, None] * omega[None]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


class FlowMap(nn.Module):
    """Preconditioned two-time model around a network ``net(x_in, emb, label) -> out``.

    ``v(x, s, t) = c_out · net(c_in(s) x, [emb(s), emb(t - s)])`` with ``c_in(s) = 1/sqrt(α_s² σ0² + β_s² σ_d²)``
    (unit-variance inputs) and ``c_out = sqrt(σ0² + σ_d²)`` (the scale of ``İ``). ``null_class``: the network's
    last label embedding is the null class ∅ of classifier-free guidance (label ``num_classes``).
    """

    def __init__(self, net: nn.Module, interp: Interpolant, sigma0: float = 1.0, sigma_data: float = 1.0,
                 form: str = "flowmap", time_dim: int = 32, max_freq: float = 1000.0, null_class: bool = False) -> None:
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"unknown model form {form!r}; choose one of {', '.join(FORMS)}")
        self.net, self.interp, self.form, self.time_dim, self.max_freq = net, interp, form, time_dim, float(max_freq)
        self.sigma0, self.sigma_data = float(sigma0), float(sigma_data)
        self.c_out = math.sqrt(sigma0**2 + sigma_data**2)
        self.null_class = bool(null_class)

    @property
    def emb_dim(self) -> int:
        return 2 * self.time_dim

    @property
    def num_classes(self) -> int:
        """Classes of a class-conditional network (its label embedding, less ∅), 0 for an unconditional one."""
        emb = getattr(self.net, "label_emb", None)
        return emb.num_embeddings - self.null_class if emb is not None else 0

    def v(self, x: Tensor, s: Tensor, t: Tensor, label: Tensor | None = None) -> Tensor:
        """The network's (average) velocity ``v_θ(x, s, t)``."""
        c_in = 1.0 / self.interp.std(s, self.sigma0, self.sigma_data)
        f = self.max_freq
        emb = torch.cat([sinusoidal(s, self.time_dim, f), sinusoidal(t - s, self.time_dim, f)], dim=1)
        return self.c_out * self.net(bcast(c_in, x) * x, emb, label)

    def forward(self, x: Tensor, s: Tensor, t: Tensor, label: Tensor | None = None) -> Tensor:
        """``X_{s,t}(x) = x + (t - s) v_θ(x, s, t)``."""
        return x + bcast(t - s, x) * self.v(x, s, t, label)

    def velocity(self, x: Tensor, t: Tensor, label: Tensor | None = None) -> Tensor:
        """The model's ODE velocity at (x, t): ``v(x, t, t)``, or an endpoint model's line direction ``v(x, t, 1)``."""
        return self.v(x, t, torch.ones_like(t) if self.form == "endpoint" else t, label)

    def endpoint(self, x: Tensor, s: Tensor, label: Tensor | None = None) -> Tensor:
        """``X_{s,1}(x)``: for an endpoint model ``f(x, s)``."""
        return self(x, s, torch.ones_like(s), label)

    def step(self, x: Tensor, s: Tensor, u: Tensor, label: Tensor | None = None) -> Tensor:
        """One sampler step from time s to u, by ``form`` (Euler step, flow map, or along the line)."""
        if self.form == "flowmap":
            return self(x, s, u, label)
        return x + bcast(u - s, x) * self.velocity(x, s, label)
