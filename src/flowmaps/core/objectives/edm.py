"""EDM denoiser training (Karras et al. 2022), the teacher of lines matching
(*Generative Lines Matching Models (Matityahu and Fattal)*), in the t-frame.

EDM draws ``ln σ ~ N(P_mean, P_std²)`` and minimizes ``λ(σ) |D_θ(x1 + σ n; σ) − x1|²`` with
``λ(σ) = (σ² + σ_d²)/(σ σ_d)²``. Here the denoiser is the velocity model read through
:func:`paths.velocity_to_denoiser`: ``t = σ0/(σ0 + σ)``, ``I_t = t x_σ = (1−t) σ0 n + t x1`` and
``D_θ(x_σ; σ) = I_t + (1−t) v_θ(I_t, t, t)``, so the trained model is an ordinary velocity model that every
solver (and :func:`sampling.edm_grid` Heun, 35 NFE) can sample.

Preconditioning, term by term: EDM's ``c_in = 1/sqrt(σ² + σ_d²)`` is exactly the wrapper's
``c_in(t) = 1/sqrt((1−t)² σ0² + t² σ_d²)`` applied to ``I_t = t x_σ``; ``c_noise = ln σ /4`` becomes the
wrapper's embedding of t, a monotone function of ln σ; the output is ``D = c_skip x_σ + c_out F`` with
``c_skip = t`` and ``c_out = (1−t) sqrt(σ0² + σ_d²)`` (the wrapper's output scale), which, like EDM's pair,
gives F a unit-variance target at every σ and tends to (1, 0) as σ → 0; it is not EDM's numerical
``c_skip = σ_d²/(σ² + σ_d²)``, so the weights are those of a velocity model (same minimizer, D = E[x1 | x_σ]).
In the t-frame the loss equals ``λ(σ) (1−t)² |v_θ(I_t, t, t) − İ_t|²``: flow matching with EDM's weight and
time distribution.
"""

from __future__ import annotations

import torch
from pydantic import Field

from ..paths import bcast, sigma_to_t, velocity_to_denoiser
from ..times import lognormal_sigma
from . import Loss, Objective, Options, per_sample_mse


def edm_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """``λ(σ) = (σ² + σ_d²)/(σ σ_d)²``."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


class EDM(Objective):
    form = "velocity"
    paths = ("linear",)

    class Config(Options):
        p_mean: float = -1.2
        p_std: float = Field(1.2, gt=0)
        sigma_data: float | None = Field(0.5, gt=0, description="EDM's σ_d; null: the model's measured data std")

    def loss(self, model, batch, step):
        x1 = batch["x1"]
        label = batch.get("label")
        sigma0 = self.ctx.sigma0
        sigma_d = self.opts.sigma_data or model.sigma_data
        sigma = lognormal_sigma(x1.shape[0], self.opts.p_mean, self.opts.p_std, x1.device)
        x_sigma = x1 + bcast(sigma, x1) * torch.randn_like(x1)
        denoise = velocity_to_denoiser(lambda x, t: model.v(x, t, t, label), sigma0)
        err = per_sample_mse(denoise(x_sigma, sigma), x1)
        return Loss((edm_weight(sigma, sigma_d) * err).mean(), {"t_mean": float(sigma_to_t(sigma, sigma0).mean())})


METHODS = {"edm": EDM}
