"""Flow matching: the velocity on the diagonal s = t, ``|v(I_t, t, t) - İ_t|²``.

With ``coupling: independent`` it is CFM (1-rectified flow); ``ot`` / ``sinkhorn`` give OT-CFM; on teacher
pairs (``data.kind: pairs``, batches carry ``x0``) it is reflow (2-rectified flow).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..couplings import couple
from . import Loss, Objective, Options, per_sample_mse


class FM(Objective):
    form = "velocity"

    class Config(Options):
        coupling: Literal["independent", "ot", "sinkhorn"] = "independent"
        reg: float = Field(0.05, gt=0, description="Sinkhorn entropic regularization (relative to mean cost)")

    def loss(self, model, batch, step):
        x1 = batch["x1"]
        x0 = batch["x0"] if "x0" in batch else self.ctx.sigma0 * torch.randn_like(x1)
        if self.opts.coupling != "independent":
            kw = {"reg": self.opts.reg} if self.opts.coupling == "sinkhorn" else {}
            x0, x1 = couple(self.opts.coupling, x0, x1, **kw)
        t = torch.rand(x1.shape[0], device=x1.device)
        interp = self.ctx.interp
        v = model.v(interp(x0, x1, t), t, t, batch.get("label"))
        return Loss(per_sample_mse(v, interp.derivative(x0, x1, t)).mean())


METHODS = {"fm": FM}
