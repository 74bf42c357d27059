"""Flow-map distillation of a velocity teacher ``b_t`` (analytic, or a trained run: ``teacher.kind: run``).

- **LMD** (Lagrangian map distillation): ``|∂_t X_{s,t}(I_s) − b_t(sg X_{s,t}(I_s))|²``; ``∂_t X`` and ``X`` come
  from one JVP with tangent (0, 0, 1).
- **EMD** (Eulerian map distillation): ``|∂_s X_{s,t}(I_s) + ∇X_{s,t}(I_s) · b_s(I_s)|²``, one JVP with tangent
  ``(dx, ds, dt) = (b_s(I_s), 1, 0)``; ``stopgrad: true`` stops the gradient of the spatial term (a second JVP).

Times: (s, t) uniform on the triangle s ≤ t (``square: true`` for backward maps too), a fraction ``eta`` on the
diagonal, where both losses reduce to flow matching on the teacher, ``|v(x, s, s) − b_s(x)|²``.

Trajectory term (``traj_frac`` of the batch): fresh noise is carried through the teacher's ODE by RK4
(``traj_substeps`` steps per step of the finest sampler in ``grid_steps``) and the map regresses onto the solve's
own states on every step ``[s, t] = [k/N, (k + 1)/N]`` of the N-step samplers, N in ``grid_steps``:
``|(X_{s,t}(x_s) − x_t) / (t − s)|²``, a mean-velocity residual in the units of the loss above. It gives the
long jumps their endpoint directly instead of through the integral of ``∂_t X``. With ``traj_bank: M`` the teacher
solves M trajectories once, from noise of a stream of the run's seed of their own, and each step draws its
samples among them: the step no longer pays for the solves (4 · ``traj_substeps`` · lcm(``grid_steps``) teacher
evaluations of M samples once; M × (lcm(``grid_steps``) + 1) states of the data's size in memory).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, model_validator
from torch import Tensor

from ..sampling import steps as ode_steps
from ..sampling import uniform_grid
from . import Loss, per_sample_mse
from .mapbase import MapObjective, MapOptions, eulerian_loss, lagrangian_loss, take

BANK_STREAM = 4_000_037  # offset of the trajectory bank's seed from the run's


class DistillOptions(MapOptions):
    traj_frac: float = Field(0.0, ge=0, lt=1, description="share of the batch regressed onto the teacher's own "
                             "trajectories at the samplers' steps (RK4 solves of the teacher)")
    traj_substeps: int = Field(4, ge=1, description="trajectory term: RK4 steps of the teacher per step of the "
                               "finest sampler in grid_steps")
    traj_bank: int = Field(0, ge=0, description="trajectory term: teacher trajectories solved once, at the first "
                           "step, and drawn from at every step (0: fresh solves at every step); unconditional "
                           "models only")

    @model_validator(mode="after")
    def _bank_needs_the_term(self):
        if self.traj_bank and not self.traj_frac:
            raise ValueError("traj_bank stores the trajectory term's trajectories; set traj_frac > 0 or traj_bank: 0")
        return self


@torch.no_grad()
def teacher_states(b, z: Tensor, label: Tensor | None, grid: Tensor, every: int) -> Tensor:
    """The RK4 solve of ``dx/dt = b(x, t)`` from ``z`` over ``grid``, its states at every ``every``-th grid point:
    shape ((len(grid) − 1) // every + 1, *z.shape)."""
    states = [x for i, (x, _) in enumerate(ode_steps(lambda x, t: b(x, t, label), z, grid, "rk4")) if i % every == 0]
    return torch.stack(states)


class _Distill(MapObjective):
    needs_teacher = True
    Config = DistillOptions

    def __init__(self, opts, ctx) -> None:
        super().__init__(opts, ctx)
        if ctx.teacher is None:
            raise ValueError(f"{type(self).__name__} distills a velocity teacher; the context has none")
        if opts.traj_bank and ctx.num_classes:
            raise ValueError("traj_bank stores unconditional trajectories; a class-conditional model needs "
                             "traj_bank: 0")
        self._bank: Tensor | None = None

    def loss(self, model, batch, step):
        n = batch["x1"].shape[0]
        n_traj = min(math.floor(self.opts.traj_frac * n + 0.5), n - 1)  # at least one sample for the map loss
        head = {k: v[: n - n_traj] for k, v in batch.items()}
        x0, x1, label, s, t, n_diag = self.draw(head, step)
        xs = self.ctx.interp(x0, x1, s)
        out = self.combine(self.residual(model, xs, s, t, label), s, t, n_diag)
        if not n_traj:
            return out
        traj = self.trajectory_loss(model, batch["x1"][n - n_traj:], take(batch.get("label"), slice(n - n_traj, n)))
        out.logs["traj"] = float(traj.detach())
        return Loss(out.value + traj, out.logs, out.aux)

    def trajectory_loss(self, model, like: Tensor, label: Tensor | None) -> Tensor:
        """``|(X_{s,t}(x_s) − x_t)/(t − s)|²`` on teacher trajectories (fresh, or drawn from the bank), averaged
        over the steps ``[k/N, (k + 1)/N]`` of each N-step sampler and then over N in ``grid_steps``."""
        o = self.opts
        finest = math.lcm(*o.grid_steps)
        grid = uniform_grid(finest * o.traj_substeps, self.ctx.t0).to(like.device)
        if o.traj_bank:  # an unconditional model (checked when built): the data's labels play no part
            bank, label = self.bank(grid, like), None
            states = bank[:, torch.randint(bank.shape[1], (like.shape[0],), device=like.device)]
        else:
            states = teacher_states(self.ctx.teacher, self.noise(torch.randn_like(like)), label, grid,
                                    o.traj_substeps)  # at k / finest
        times = grid[:: o.traj_substeps].to(like.dtype)
        # every sampler step (i, j) on the finest grid, weighted 1/N within N and 1/|grid_steps| over N: one forward
        steps = [(k * (finest // n), (k + 1) * (finest // n), 1 / (n * len(o.grid_steps)))
                 for n in o.grid_steps for k in range(n)]
        i, j, w = (torch.tensor(c, device=like.device) for c in zip(*steps))
        m = like.shape[0]
        x_s, x_t = states[i].flatten(0, 1), states[j].flatten(0, 1)  # step-major: row = step · m + sample
        s, t = times[i].repeat_interleave(m), times[j].repeat_interleave(m)
        lab = None if label is None else label.repeat(len(steps))
        gap = (t - s).view(-1, *[1] * (like.dim() - 1))
        per = per_sample_mse((model(x_s, s, t, lab) - x_t) / gap, torch.zeros_like(x_t)).view(len(steps), m)
        return (w.to(per.dtype) * per.mean(1)).sum()

    def noise(self, e: Tensor) -> Tensor:
        """The teacher's starting state for standard noise ``e``: ``σ0 e``, scaled by ``α_{t0}`` when t0 > 0."""
        z = self.ctx.sigma0 * e
        if self.ctx.t0:
            z = self.ctx.interp.alpha(torch.tensor(self.ctx.t0, dtype=torch.float64)).to(z.dtype) * z
        return z

    def bank(self, grid: Tensor, like: Tensor) -> Tensor:
        """The stored trajectories, solved at the first call from standard noise of the generator seeded
        ``seed + BANK_STREAM`` (a stream apart from the sampling noise of any small seed): shape
        (states, ``traj_bank``, *data shape)."""
        if self._bank is None:
            o, every = self.opts, self.opts.traj_substeps
            gen = torch.Generator().manual_seed(self.ctx.seed + BANK_STREAM)
            e = torch.randn(o.traj_bank, *like.shape[1:], generator=gen)
            self._bank = like.new_empty(((len(grid) - 1) // every + 1, *e.shape))
            chunk = max(like.shape[0], 16384 // like[0].numel())  # thousands of low-dimensional samples a solve
            for a in range(0, o.traj_bank, chunk):
                z = self.noise(e[a: a + chunk].to(like))
                self._bank[:, a: a + chunk] = teacher_states(self.ctx.teacher, z, None, grid, every)
        return self._bank


class LMD(_Distill):
    """Lagrangian map distillation."""

    def residual(self, model, x, s, t, label):
        return lagrangian_loss(model, x, s, t, self.ctx.teacher, label)


class EMD(_Distill):
    """Eulerian map distillation."""

    class Config(DistillOptions):
        stopgrad: bool = Field(False, description="stop the gradient of ∇X · b (costs a second JVP)")

    def residual(self, model, x, s, t, label):
        return eulerian_loss(model, x, s, t, self.ctx.teacher, self.opts.stopgrad, label)


METHODS = {"lmd": LMD, "emd": EMD}
