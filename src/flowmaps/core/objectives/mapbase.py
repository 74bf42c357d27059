"""What every flow-map objective shares: time derivatives of ``X_{s,t}`` by forward-mode JVP, the (s, t)
sampler (uniform on the triangle's band, or logit-normal; a share ``grid_frac`` on the steps ``[k/N, (k + 1)/N]``
of the few-step samplers), the loss weights, and the split of the batch into the
diagonal ``s = t`` and the off-diagonal part.

Loss weights, on each sample's loss ``L`` (the mean square of its residual Δ over its D entries):

- adaptive (MeanFlow's): ``sg(w) · L`` with ``w = 1/(‖Δ‖² + c)^p``, ``‖Δ‖² = D · L`` (p = 0: the plain loss;
  proportional to the paper's ``sg(w) ‖Δ‖²``, by 1/D); p = 1/2 has the gradient of the pseudo-Huber loss
  ``(2/D)(sqrt(‖Δ‖² + c) − sqrt(c))``, quadratic below ``‖Δ‖ ≈ sqrt(c)`` and linear above (LMD's recipe: its
  residuals are heavy-tailed near t = 1, docs/flowmaps.md). It keeps the minimizer only where the target is
  deterministic; a diagonal that regresses the conditional velocity (``weigh_diagonal = False``: the
  self-distillations) stays unweighted, since the weighted optimum of a stochastic target is not its mean;
- learned: ``e^{−w(s,t)} L + w(s,t)`` with a small network ``w``.

Derivatives use :func:`torch.func.jvp` on ``(x, s, t) ↦ X_{s,t}(x) = x + (t − s) v_θ(x, s, t)`` in fp32 with
autocast off (mixed precision is a known cause of failed JVP-based training):

- ``∂_t X_{s,t}(x)``: tangent ``(dx, ds, dt) = (0, 0, 1)`` (Lagrangian);
- ``∂_s X_{s,t}(x) + ∇X_{s,t}(x) · b``: tangent ``(b, 1, 0)``, one JVP (Eulerian).

The network's gradients flow through the JVP's output (reverse over forward), so a loss on it trains θ.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.func import jvp

from ..models import sinusoidal
from ..nets.attention import written_out
from ..times import grid_pairs, logit_normal_times, max_gap, sample_times
from . import CouplingOptions, Loss, Objective, noise_and_data, per_sample_mse


def jvp_map(fn, x: Tensor, s: Tensor, t: Tensor, dx: Tensor | None, ds: float, dt: float,
            label: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(f(x, s, t), d/dε f(x + ε dx, s + ε ds, t + ε dt)|_{ε=0})`` for ``fn = f`` (the model, i.e. ``X_{s,t}``,
    or its ``v``), in fp32 (or the inputs' wider type) with autocast disabled and attention written out."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    x32, s32, t32 = x.to(dtype), s.to(dtype), t.to(dtype)
    dx32 = torch.zeros_like(x32) if dx is None else dx.to(dtype)
    tangents = (dx32, torch.full_like(s32, float(ds)), torch.full_like(t32, float(dt)))
    with torch.autocast(x.device.type, enabled=False), written_out():
        return jvp(lambda a, b, c: fn(a, b, c, label), (x32, s32, t32), tangents)


def lagrangian(model: nn.Module, x: Tensor, s: Tensor, t: Tensor, label: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(X_{s,t}(x), ∂_t X_{s,t}(x))``: one JVP with tangent (0, 0, 1)."""
    return jvp_map(model, x, s, t, None, 0.0, 1.0, label)


