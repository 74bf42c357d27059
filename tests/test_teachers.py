"""The analytic Gaussian-mixture teacher against Monte Carlo and against its own ODE."""

import pytest
import torch

from flowmaps.core.paths import interpolant
from flowmaps.core.teachers import GaussianMixture


@pytest.mark.parametrize("name", ["linear", "trig"])
def test_velocity_is_conditional_expectation(name):
    """b_t(x) = E[İ_t | I_t = x], estimated by self-normalised importance weights over many (x0, x1)."""
    mix = GaussianMixture.random(2, components=3, std=0.4, seed=3)
    it, sigma0, t = interpolant(name), 0.9, 0.6
    g = torch.Generator().manual_seed(0)
    n = 400_000
    x1 = mix.sample(n, g).double()
    tt = torch.full((n,), t, dtype=torch.float64)
    a, b = float(it.alpha(tt[:1])), float(it.beta(tt[:1]))
    xs = torch.tensor([[0.2, -0.1], [0.5, 0.4], [-0.3, 0.2]], dtype=torch.float64)
    for x in xs:
        # p(I_t = x | x1) = N(x; b x1, a² σ0²): weight each x1 draw, then E[İ|x] = E_w[α̇ (x - b x1)/a + β̇ x1]
        logw = -((x - b * x1) ** 2).sum(1) / (2 * a**2 * sigma0**2)
        w = torch.softmax(logw, 0)[:, None]
        x0_given = (x - b * x1) / a
        mc = (w * (it.dalpha(tt[:1]) * x0_given + it.dbeta(tt[:1]) * x1)).sum(0)
        exact = mix.velocity(x[None], tt[:1], it, sigma0)[0]
        assert torch.allclose(exact, mc, atol=0.03), (exact, mc)


def test_flow_map_pushes_noise_to_the_mixture_and_composes():
    mix = GaussianMixture.random(2, components=4, std=0.1, seed=0)
    sigma0 = mix.std()
    n = 2000
    x0 = sigma0 * torch.randn(n, 2, dtype=torch.float64)
    zero, half, one = (torch.full((n,), v, dtype=torch.float64) for v in (0.0, 0.5, 1.0))
    x1 = mix.flow_map(x0, zero, one, sigma0=sigma0)
    # semigroup: X_{0.5,1} ∘ X_{0,0.5} = X_{0,1};  inverse: X_{1,0} ∘ X_{0,1} = id
    assert torch.allclose(mix.flow_map(mix.flow_map(x0, zero, half, sigma0=sigma0), half, one, sigma0=sigma0), x1,
                          atol=1e-6)
    near = torch.full((200,), 0.95, dtype=torch.float64)
    y = mix.flow_map(x0[:200], zero[:200], near, sigma0=sigma0)
    assert torch.allclose(mix.flow_map(y, near, zero[:200], sigma0=sigma0), x0[:200], atol=1e-5)
    # the pushed samples sit on the components: distance to the nearest mean ~ std
    d = torch.cdist(x1, mix.means).min(1).values
    assert float(d.pow(2).mean().sqrt()) < 0.2
    # per-component mass matches the weights
    k = torch.cdist(x1, mix.means).argmin(1)
    frac = torch.bincount(k, minlength=4).double() / n
    assert torch.allclose(frac, mix.weights, atol=0.05)
