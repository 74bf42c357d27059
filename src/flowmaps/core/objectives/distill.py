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

from pydantic import Field

from .mapbase import eulerian_loss, lagrangian_loss
from .trajectory import TrajectoryObjective, TrajectoryOptions


class _Distill(TrajectoryObjective):
    needs_teacher = True

    def __init__(self, opts, ctx) -> None:
        if ctx.teacher is None:
            raise ValueError(f"{type(self).__name__} distills a velocity teacher; the context has none")
        super().__init__(opts, ctx)

    def velocity(self, model):
        return self.ctx.teacher

    def map_loss(self, model, batch, step):
        x0, x1, label, s, t, n_diag = self.draw(batch, step)
        xs = self.ctx.interp(x0, x1, s)
        return self.combine(self.residual(model, xs, s, t, label), s, t, n_diag)


class LMD(_Distill):
    """Lagrangian map distillation."""

    def residual(self, model, x, s, t, label):
        return lagrangian_loss(model, x, s, t, self.ctx.teacher, label)


class EMD(_Distill):
    """Eulerian map distillation."""

    class Config(TrajectoryOptions):
        stopgrad: bool = Field(False, description="stop the gradient of ∇X · b (costs a second JVP)")

    def residual(self, model, x, s, t, label):
        return eulerian_loss(model, x, s, t, self.ctx.teacher, self.opts.stopgrad, label)


METHODS = {"lmd": LMD, "emd": EMD}
