"""Lines matching (LMM): learn the endpoint ``f(x, t) = X_{t,1}(x)`` of the straight lines between teacher pairs.

With pairs ``(z, x1 = Φ(z))`` from a teacher's deterministic sampler (``data.kind: pairs``, batches carry
``x0 = z``), the line ``I_t = (1−t) z + t x1`` and the loss ``λ(t) d(f(I_t, t), x1)``:

- times ``t = σ0/(σ0 + σ)``: ``karras`` (the default) draws σ on EDM's ρ-schedule at a uniform position between
  σ_max and σ_min, the density at which the few-step samplers' levels lie, σ_max (where every sampler starts)
  included; ``lognormal`` is EDM's ``ln σ ~ N(P_mean, P_std²)``, which almost never reaches σ_max (≈ 2·10⁻⁶ of
  the draws have σ ≥ 80); ``uniform`` is uniform in t; ``sot`` (sampling-optimized training) only the times
  ``t(σ_i)`` of the few-step sampler, i in ``sot_steps`` of EDM's 18-step σ grid;
- ``λ``: 1 (``uniform``) or EDM's ``(σ² + σ_d²)/(σ σ_d)²`` (``edm``; f is then EDM's denoiser of the pairs);
- ``d``: ``l2`` (mean squared error), ``huber`` (pseudo-Huber ``sqrt(|a−b|² + c²) − c``, ``c = huber_c ·
  sqrt(dim)``), ``lpips`` (perceptual, images in [−1, 1], from ``flowmaps.core.perceptual``) or ``digits``
  (perceptual, the shipped 8×8 digits classifier's activations, for the digits).

Adversarial term (``adversarial: true``, after ``adv_start`` warm-up steps): a discriminator D on real data
(the teacher's training data recorded in the pair store; ``real: x1`` uses the pairs' x1) against ``f(I_t, t)``,
hinge losses ``L_D = E relu(1 − D(aug(real))) + E relu(1 + D(aug(fake)))``, ``L_G = −E D(aug(fake))``, both
through differentiable augmentation, and the generator minimizes ``L_rec + w · λ_adv L_G`` with the adaptive
weight ``λ_adv = ‖∇_last L_rec‖ / (‖∇_last L_G‖ + 1e-4)`` at the network's last layer. D is the objective's
auxiliary network: the trainer steps it (RAdam, lr 2e-3, betas (0.5, 0.9)) on ``L_D`` in the same step as the
model on its loss (both from the same D), averages its gradients over processes and checkpoints it.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from ..augment import diff_augment
from ..nets.discriminator import DiscOptions, build_discriminator
from ..paths import sigma_to_t, t_to_sigma
from ..sampling import edm_subset_grid
from ..times import karras_sigma, lognormal_sigma
from . import Auxiliary, Loss, Objective, Options, per_sample_mse
from .edm import edm_weight


def pseudo_huber(a: Tensor, b: Tensor, c: float) -> Tensor:
    """Per-sample ``sqrt(|a − b|² + c²) − c``."""
    return ((a - b).pow(2).flatten(1).sum(1) + c**2).sqrt() - c


def last_layer(model: nn.Module) -> Tensor:
    """The weight of the network's output layer: ``net.last_layer`` if defined, else its last Linear/Conv."""
    net = getattr(model, "net", model)
    if hasattr(net, "last_layer"):
        return net.last_layer
    last = None
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            last = m
    if last is None:
        raise ValueError("the network has no Linear/Conv layer; define net.last_layer for the adaptive weight")
    return last.weight


def adaptive_weight(rec: Tensor, adv: Tensor, layer: Tensor, eps: float = 1e-4, max_weight: float = 1e4) -> Tensor:
    """``λ_adv = ‖∇_W L_rec‖ / (‖∇_W L_adv‖ + eps)`` at the layer weight W (detached, clipped to max_weight)."""
    g_rec = torch.autograd.grad(rec, layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv, layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_adv.norm() + eps)).clamp(max=max_weight).detach()


