"""Flow matching: the velocity on the diagonal s = t, ``|v(x_t, t, t) - İ_t|²`` at ``x_t = I_t + σ ε``.

With ``coupling: independent`` and ``sigma: 0`` it is CFM on the linear path, i.e. 1-rectified flow (and I-CFM
with σ = 0); ``coupling: ot`` is minibatch optimal transport (exact, per batch), which with ``sigma > 0`` is
OT-CFM as *Improving and generalizing flow-based generative models with minibatch optimal transport* (Tong et
al.) trains it and with ``sigma: 0`` batch OT as in *Multisample Flow Matching* (Pooladian et al., "BOT-CFM");
``sinkhorn`` is entropic OT. On teacher pairs (``data.kind: pairs``, batches carry ``x0``) it is reflow: with the
pairs of a 1-rectified flow's own ODE, 2-rectified flow.
"""

from __future__ import annotations

import torch
from pydantic import Field

from . import CouplingOptions, Loss, Objective, noise_and_data, per_sample_mse


class FM(Objective):
    form = "velocity"

    class Config(CouplingOptions):
        sigma: float = Field(0.0, ge=0, description="width σ of the Gaussian path around I_t (OT-CFM: 0.1)")

    def loss(self, model, batch, step):
        x0, x1, label = noise_and_data(batch, self.ctx.sigma0, self.opts)
        t = torch.rand(x1.shape[0], device=x1.device)
        interp = self.ctx.interp
        x_t = interp(x0, x1, t)
        if self.opts.sigma:
            x_t = x_t + self.opts.sigma * torch.randn_like(x_t)
        v = model.v(x_t, t, t, label)
        return Loss(per_sample_mse(v, interp.derivative(x0, x1, t)).mean())


METHODS = {"fm": FM}
