"""VP frames (ε / v / x0 predictions on a discrete schedule) → the t-frame velocity, against closed forms: the exact
posterior of a Gaussian mixture written as each prediction type, converted, is the mixture's exact velocity;
classifier-free guidance of the mixture's class velocities is the closed form (1 + w) b(·|k) − w b(·|∅)."""

import pytest
import torch

from flowmaps.core.frames import VPSchedule, prediction_to_x1_eps, vp_coefficients, vp_velocity
from flowmaps.core.paths import interpolant, sigma_to_t
from flowmaps.core.teachers import GaussianMixture, guided

MIX = GaussianMixture.random(3, components=4, std=0.3, seed=1)
LIN = interpolant("linear")
ABAR = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)  # DDPM's linear β


def exact_network(schedule: VPSchedule, kind: str, label_aware: bool = False):
    """The Bayes-optimal VP network of the mixture at continuous τ: from λ(τ) (the schedule's log-SNR,
    interpolated) it finds ᾱ, then predicts E[ε | x_τ], E[x1 | x_τ] or E[v | x_τ] exactly."""
    sigma0 = schedule.sigma0

    def net(x_tau, tau, label=None):
        i = tau.double().floor().long().clamp(0, schedule.steps - 2)
        frac = tau.double() - i
        lam = schedule.log_snr[i] * (1 - frac) + schedule.log_snr[i + 1] * frac
        abar = torch.sigmoid(lam)
        a, s = abar.sqrt(), (1 - abar).sqrt()
        t = sigma_to_t(s / a, sigma0)
        x = x_tau.double() * torch.sqrt(t**2 + sigma0**2 * (1 - t) ** 2)[:, None]  # I_t
        x1 = x + (1 - t)[:, None] * MIX.velocity(x, t, LIN, sigma0, label if label_aware else None)
        eps = (x_tau.double() - a[:, None] * x1) / s[:, None]
        out = {"epsilon": eps, "sample": x1, "v_prediction": a[:, None] * eps - s[:, None] * x1}[kind]
        return out.to(x_tau.dtype)

    return net


def test_schedule_times_match_the_closed_form():
    diffusers = pytest.importorskip("diffusers")
    abar = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").alphas_cumprod.double()
    assert torch.allclose(abar, ABAR, rtol=1e-5)
    sched = VPSchedule(ABAR, sigma0=0.8)
    a, s = ABAR.sqrt(), (1 - ABAR).sqrt()
    assert torch.allclose(sched.time(), a * 0.8 / (a * 0.8 + s))  # t = a σ0 / (a σ0 + s)
    assert sched.t0 == pytest.approx(float(a[-1] * 0.8 / (a[-1] * 0.8 + s[-1])))
    assert 0.004 < sched.t0 < 0.006  # DDPM's largest noise level: σ_max = s/a ≈ 157
    tau = torch.tensor([0.0, 17.0, 500.0, 998.0, 999.0], dtype=torch.float64)
    assert torch.allclose(sched.timestep(sched.time(tau.long())), tau, atol=1e-6)  # integer τ round trip
    assert float(sched.timestep(torch.tensor([0.9999999]))) == 0.0  # beyond the smallest noise level: τ = 0


def test_vp_state_is_the_t_frame_state_rescaled():
    t = torch.rand(64, dtype=torch.float64) * 0.98 + 0.01
    a, s, n = vp_coefficients(t, 0.7)
    assert torch.allclose(a**2 + s**2, torch.ones_like(t))
    x1, eps = torch.randn(64, 3, dtype=torch.float64), torch.randn(64, 3, dtype=torch.float64)
    x_t = LIN(0.7 * eps, x1, t)
    assert torch.allclose(x_t / n[:, None], a[:, None] * x1 + s[:, None] * eps)  # x_τ = I_t / n_t


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_predictions_recover_x1_and_eps(kind):
    a, s = torch.rand(16, 1, dtype=torch.float64) * 0.9 + 0.05, None
    s = (1 - a**2).sqrt()
    x1, eps = torch.randn(16, 2, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    pred = {"epsilon": eps, "sample": x1, "v_prediction": a * eps - s * x1}[kind]
    x1_hat, eps_hat = prediction_to_x1_eps(pred, a * x1 + s * eps, a, s, kind)
    assert torch.allclose(x1_hat, x1) and torch.allclose(eps_hat, eps)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("sigma0", [1.0, 0.6])
def test_exact_vp_network_converts_to_the_exact_velocity(kind, sigma0):
    sched = VPSchedule(ABAR, sigma0)
    b = vp_velocity(exact_network(sched, kind), sched, kind)
    t_max = float(sched.time(torch.tensor(0)))
    t = sched.t0 + (t_max - sched.t0) * torch.rand(256, dtype=torch.float64)
    x = LIN(sigma0 * torch.randn(256, 3, dtype=torch.float64), MIX.sample(256).double(), t)
    assert torch.allclose(b(x, t), MIX.velocity(x, t, LIN, sigma0), rtol=1e-6, atol=1e-6)


def test_guidance_of_the_mixture_is_the_closed_form():
    """b_w(x, t | k) = (1 + w) b(x, t | k) − w b(x, t): the class-conditional and the unconditional velocity of
    the mixture (its null class ∅ is label = components), also through the VP conversion."""
    x, t = torch.randn(128, 3, dtype=torch.float64), torch.rand(128, dtype=torch.float64) * 0.9 + 0.05
    label = torch.arange(128) % 4
    b = MIX.teacher(LIN, 0.8)
    want = 2.5 * MIX.velocity(x, t, LIN, 0.8, label) - 1.5 * MIX.velocity(x, t, LIN, 0.8)
    assert torch.allclose(guided(b, 1.5, null_class=4)(x, t, label), want, atol=1e-10)
    assert guided(b, 0.0, 4) is b
    sched = VPSchedule(ABAR, 0.8)
    vp = vp_velocity(exact_network(sched, "epsilon", label_aware=True), sched, "epsilon")
    assert torch.allclose(guided(vp, 1.5, 4)(x, t, label), want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="guidance needs class labels"):
        guided(b, 1.0, 4)(x, t)
