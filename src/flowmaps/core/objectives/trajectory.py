"""The trajectory term shared by the map objectives that have a velocity to solve: a distilled teacher ``b_t``
(LMD, EMD, PFMM) or the model's own diagonal ``v(·, t, t)`` (LSD, ESD, PSD, FMM).

A share ``traj_frac`` of the batch is fresh noise carried through ``dx/dt = b(x, t)`` by RK4 (``traj_substeps``
steps per step of the finest sampler in ``grid_steps``); the map regresses onto the solve's own states on every
step ``[s, t] = [k/N, (k + 1)/N]`` of the N-step samplers, N in ``grid_steps``: ``|(X_{s,t}(x_s) − x_t) / (t − s)|²``,
a mean-velocity residual in the units of the map losses. It gives the long jumps their endpoint directly instead of
through the integral of ``∂_t X``.

With ``traj_bank: M`` the velocity solves M trajectories from noise of a stream of the run's seed of their own,
and each step draws its samples among them (4 · ``traj_substeps`` · lcm(``grid_steps``) evaluations of M samples
per solve; M × (lcm(``grid_steps``) + 1) states of the data's size in memory). A fixed teacher is solved once; the
model's own velocity moves, so its bank is solved again every ``traj_refresh`` steps, from the weights of that step
(the bank and its step are in the objective's state, so a resumed run draws from the same bank).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field, model_validator
from torch import Tensor

from ..sampling import steps as ode_steps
from ..sampling import uniform_grid
from . import Loss, Velocity, per_sample_mse
from .mapbase import MapObjective, MapOptions, take

BANK_STREAM = 4_000_037  # offset of the trajectory bank's seed from the run's


class TrajectoryOptions(MapOptions):
    traj_frac: float = Field(0.0, ge=0, lt=1, description="share of the batch regressed onto trajectories of the "
                             "velocity (the teacher's, or the model's own diagonal) at the samplers' steps (RK4)")
    traj_substeps: int = Field(4, ge=1, description="trajectory term: RK4 steps per step of the finest sampler in "
                               "grid_steps")
    traj_bank: int = Field(0, ge=0, description="trajectory term: trajectories solved at once and drawn from at "
                           "every step (0: fresh solves at every step); unconditional models only")
    traj_weight: float = Field(1.0, gt=0, description="trajectory term: its weight λ beside the map loss")
    traj_adaptive: bool = Field(False, description="trajectory term: weight each residual by the adaptive weight "
                                "(adaptive_p) as the map loss's")
    traj_refresh: int = Field(0, ge=0, description="trajectory bank: steps between solves of the model's own "
                              "velocity (self-distillation; 0 with a fixed teacher, solved once)")

    @model_validator(mode="after")
    def _bank_needs_the_term(self):
        if self.traj_bank and not self.traj_frac:
            raise ValueError("traj_bank stores the trajectory term's trajectories; set traj_frac > 0 or traj_bank: 0")
        if self.traj_refresh and not self.traj_bank:
            raise ValueError("traj_refresh re-solves the trajectory bank; set traj_bank > 0 or traj_refresh: 0")
        return self


def diagonal(model) -> Velocity:
    """The model's own velocity on the diagonal, ``b(x, t) = v_θ(x, t, t)``: the teacher-free objectives' teacher."""
    return lambda x, t, label=None: model.v(x, t, t, label)


@torch.no_grad()
def teacher_states(b: Velocity, z: Tensor, label: Tensor | None, grid: Tensor, every: int) -> Tensor:
    """The RK4 solve of ``dx/dt = b(x, t)`` from ``z`` over ``grid``, its states at every ``every``-th grid point:
    shape ((len(grid) − 1) // every + 1, *z.shape)."""
    states = [x for i, (x, _) in enumerate(ode_steps(lambda x, t: b(x, t, label), z, grid, "rk4")) if i % every == 0]
    return torch.stack(states)


class TrajectoryObjective(MapObjective):
    """A map objective (:meth:`map_loss`) plus the trajectory term on the last ``traj_frac`` of the batch."""

    Config = TrajectoryOptions
    own_velocity: ClassVar[bool] = False  # the solved velocity is the model's (it moves) rather than a teacher's

    def __init__(self, opts, ctx) -> None:
        super().__init__(opts, ctx)
        if opts.traj_bank and ctx.num_classes:
            raise ValueError("traj_bank stores unconditional trajectories; a class-conditional model needs "
                             "traj_bank: 0")
        if opts.traj_bank and self.own_velocity and not opts.traj_refresh:
            raise ValueError(f"{type(self).__name__} solves its own velocity, which training changes: a bank "
                             "needs traj_refresh > 0 (steps between solves)")
        if opts.traj_refresh and not self.own_velocity:
            raise ValueError(f"{type(self).__name__}'s teacher is fixed: its bank is solved once; set "
                             "traj_refresh: 0")
        self._bank: Tensor | None = None
        self._bank_step = -1

    def velocity(self, model) -> Velocity:
        """The velocity ``b(x, t, label)`` whose trajectories the term regresses onto."""
        raise NotImplementedError

    def map_loss(self, model, batch: dict[str, Tensor], step: int) -> Loss:
        raise NotImplementedError

    def loss(self, model, batch, step):
        n = batch["x1"].shape[0]
        n_traj = min(math.floor(self.opts.traj_frac * n + 0.5), n - 1)  # at least one sample for the map loss
        out = self.map_loss(model, {k: v[: n - n_traj] for k, v in batch.items()}, step)
        if not n_traj:
            return out
        traj, out.logs["traj"] = self.trajectory_loss(model, batch["x1"][n - n_traj:],
                                                      take(batch.get("label"), slice(n - n_traj, n)), step)
        return Loss(out.value + self.opts.traj_weight * traj, out.logs, out.aux)

    def trajectory_loss(self, model, like: Tensor, label: Tensor | None, step: int) -> tuple[Tensor, float]:
        """``|(X_{s,t}(x_s) − x_t)/(t − s)|²`` on trajectories of :meth:`velocity` (fresh, or drawn from the bank),
        averaged over the steps ``[k/N, (k + 1)/N]`` of each N-step sampler and then over N in ``grid_steps``: the
        term (each residual under the adaptive weight with ``traj_adaptive``) and its unweighted value."""
        o = self.opts
        finest = math.lcm(*o.grid_steps)
        grid = uniform_grid(finest * o.traj_substeps, self.ctx.t0).to(like.device)
        if o.traj_bank:  # an unconditional model (checked when built): the data's labels play no part
            bank, label = self.bank(model, grid, like, step), None
            states = bank[:, torch.randint(bank.shape[1], (like.shape[0],), device=like.device)]
        else:
            states = teacher_states(self.velocity(model), self.noise(torch.randn_like(like)), label, grid,
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
        w = w.to(per.dtype)
        term = (w * (self.adaptive(per) if o.traj_adaptive else per).mean(1)).sum()
        return term, float((w * per.detach().mean(1)).sum())

    def noise(self, e: Tensor) -> Tensor:
        """The solve's starting state for standard noise ``e``: ``σ0 e``, scaled by ``α_{t0}`` when t0 > 0."""
        z = self.ctx.sigma0 * e
        if self.ctx.t0:
            z = self.ctx.interp.alpha(torch.tensor(self.ctx.t0, dtype=torch.float64)).to(z.dtype) * z
        return z

    def bank(self, model, grid: Tensor, like: Tensor, step: int) -> Tensor:
        """The stored trajectories, solved from standard noise of the generator seeded ``seed + BANK_STREAM`` (a
        stream apart from the sampling noise of any small seed) at the first call, and again at every multiple of
        ``traj_refresh`` steps for the model's own velocity: shape (states, ``traj_bank``, *data shape)."""
        o, every = self.opts, self.opts.traj_substeps
        due = step - step % o.traj_refresh if o.traj_refresh else 0
        if self._bank is not None and self._bank_step == due:
            self._bank = self._bank.to(like.device)  # a no-op but after loading a checkpoint
            return self._bank
        gen = torch.Generator().manual_seed(self.ctx.seed + BANK_STREAM)
        e = torch.randn(o.traj_bank, *like.shape[1:], generator=gen)
        bank = like.new_empty(((len(grid) - 1) // every + 1, *e.shape))
        b = self.velocity(model)
        chunk = max(like.shape[0], 16384 // like[0].numel())  # thousands of low-dimensional samples a solve
        for a in range(0, o.traj_bank, chunk):
            bank[:, a: a + chunk] = teacher_states(b, self.noise(e[a: a + chunk].to(like)), None, grid, every)
        self._bank, self._bank_step = bank, due
        return bank

    # A refreshed bank depends on the weights of its step, which a resumed run no longer has: it is checkpointed.
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.opts.traj_refresh and self._bank is not None:
            destination[prefix + "traj_bank"] = self._bank
            destination[prefix + "traj_bank_step"] = torch.tensor(self._bank_step)

    def _load_from_state_dict(self, state_dict, prefix, *args):
        bank, bank_step = state_dict.pop(prefix + "traj_bank", None), state_dict.pop(prefix + "traj_bank_step", None)
        if bank is not None and bank_step is not None:
            self._bank, self._bank_step = bank.clone(), int(bank_step)
        super()._load_from_state_dict(state_dict, prefix, *args)