class LMM(Objective):
    form = "endpoint"
    needs_pairs = True
    paths = ("linear",)

    class Config(Options):
        time: Literal["karras", "lognormal", "uniform", "sot"] = "karras"
        sigma_min: float = Field(0.002, gt=0, description="karras: the smallest noise level")
        sigma_max: float = Field(80.0, gt=0, description="karras: the largest noise level, the samplers' start")
        rho: float = Field(7.0, gt=0, description="karras: the schedule's curvature")
        p_mean: float = -1.2
        p_std: float = Field(1.2, gt=0)
        sot_steps: list[int] = Field(default_factory=lambda: [0, 1], description="EDM σ-grid indices for sot")
        edm_steps: int = Field(18, ge=2)
        weight: Literal["uniform", "edm"] = "uniform"
        sigma_data: float = Field(0.5, gt=0, description="σ_d of the edm weight")
        distance: Literal["l2", "huber", "lpips", "digits"] = "l2"
        huber_c: float = Field(0.00054, gt=0)
        lpips_weights: str | None = None
        lpips_net: Literal["vgg"] = "vgg"
        adversarial: bool = False
        adv_start: int = Field(0, ge=0, description="warm-up steps without the adversarial loss")
        adv_weight: float = Field(1.0, gt=0)
        augment: bool = True
        real: Literal["teacher_data", "x1"] = "teacher_data"
        disc: DiscOptions = Field(default_factory=DiscOptions, description="discriminator options")
        disc_lr: float = Field(2e-3, gt=0)
        disc_betas: tuple[float, float] = (0.5, 0.9)

        @model_validator(mode="after")
        def _consistent(self):
            if self.distance == "lpips" and not self.lpips_weights:
                raise ValueError("distance=lpips needs lpips_weights (a local VGG-16 weights file)")
            if self.sigma_min >= self.sigma_max:
                raise ValueError(f"sigma_min={self.sigma_min} must lie below sigma_max={self.sigma_max}")
            if self.weight == "edm" and self.time == "uniform":
                raise ValueError("weight=edm with time=uniform: the weight grows like (1 − t)⁻² and has no finite "
                                 "mean under uniform times; use time=lognormal or weight=uniform")
            if self.time == "sot":
                edm_subset_grid(self.sot_steps, 1.0, self.edm_steps)  # indices in range and increasing
            return self

    def __init__(self, opts, ctx) -> None:
        super().__init__(opts, ctx)
        self._perceptual: list[nn.Module] = []  # kept out of state_dict: frozen, loaded from its own file
        if opts.distance == "lpips":  # load it now, so a missing package or weights file fails before training
            from ..perceptual import LPIPSDistance

            self._perceptual.append(LPIPSDistance(opts.lpips_weights, net=opts.lpips_net))
        elif opts.distance == "digits":
            from ..perceptual import DigitsDistance

            if len(ctx.shape) != 3:
                raise ValueError(f"distance=digits compares images (C, H, W); the data has shape {ctx.shape}")
            self._perceptual.append(DigitsDistance())
        for net in self._perceptual:
            net.eval().requires_grad_(False)
        self.disc = build_discriminator(ctx.shape, opts.disc) if opts.adversarial else None
        self._sot = None
        if opts.time == "sot":
            self._sot = edm_subset_grid(opts.sot_steps, ctx.sigma0, opts.edm_steps)[:-1].float()

    def auxiliaries(self) -> dict[str, Auxiliary]:
        if self.disc is None:
            return {}
        o = self.opts
        return {"disc": Auxiliary(self.disc, lambda p: torch.optim.RAdam(p, lr=o.disc_lr, betas=tuple(o.disc_betas)))}

    # ----- pieces -------------------------------------------------------------------------------

    def draw_times(self, n: int, device) -> Tensor:
        """Training times t ∈ [0, 1) by ``time``."""
        o = self.opts
        if o.time == "uniform":
            return torch.rand(n, device=device)
        if o.time == "sot":
            return self._sot.to(device)[torch.randint(len(self._sot), (n,), device=device)]
        if o.time == "karras":
            sigma = karras_sigma(torch.rand(n, device=device), o.sigma_min, o.sigma_max, o.rho)
        else:
            sigma = lognormal_sigma(n, o.p_mean, o.p_std, device)
        return sigma_to_t(sigma, self.ctx.sigma0)

    def distance(self, a: Tensor, b: Tensor) -> Tensor:
        """Per-sample ``d(a, b)``."""
        o = self.opts
        if o.distance == "l2":
            return per_sample_mse(a, b)
        if o.distance == "huber":
            return pseudo_huber(a, b, o.huber_c * a[0].numel() ** 0.5)
        return self._perceptual[0].to(a.device)(a, b)

    def real(self, batch: dict[str, Tensor]) -> Tensor:
        """Real samples for the discriminator: the teacher's data where the context draws them, else the pairs' x1."""
        x1 = batch["x1"]
        if self.opts.real == "teacher_data" and self.ctx.real is not None:
            return self.ctx.real(x1.shape[0]).to(x1.device)
        return x1

    def _aug(self, x: Tensor, scale: float) -> Tensor:
        return diff_augment(x, scale) if self.opts.augment else x

    # ----- the loss -----------------------------------------------------------------------------

    def loss(self, model, batch, step):
        z, x1, label = batch["x0"], batch["x1"], batch.get("label")
        t = self.draw_times(x1.shape[0], x1.device)
        x_t = model.interp(z, x1, t)
        fake = model.endpoint(x_t, t, label)
        w = torch.ones_like(t)
        if self.opts.weight == "edm":
            w = edm_weight(t_to_sigma(t.clamp_min(1e-6), self.ctx.sigma0), self.opts.sigma_data)
        rec = (w * self.distance(fake, x1)).mean()
        logs = {"rec": float(rec.detach())}
        if self.disc is None or step < self.opts.adv_start:
            return Loss(rec, logs)
        scale = float(model.sigma_data)
        d_loss = torch.relu(1 - self.disc(self._aug(self.real(batch), scale))).mean() + \
            torch.relu(1 + self.disc(self._aug(fake.detach(), scale))).mean()
        g_loss = -self.disc(self._aug(fake, scale)).mean()
        lam = adaptive_weight(rec, g_loss, last_layer(model))
        logs.update(d_loss=float(d_loss.detach()), g_loss=float(g_loss.detach()), adv_lambda=float(lam))
        return Loss(rec + self.opts.adv_weight * lam * g_loss, logs, {"disc": d_loss})


METHODS = {"lmm": LMM}
