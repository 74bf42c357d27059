"""Interpolant identities and derivatives; EDM σ ↔ t conversions; denoiser → velocity."""

import pytest
import torch

from flowmaps.core.paths import denoiser_to_velocity, edm_to_linear, interpolant, linear_to_edm, sigma_to_t, t_to_sigma
from flowmaps.core.teachers import GaussianMixture


@pytest.mark.parametrize("name", ["linear", "trig"])
def test_boundary_values_and_derivatives(name):
    it = interpolant(name)
    x0, x1 = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    zero, one = torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64)
    assert torch.allclose(it(x0, x1, zero), x0) and torch.allclose(it(x0, x1, one), x1)
    t = torch.rand(5, dtype=torch.float64) * 0.9 + 0.05
    h = 1e-6
    fd = (it(x0, x1, t + h) - it(x0, x1, t - h)) / (2 * h)
    assert torch.allclose(it.derivative(x0, x1, t), fd, atol=1e-8)
    # std is the per-coordinate std of I_t for independent x0 ~ N(0, σ0²), x1 ~ N(0, σd²)
    g = torch.Generator().manual_seed(0)
    n = 400_000
    a, b = 0.7 * torch.randn(n, 1, generator=g), 1.9 * torch.randn(n, 1, generator=g)
    tt = torch.full((n,), 0.3)
    assert abs(float(it(a, b, tt).std()) - float(it.std(tt[:1], 0.7, 1.9))) < 5e-3


def test_unknown_interpolant_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown interpolant 'cubic'"):
        interpolant("cubic")


@pytest.mark.parametrize("sigma0", [1.0, 0.5])
def test_sigma_t_round_trip_and_endpoints(sigma0):
    sig = torch.logspace(-3, 2, 50, dtype=torch.float64)
    assert torch.allclose(t_to_sigma(sigma_to_t(sig, sigma0), sigma0), sig)
    assert sigma_to_t(0.0, sigma0) == 1.0 and sigma_to_t(1e12, sigma0) < 1e-11
    # x_σ = x1 + σ z maps onto the linear path with x0 = σ0 z
    x1, z = torch.randn(50, 2, dtype=torch.float64), torch.randn(50, 2, dtype=torch.float64)
    t = sigma_to_t(sig, sigma0)
    lin = interpolant("linear")(sigma0 * z, x1, t)
    assert torch.allclose(edm_to_linear(x1 + sig[:, None] * z, sig, sigma0), lin)
    assert torch.allclose(linear_to_edm(lin, t), x1 + sig[:, None] * z)


def test_denoiser_to_velocity_matches_closed_form():
    """The exact denoiser E[x1 | x_σ] of a Gaussian mixture, converted, equals its exact linear-path velocity."""
    mix = GaussianMixture.random(3, components=4, std=0.3, seed=1)
    sigma0 = 0.8
    lin = interpolant("linear")

    def denoiser(x_sigma, sigma):
        t = sigma_to_t(sigma, sigma0)
        x = x_sigma * t[:, None]
        b = mix.velocity(x, t, lin, sigma0)
        return x + (1 - t[:, None]) * b  # E[x1 | I_t = x] = x + (1 - t) b_t(x)

    v = denoiser_to_velocity(denoiser, sigma0)
    x, t = torch.randn(64, 3, dtype=torch.float64), torch.rand(64, dtype=torch.float64) * 0.9 + 0.05
    assert torch.allclose(v(x, t), mix.velocity(x, t, lin, sigma0), atol=1e-9)
