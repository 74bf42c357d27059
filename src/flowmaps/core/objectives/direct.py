"""Flow maps trained without a flow-map teacher.

- **FMM** (flow map matching, from data only), over the full square of (s, t) so the backward map is learned
  too: with ``y = X_{t,s}(I_t)``, ``|∂_t X_{s,t}(y) − İ_t|² + |X_{s,t}(y) − I_t|²`` (``∂_t`` at fixed y; one JVP
  with tangent (0, 0, 1) gives both ``X_{s,t}(y)`` and ``∂_t X_{s,t}(y)``). Its diagonal ``s = t`` is flow
  matching's loss on ``v(·, t, t)``, so the trajectory term may solve that velocity as the self-distillations do
  (``traj_refresh`` steps between solves of the bank).
- **PFMM** (progressive flow map matching): ``|X_{s,t}(I_s) − X̌_{u,t}(X̌_{s,u}(I_s))|²``, ``u = (s + t)/2``, where
  ``X̌`` is a frozen map valid on ``|t − s| ≤ δ``. Round 0 uses one step of the velocity teacher by ``base``
  (Euler, ``X̌_{s,u}(x) = x + (u − s) b_s(x)``, as in the paper; Heun; RK4), with ``δ = 2^{−rounds}``; each round
  trains on ``|t − s| ≤ 2δ``, then freezes a copy of the model and doubles δ, reaching the whole triangle after
  ``rounds`` rounds of ``round_steps`` training steps (the last round runs to the end of training). ``X_{0,1}``
  thus composes ``2^{rounds}`` steps of ``base``: the teacher solved by them is the best it can reach. Times are
  uniform on the band; the ``grid_frac`` share lies on the few-step samplers' steps that fit in it, so the last
  rounds train the long jumps ``X_{0,1}``, ``X_{0,1/2}``, … that the uniform draw all but misses (its gap has
  density ``∝ 1 − (t − s)``). The trajectory term (``traj_frac``, :mod:`.trajectory`) regresses the samplers' steps
  onto RK4 solves of the teacher: their endpoints then come from the teacher, not only from the compositions of
  frozen copies, whose fit errors add up over the rounds. ``residual: velocity`` divides the residual by
  ``(t − s)²``, the mean velocity's (and that term's) units: the same minimizer, short gaps weighted as long ones.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from ..sampling import step as ode_step
from . import per_sample_mse
from .mapbase import lagrangian, take
from .trajectory import TrajectoryObjective, TrajectoryOptions, diagonal


class FMM(TrajectoryObjective):
    """Teacher-free flow map matching on the square of (s, t)."""

    own_velocity = True

    class Config(TrajectoryOptions):
        square: bool = True

    def velocity(self, model):
        return diagonal(model)

    def map_loss(self, model, batch, step):
        x0, x1, label, s, t, n_diag = self.draw(batch, step)
        interp = self.ctx.interp
        x_t, dx_t = interp(x0, x1, t), interp.derivative(x0, x1, t)
        y = model(x_t, t, s, label)  # X_{t,s}(I_t): the backward map when s < t
        back, dt_back = lagrangian(model, y, s, t, label)
        losses = per_sample_mse(dt_back, dx_t) + per_sample_mse(back, x_t)
        return self.combine(losses, s, t, n_diag)


class PFMM(TrajectoryObjective):
    """Progressive flow map matching: a frozen earlier copy, its valid range doubled each round."""

    needs_teacher = True
    jvp = False

    class Config(TrajectoryOptions):
        rounds: int = Field(4, ge=1, description="doublings of δ until the whole triangle is covered")
        round_steps: int = Field(1000, ge=1, description="training steps per round")
        base: Literal["euler", "heun", "rk4"] = Field("euler", description="round 0's X̌_{s,u}: one step of the "
                                                      "teacher by this solver (1, 2 or 4 evaluations)")
        residual: Literal["position", "velocity"] = Field("position", description="the paper's |X − X̌∘X̌|², or "
                                                          "the mean-velocity |(X − X̌∘X̌)/(t − s)|², in the units of "
                                                          "the trajectory term")
        keep_base: bool = Field(False, description="in every round, pieces X̌_{s,u} no longer than round 0's δ "
                                "are the teacher's base step, not the frozen copy: the short maps stay tied to "
                                "the teacher")

        @model_validator(mode="after")
        def _own_range(self):
            if self.square or self.anneal_steps or self.gap_start != 1.0 or self.time != "uniform":
                raise ValueError("pfmm sets its own range of |t - s| on the triangle: leave square, "
                                 "gap_start, anneal_steps and time unset")
            return self

    def __init__(self, opts, ctx) -> None:
        super().__init__(opts, ctx)
        self._frozen: list[torch.nn.Module] = []  # not a submodule: saved through get_extra_state
        self.round = 0
        self._resumed: dict[str, Any] | None = None

    @property
    def frozen(self) -> torch.nn.Module | None:
        return self._frozen[0] if self._frozen else None

    def _round(self, model, step: int) -> int:
        """The round of ``step``; at a new round (or after a resume) freeze / restore the copy ``X̌``."""
        r = min(step // self.opts.round_steps, self.opts.rounds - 1)
        if r > 0 and (self.frozen is None or r != self.round):
            self._frozen = [copy.deepcopy(model).requires_grad_(False).eval()]
            if self._resumed is not None and int(self._resumed["round"]) == r:
                self._frozen[0].load_state_dict(self._resumed["frozen"])
            self._resumed = None
        self.round = r
        return r

    def band(self, step: int) -> float:
        """This round's band ``|t − s| ≤ 2δ``; the ``grid_frac`` share takes the samplers' steps that fit in it."""
        return min(1.0, 2.0 ** (self.round + 1 - self.opts.rounds))

    def frozen_step(self, x, s, u, label):
        """``X̌_{s,u}(x)``: a step of the teacher by ``base`` in round 0, the frozen model afterwards."""
        def base(x, s, u, label):
            return ode_step(lambda y, r: self.ctx.teacher(y, r, label), x, s, u, self.opts.base)

        if self.frozen is None:
            return base(x, s, u, label)
        out = self.frozen(x, s, u, label)
        if self.opts.keep_base:
            delta0 = (1 - self.ctx.t0) * 2.0 ** -self.opts.rounds  # round 0's δ, on the teacher's time range
            short = ((u - s) <= delta0 * (1 + 1e-6)).nonzero().squeeze(1)
            if short.numel():
                out[short] = base(x[short], s[short], u[short], take(label, short))
        return out

    def velocity(self, model):
        return self.ctx.teacher

    def map_loss(self, model, batch, step):
        r = self._round(model, step)
        x0, x1, label, s, t, n_diag = self.draw(batch, step)
        u = 0.5 * (s + t)
        xs = self.ctx.interp(x0, x1, s)
        with torch.no_grad():
            target = self.frozen_step(self.frozen_step(xs, s, u, label), u, t, label)
        losses = per_sample_mse(model(xs, s, t, label), target)
        if self.opts.residual == "velocity":  # ÷ (t − s)²; the diagonal's residual is 0 at any scale
            losses = losses / (t - s).clamp_min(1e-6).to(losses.dtype) ** 2
        out = self.combine(losses, s, t, n_diag)
        out.logs["round"] = float(r)
        return out

    def get_extra_state(self) -> dict[str, Any]:
        """The round and the frozen copy ``X̌`` (none in round 0), checkpointed with the objective."""
        if self.frozen is None:
            return {}
        frozen = {k: v.clone() for k, v in self.frozen.state_dict().items()}
        return {"round": torch.tensor(self.round), "frozen": frozen}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._resumed = state or None  # the copy is rebuilt from the model at the next step, then loaded
        if state:
            self.round = int(state["round"])


METHODS = {"fmm": FMM, "pfmm": PFMM}