def eulerian(model: nn.Module, x: Tensor, s: Tensor, t: Tensor, b: Tensor | None,
             label: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(X_{s,t}(x), ∂_s X_{s,t}(x) + ∇X_{s,t}(x) · b)``: one JVP with tangent (b, 1, 0).

    ``b=None``: ∂_s only."""
    return jvp_map(model, x, s, t, b, 1.0, 0.0, label)


def eulerian_residual(model: nn.Module, x: Tensor, s: Tensor, t: Tensor, b: Tensor, stopgrad: bool,
                      label: Tensor | None = None) -> Tensor:
    """``∂_s X_{s,t}(x) + ∇X_{s,t}(x) · b``, per sample a tensor like x.

    ``stopgrad=False``: one augmented JVP, gradients through both terms (the flow map matching paper's EMD).
    ``stopgrad=True``: ``∂_s X + sg(∇X · b)``, the spatial term from a second JVP without a graph.
    """
    if not stopgrad:
        return eulerian(model, x, s, t, b, label)[1]
    _, ds_x = eulerian(model, x, s, t, None, label)
    with torch.no_grad():
        _, spatial = jvp_map(model, x, s, t, b, 0.0, 0.0, label)
    return ds_x + spatial


def lagrangian_loss(model: nn.Module, x: Tensor, s: Tensor, t: Tensor, b, label: Tensor | None = None) -> Tensor:
    """Per sample ``|∂_t X_{s,t}(x) − b(sg X_{s,t}(x), t)|²``: LMD with a teacher ``b``, LSD with the model's own
    diagonal ``b(x, t) = v(x, t, t)``."""
    x_t, dt_x = lagrangian(model, x, s, t, label)
    with torch.no_grad():
        target = b(x_t.detach(), t, label)
    return per_sample_mse(dt_x, target)


def eulerian_loss(model: nn.Module, x: Tensor, s: Tensor, t: Tensor, b, stopgrad: bool,
                  label: Tensor | None = None) -> Tensor:
    """Per sample ``|∂_s X_{s,t}(x) + ∇X_{s,t}(x) · b(x, s)|²`` (see :func:`eulerian_residual`): EMD with a teacher
    ``b``, ESD with the model's own diagonal."""
    with torch.no_grad():
        b_s = b(x, s, label)
    residual = eulerian_residual(model, x, s, t, b_s, stopgrad, label)
    return per_sample_mse(residual, torch.zeros_like(residual))


class LearnedWeight(nn.Module):
    """``w(s, t)``: a small MLP on sinusoidal features of s and t − s, starting at w = 0."""

    def __init__(self, width: int = 64, time_dim: int = 16) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.net = nn.Sequential(nn.Linear(2 * time_dim, width), nn.GELU(), nn.Linear(width, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, s: Tensor, t: Tensor) -> Tensor:
        emb = torch.cat([sinusoidal(s.float(), self.time_dim), sinusoidal((t - s).float(), self.time_dim)], dim=1)
        return self.net(emb).squeeze(1)


class MapOptions(CouplingOptions):
    """Options shared by flow-map objectives (each objective picks its own defaults)."""

    eta: float = Field(0.0, ge=0, le=1, description="fraction of the batch on the diagonal s = t")
    square: bool = Field(False, description="off-diagonal times on the square (backward maps too)")
    gap_start: float = Field(1.0, gt=0, le=1, description="largest |t − s| at step 0 (annealed to 1)")
    anneal_steps: int = Field(0, ge=0, description="steps over which the largest |t − s| grows to 1")
    learned_weight: bool = Field(False, description="minimize e^{−w(s,t)} L + w(s,t) with a learned w")
    adaptive_p: float = Field(0.0, ge=0, description="adaptive weight 1/(‖Δ‖² + c)^p on each sample (0: none)")
    adaptive_c: float = Field(1e-3, gt=0, description="the adaptive weight's c")
    time: Literal["uniform", "logit_normal"] = Field("uniform", description="uniform on the triangle (or band), "
                                                     "or both times logit-normal")
    time_mean: float = Field(0.4, description="logit-normal times: mean of the normal (t = 1 is data)")
    time_std: float = Field(1.0, gt=0, description="logit-normal times: standard deviation of the normal")
    grid_frac: float = Field(0.0, ge=0, le=1, description="share of the off-diagonal batch on the steps of the "
                             "N-step samplers, N in grid_steps: s = k/N, t in (s, s + 1/N] (the 1-step map X_{0,1} "
                             "is then trained on its own slice s = 0)")
    grid_steps: list[int] = Field(default_factory=lambda: [1, 2, 4], min_length=1,
                                  description="grid_frac: the samplers' step counts N")

    @model_validator(mode="after")
    def _weights_and_times(self):
        if self.adaptive_p and self.learned_weight:
            raise ValueError("adaptive_p and learned_weight are two loss weights; choose one")
        if min(self.grid_steps) < 1:
            raise ValueError(f"grid_steps are step counts N ≥ 1, got {self.grid_steps}")
        if self.grid_frac and (self.anneal_steps or self.gap_start != 1.0):
            raise ValueError("grid_frac draws whole sampler steps, gaps up to 1 from the first step: leave "
                             "gap_start and anneal_steps unset")
        if self.time == "logit_normal" and (self.anneal_steps or self.gap_start != 1.0):
            raise ValueError("time=logit_normal draws (s, t) over the whole triangle: leave gap_start and "
                             "anneal_steps unset")
        return self


class MapObjective(Objective):
    """Base of flow-map objectives: samples (s, t), splits the batch, applies the loss weights."""

    form = "flowmap"
    jvp = True
    Config = MapOptions
    weigh_diagonal: ClassVar[bool] = True  # False: the adaptive weight skips the diagonal (a stochastic target)

    def __init__(self, opts, ctx) -> None:
        super().__init__(opts, ctx)
        self.weight = LearnedWeight() if opts.learned_weight else None

    def extra_parameters(self) -> list[nn.Parameter]:
        return [] if self.weight is None else list(self.weight.parameters())

    def band(self, step: int) -> float:
        """The largest gap ``|t − s|`` drawn at ``step``: annealed from ``gap_start`` to 1 (:func:`max_gap`)."""
        return max_gap(step, self.opts.gap_start, self.opts.anneal_steps)

    def draw_times(self, n: int, step: int, device) -> tuple[Tensor, Tensor, int]:
        """``(s, t, n_diag)``: :func:`flowmaps.core.times.sample_times` on the :meth:`band`, or
        :func:`~flowmaps.core.times.logit_normal_times`, the last ``grid_frac`` of the off-diagonal pairs from
        :func:`~flowmaps.core.times.grid_pairs` on the samplers whose steps fit in the band, all mapped affinely
        onto the teacher's range ``[t0, 1]``."""
        o, t0, band = self.opts, self.ctx.t0, self.band(step)
        if o.time == "logit_normal":
            s, t, n_diag = logit_normal_times(n, o.eta, o.time_mean, o.time_std, o.square, device)
        else:
            s, t, n_diag = sample_times(n, o.eta, band, o.square, device)
        steps = [k for k in o.grid_steps if k * band >= 1 - 1e-9]  # the samplers' steps that fit in the band
        n_grid = math.floor(o.grid_frac * (n - n_diag) + 0.5) if steps else 0
        if n_grid:
            s_grid, t_grid = grid_pairs(n_grid, steps, device)
            s, t = torch.cat([s[: n - n_grid], s_grid]), torch.cat([t[: n - n_grid], t_grid])
        return (s, t, n_diag) if not t0 else (t0 + (1 - t0) * s, t0 + (1 - t0) * t, n_diag)

    def draw(self, batch: dict[str, Tensor], step: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor, int]:
        """``(x0, x1, label, s, t, n_diag)``: the batch's noise (the pairs' ``x0`` on teacher pairs, else a fresh
        draw ``σ0 ε`` paired with the data by ``coupling``), data and labels, and its training times
        (:meth:`draw_times`)."""
        x0, x1, label = noise_and_data(batch, self.ctx.sigma0, self.opts)
        s, t, n_diag = self.draw_times(x1.shape[0], step, x1.device)
        return x0, x1, label, s, t, n_diag

    def adaptive(self, losses: Tensor) -> Tensor:
        """Each sample's loss ``L`` times ``sg(1/(‖Δ‖² + c)^p)``, ``‖Δ‖² = D · L`` (p = ``adaptive_p``; 0: ``L``)."""
        if not self.opts.adaptive_p:
            return losses
        size = math.prod(self.ctx.shape)
        return losses / (size * losses.detach() + self.opts.adaptive_c) ** self.opts.adaptive_p

    def combine(self, losses: Tensor, s: Tensor, t: Tensor, n_diag: int) -> Loss:
        """``mean_diag ℓ + mean_off ℓ`` over the parts present, ``ℓ`` the weighted loss (module docstring)."""
        logs: dict[str, float] = {}
        terms = []
        weighted = (self.adaptive(losses) if self.weigh_diagonal
                    else torch.cat([losses[:n_diag], self.adaptive(losses[n_diag:])]))
        for name, sl in (("diag", slice(0, n_diag)), ("off", slice(n_diag, None))):
            part = weighted[sl]
            if part.numel() == 0:
                continue
            logs[name] = float(losses[sl].detach().mean())
            if self.weight is not None:
                w = self.weight(s[sl], t[sl])
                part = torch.exp(-w) * part + w
            terms.append(part.mean())
        return Loss(sum(terms), logs)



def take(label: Tensor | None, sl: slice | Tensor) -> Tensor | None:
    """``label[sl]`` (a slice or indices), or None for unlabelled data."""
    return None if label is None else label[sl]
