"""Flow maps trained without a flow-map teacher.

- **FMM** (flow map matching, from data only), over the full square of (s, t) so the backward map is learned
  too: with ``y = X_{t,s}(I_t)``, ``|∂_t X_{s,t}(y) − İ_t|² + |X_{s,t}(y) − I_t|²`` (``∂_t`` at fixed y; one JVP
  with tangent (0, 0, 1) gives both ``X_{s,t}(y)`` and ``∂_t X_{s,t}(y)``).
- **PFMM** (progressive flow map matching): ``|X_{s,t}(I_s) − X̌_{u,t}(X̌_{s,u}(I_s))|²``, ``u = (s + t)/2``, where
  ``X̌`` is a frozen map valid on ``|t − s| ≤ δ``. Round 0 uses one Euler step of the velocity teacher,
  ``X̌_{s,u}(x) = x + (u − s) b_s(x)``, with ``δ = 2^{−rounds}``; each round trains on ``|t − s| ≤ 2δ``, then
  freezes a copy of the model and doubles δ, reaching the whole triangle after ``rounds`` rounds of
  ``round_steps`` training steps (the last round runs to the end of training).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from pydantic import Field

from ..config import ConfigError
from ..times import sample_times
from ..paths import bcast
from .mapbase import MapObjective, MapOptions, lagrangian, per_sample


class FMM(MapObjective):
    """Teacher-free flow map matching on the square of (s, t)."""

    class Config(MapOptions):
        square: bool = True

    def loss(self, model, batch, step):
        x1, label = batch["x1"], batch.get("label")
        x0 = self.noise(x1, batch)
        s, t, n_diag = self.times(x1.shape[0], step, x1.device)
        interp = self.ctx.interp
        x_t, dx_t = interp(x0, x1, t), interp.velocity(x0, x1, t)
        y = model(x_t, t, s, label)  # X_{t,s}(I_t): the backward map when s < t
        back, dt_back = lagrangian(model, y, s, t, label)
        losses = per_sample(dt_back, dx_t) + per_sample(back, x_t)
        return self.combine(losses, s, t, n_diag)


class PFMM(MapObjective):
    """Progressive flow map matching: a frozen earlier copy, its valid range doubled each round."""

    needs_teacher = True

    class Config(MapOptions):
        rounds: int = Field(4, ge=1, description="doublings of δ until the whole triangle is covered")
        round_steps: int = Field(1000, ge=1, description="training steps per round")

    def __init__(self, opts, ctx) -> None:
        super().__init__(opts, ctx)
        if opts.square or opts.anneal_steps:
            raise ConfigError("pfmm sets its own range of |t - s| on the triangle: leave square and anneal_steps unset")
        self._frozen: list[torch.nn.Module] = []  # kept out of state_dict: saved by train_state
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

    def frozen_step(self, x, s, u, label):
        """``X̌_{s,u}(x)``: an Euler step of the teacher in round 0, the frozen model afterwards."""
        if self.frozen is None:
            if self.ctx.teacher is None:
                raise ConfigError("pfmm starts from one Euler step of a velocity teacher: set teacher.kind")
            return x + bcast(u - s, x) * self.ctx.teacher(x, s, label)
        return self.frozen(x, s, u, label)

    def loss(self, model, batch, step):
        x1, label = batch["x1"], batch.get("label")
        x0 = self.noise(x1, batch)
        r = self._round(model, step)
        delta = min(1.0, 2.0 ** (r + 1 - self.opts.rounds))
        s, t, n_diag = sample_times(x1.shape[0], self.opts.eta, delta, False, x1.device)
        u = 0.5 * (s + t)
        xs = self.ctx.interp(x0, x1, s)
        with torch.no_grad():
            target = self.frozen_step(self.frozen_step(xs, s, u, label), u, t, label)
        losses = per_sample(model(xs, s, t, label), target)
        loss, logs = self.combine(losses, s, t, n_diag)
        return loss, {**logs, "round": float(r)}

    def train_state(self) -> dict[str, Any]:
        if self.frozen is None:
            return {}
        frozen = {k: v.clone() for k, v in self.frozen.state_dict().items()}
        return {"round": torch.tensor(self.round), "frozen": frozen}

    def load_train_state(self, state: dict[str, Any]) -> None:
        self._resumed = state or None
        if state:
            self.round = int(state["round"])


METHODS = {"fmm": FMM, "pfmm": PFMM}
