"""Self-distillation: the flow map is its own teacher (no pretrained velocity).

A fraction ``eta`` (0.75) of each batch trains the diagonal by flow matching, ``|v(I_t, t, t) − İ_t|²`` (on the
batch's noise and data as ``coupling`` pairs them: LSD's recipe pairs them by minibatch OT, a target of far less
variance than independent pairs, whose noise drowned the maps' terms on held-out sets); the rest,
on ``s < t``, distills the model's own velocity ``v(·, t, t)`` into the off-diagonal map (sg = stop-gradient):

- **LSD**: ``|∂_t X_{s,t}(I_s) − sg(v(sg X_{s,t}(I_s), t, t))|²`` (one JVP, tangent (0, 0, 1));
- **ESD**: ``|∂_s X_{s,t}(I_s) + ∇X_{s,t}(I_s) · sg(v(I_s, s, s))|²``, one augmented JVP with gradients through
  both terms (``stopgrad: true``: the paper's ``sg(∇X · v)``, a second JVP; a bootstrapped target that diverged
  on held-out rings at LSD's learning rate, where the full residual, a true loss, stayed finite);
- **PSD**: ``|v(I_s, s, t) − sg((1 − γ) v(I_s, s, u) + γ v(X_{s,u}(I_s), u, t))|²``, ``u = γ s + (1 − γ) t``, with
  γ = 1/2 (**PSD-M**, midpoint) or γ ~ U[0, 1] (**PSD-U**); no derivative at all.

Each may add the trajectory term (``traj_frac``, :mod:`.trajectory`) on RK4 solves of the model's own velocity
``v(·, t, t)``: the samplers' long jumps then regress onto the trajectories of the diagonal they are built from,
not only onto its tangent; a bank of them is solved again every ``traj_refresh`` steps. In PSD's recipes (their
one-step map, composed of shorter ones, otherwise carries their summed error); before the OT coupling it made
LSD's 2-step maps worse on held-out rings and spirals (docs/flowmaps.md).

**MeanFlow** is the Eulerian form written for the average velocity ``v(x, s, t) = (X_{s,t}(x) − x)/(t − s)`` with
the conditional velocity İ_s in place of the model's: ``|v(I_s, s, t) − sg(İ_s + (t − s) d/ds v(I_s, s, t))|²``,
``d/ds v = ∂_s v + ∇v · İ_s`` by one JVP with tangent (İ_s, 1, 0); on the diagonal it is flow matching, so all
samples use the one formula. Its residual is ``−(∂_s X + ∇X · İ_s)``: the Eulerian flow-map condition. Its
paper (*Mean Flows for One-step Generative Modeling*, Geng, Deng, Bai, Kolter and He) trains it with the adaptive
loss weight and logit-normal times (:mod:`.mapbase`), options here: on the 2-D benchmarks they made the one-step
map worse (docs/benchmarks/meanflow_2d.md), so they are not the default. ``tangent_warmup: W`` scales the target's
derivative term by ``min(1, step / W)`` (the tangent warmup of *Simplifying, Stabilizing and Scaling
Continuous-Time Consistency Models*, Lu and Song): flow matching at first, MeanFlow's target from step W on.
"""

from __future__ import annotations

import torch
from pydantic import Field

from ..paths import bcast
from . import per_sample_mse
from .mapbase import MapObjective, MapOptions, eulerian_loss, jvp_map, lagrangian_loss, take
from .trajectory import TrajectoryObjective, TrajectoryOptions, diagonal


class SelfDistillOptions(TrajectoryOptions):
    eta: float = Field(0.75, ge=0, le=1, description="fraction of the batch on the diagonal s = t")


class _SelfDistill(TrajectoryObjective):
    Config = SelfDistillOptions
    own_velocity = True
    weigh_diagonal = False  # the diagonal regresses İ_s, a stochastic target: the adaptive weight is off-diagonal

    def velocity(self, model):
        return diagonal(model)

    def map_loss(self, model, batch, step):
        x0, x1, label, s, t, k = self.draw(batch, step)
        interp = self.ctx.interp
        xs = interp(x0, x1, s)
        d = slice(0, k)
        diag = per_sample_mse(model.v(xs[d], s[d], s[d], take(label, d)), interp.derivative(x0[d], x1[d], s[d]))
        o = slice(k, None)
        off = self.off_diagonal(model, xs[o], s[o], t[o], take(label, o)) if k < len(s) else diag[:0]
        return self.combine(torch.cat([diag, off]), s, t, k)


class LSD(_SelfDistill):
    """Lagrangian self-distillation."""

    def off_diagonal(self, model, x, s, t, label):
        return lagrangian_loss(model, x, s, t, diagonal(model), label)


class ESD(_SelfDistill):
    """Eulerian self-distillation."""

    class Config(SelfDistillOptions):
        stopgrad: bool = Field(False, description="stop the gradient of ∇X · v (the paper's form; a second JVP)")

    def off_diagonal(self, model, x, s, t, label):
        return eulerian_loss(model, x, s, t, diagonal(model), self.opts.stopgrad, label)


class PSD(_SelfDistill):
    """Progressive self-distillation; ``gamma`` is ``mid`` (PSD-M) or ``uniform`` (PSD-U)."""

    gamma = "mid"
    jvp = False

    def off_diagonal(self, model, x, s, t, label):
        g = torch.full_like(s, 0.5) if self.gamma == "mid" else torch.rand_like(s)
        u = g * s + (1 - g) * t
        with torch.no_grad():
            v_su = model.v(x, s, u, label)
            v_ut = model.v(x + bcast(u - s, x) * v_su, u, t, label)
            target = bcast(1 - g, x) * v_su + bcast(g, x) * v_ut
        return per_sample_mse(model.v(x, s, t, label), target)


class PSDU(PSD):
    gamma = "uniform"


class MeanFlow(MapObjective):
    """MeanFlow: the Eulerian condition on the average velocity with the conditional velocity İ_s, a quarter of
    the batch off the diagonal. Its paper's training is ``adaptive_p: 1`` (c = 10⁻³) and ``time: logit_normal``
    (the paper's N(−0.4, 1) with noise at t = 1 is N(0.4, 1) here, the default mean)."""

    class Config(MapOptions):
        eta: float = Field(0.75, ge=0, le=1, description="fraction of the batch with s = t")
        tangent_warmup: int = Field(0, ge=0, description="steps over which the target's (t − s) d/ds v term "
                                    "ramps from 0 to 1 (0: whole from the start)")

    def loss(self, model, batch, step):
        x0, x1, label, s, t, k = self.draw(batch, step)
        interp = self.ctx.interp
        xs, dxs = interp(x0, x1, s), interp.derivative(x0, x1, s)
        v, dv = jvp_map(model.v, xs, s, t, dxs, 1.0, 0.0, label)
        ramp = min(1.0, step / self.opts.tangent_warmup) if self.opts.tangent_warmup else 1.0
        target = (dxs + ramp * bcast(t - s, xs) * dv).detach()
        return self.combine(per_sample_mse(v, target), s, t, k)


METHODS = {"lsd": LSD, "esd": ESD, "psdm": PSD, "psdu": PSDU, "meanflow": MeanFlow}
