"""Flow-map distillation of a velocity teacher ``b_t`` (analytic, or a trained run: ``teacher.kind: run``).

- **LMD** (Lagrangian map distillation): ``|∂_t X_{s,t}(I_s) − b_t(sg X_{s,t}(I_s))|²``; ``∂_t X`` and ``X`` come
  from one JVP with tangent (0, 0, 1).
- **EMD** (Eulerian map distillation): ``|∂_s X_{s,t}(I_s) + ∇X_{s,t}(I_s) · b_s(I_s)|²``, one JVP with tangent
  ``(dx, ds, dt) = (b_s(I_s), 1, 0)``; ``stopgrad: true`` stops the gradient of the spatial term (a second JVP).

Times: (s, t) uniform on the triangle s ≤ t (``square: true`` for backward maps too), a fraction ``eta`` on the
diagonal, where both losses reduce to flow matching on the teacher, ``|v(x, s, s) − b_s(x)|²``. The trajectory
term (``traj_frac``, :mod:`.trajectory`) regresses the samplers' steps onto RK4 solves of the teacher; its bank is
solved once.
"""

from __future__ import annotations

import torch
from pydantic import Field

from .mapbase import eulerian_loss, lagrangian_loss
from .trajectory import TrajectoryObjective, TrajectoryOptions


class DistillOptions(TrajectoryOptions):
    replay_frac: float = Field(0.0, ge=0, lt=1, description="share of the off-diagonal batch replayed from the "
                               "hardest samples (x, s, t) of earlier steps (0: none)")
    replay_size: int = Field(8192, ge=1, description="replay_frac: the samples with the largest residuals kept")


class _Distill(TrajectoryObjective):
    needs_teacher = True
    Config = DistillOptions

    def __init__(self, opts, ctx) -> None:
        if ctx.teacher is None:
            raise ValueError(f"{type(self).__name__} distills a velocity teacher; the context has none")
        if opts.replay_frac and ctx.num_classes:
            raise ValueError("replay_frac keeps unconditional samples; a class-conditional model needs replay_frac: 0")
        super().__init__(opts, ctx)
        self.register_buffer("hard_x", torch.empty(0, *ctx.shape))
        self.register_buffer("hard_st", torch.empty(0, 2))
        self.register_buffer("hard_loss", torch.empty(0))

    def velocity(self, model):
        return self.ctx.teacher

    def map_loss(self, model, batch, step):
        x0, x1, label, s, t, n_diag = self.draw(batch, step)
        xs = self.ctx.interp(x0, x1, s)
        n = self.replay(xs, s, t, n_diag)
        losses = self.residual(model, xs, s, t, label)
        if self.opts.replay_frac:
            self.keep_hardest(xs[n_diag:], s[n_diag:], t[n_diag:], losses[n_diag:].detach(), n)
        return self.combine(losses, s, t, n_diag)

    def replay(self, xs, s, t, n_diag) -> int:
        """Overwrite (in place) the first ``replay_frac`` of the off-diagonal samples with draws from the kept
        hardest ones; returns how many (none until the store holds that many)."""
        n = round(self.opts.replay_frac * (len(s) - n_diag))
        if not n or len(self.hard_loss) < n:
            return 0
        idx = torch.randperm(len(self.hard_loss), device=xs.device)[:n]
        self._drawn = idx
        xs[n_diag: n_diag + n] = self.hard_x[idx].to(xs)
        s[n_diag: n_diag + n], t[n_diag: n_diag + n] = self.hard_st[idx, 0].to(s), self.hard_st[idx, 1].to(t)
        return n

    def keep_hardest(self, xs, s, t, losses, n_drawn: int) -> None:
        """The store: the ``replay_size`` largest residuals among the kept samples (those just replayed taking their
        new residual) and this step's."""
        keep = torch.ones(len(self.hard_loss), dtype=torch.bool, device=self.hard_loss.device)
        if n_drawn:
            keep[self._drawn] = False
        x = torch.cat([self.hard_x[keep], xs.detach().to(self.hard_x)])
        st = torch.cat([self.hard_st[keep], torch.stack([s, t], 1).to(self.hard_st)])
        loss = torch.cat([self.hard_loss[keep], losses.to(self.hard_loss)])
        top = loss.topk(min(self.opts.replay_size, len(loss))).indices
        self.hard_x, self.hard_st, self.hard_loss = x[top], st[top], loss[top]

    def _load_from_state_dict(self, state_dict, prefix, *args):
        for name in ("hard_x", "hard_st", "hard_loss"):  # the store's size varies: take the saved one's
            if prefix + name in state_dict:
                setattr(self, name, state_dict[prefix + name].clone())
        super()._load_from_state_dict(state_dict, prefix, *args)


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
