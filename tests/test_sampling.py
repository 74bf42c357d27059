"""Solvers: convergence orders on a linear ODE, honest NFE counts, grids, and flow-map composition."""

import math

import pytest
import torch

from flowmaps.core.sampling import check_grid, edm_grid, edm_sigmas, sample, solve, solve_adaptive, step, uniform_grid


def linear_field(x, t):
    """dx/dt = (1 + t) x, exact x(1) = x(0) e^{3/2}."""
    return (1 + t)[:, None] * x


X0 = torch.ones(1, 1, dtype=torch.float64)
EXACT = math.exp(1.5)


@pytest.mark.parametrize("method,order,nfe_per_step", [("euler", 1, 1), ("heun", 2, 2), ("rk4", 4, 4)])
def test_convergence_order(method, order, nfe_per_step):
    errs = []
    for k in (8, 16, 32):
        s = solve(linear_field, X0, uniform_grid(k), method)
        assert s.nfe == nfe_per_step * k
        errs.append(abs(float(s.x) - EXACT))
    rates = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert all(abs(r - order) < 0.25 for r in rates), rates


@pytest.mark.parametrize("method,order", [("euler", 1), ("heun", 2), ("rk4", 4)])
def test_one_step_with_per_sample_times_has_the_solvers_local_order(method, order):
    """A step from t to u on each row (its own t and u) against x(u) = x(t) exp((u − t) + (u² − t²)/2): the local
    error shrinks as h^{order + 1}, and each row is the step that row would take alone."""
    t = torch.tensor([0.0, 0.3, 0.6], dtype=torch.float64)
    x = torch.ones(3, 1, dtype=torch.float64)
    errs = []
    for h in (0.1, 0.05):
        u = t + h
        exact = x * torch.exp((u - t) + (u**2 - t**2) / 2)[:, None]
        errs.append((step(linear_field, x, t, u, method) - exact).abs().squeeze(1))
        alone = torch.cat([step(linear_field, x[i:i + 1], t[i:i + 1], u[i:i + 1], method) for i in range(3)])
        assert torch.allclose(step(linear_field, x, t, u, method), alone, rtol=0, atol=1e-14)
    rates = torch.log2(errs[0] / errs[1])
    assert bool(((rates - (order + 1)).abs() < 0.3).all()), rates
    with pytest.raises(ValueError, match="unknown fixed-step solver"):
        step(linear_field, x, t, t + 0.1, "midpoint")


def test_adaptive_is_accurate_and_counts_nfe():
    s = solve_adaptive(linear_field, X0, rtol=1e-9, atol=1e-9)
    assert abs(float(s.x) - EXACT) < 1e-7 and s.nfe > 6


def test_edm_schedule():
    sig = edm_sigmas(18)
    assert len(sig) == 19 and sig[0] == pytest.approx(80.0) and sig[17] == pytest.approx(0.002) and sig[18] == 0
    assert bool((sig[1:] < sig[:-1]).all())
    grid = edm_grid(18, sigma0=0.5)
    assert grid[-1] == 1.0 and grid[0] == pytest.approx(0.5 / 80.5)
    s = solve(linear_field, X0, grid, "heun", final_correction=False)
    assert s.nfe == 35


@pytest.mark.parametrize("grid,match", [([0.0], "at least two"), ([0.0, 0.5, 0.5, 1.0], "strictly increasing"),
                                        ([0.0, 1.2], r"\[0, 1\]"), ([-0.1, 1.0], r"\[0, 1\]")])
def test_bad_grids_are_refused(grid, match):
    with pytest.raises(ValueError, match=match):
        check_grid(grid)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        uniform_grid(0)


class ExactMap(torch.nn.Module):
    """The flow map of dx/dt = x (X_{s,t}(x) = x e^{t-s}) as a model of form ``flowmap``."""

    form = "flowmap"

    def step(self, x, s, u, label=None):
        return x * torch.exp(u - s)[:, None]

    def velocity(self, x, t, label=None):
        return x


def test_composition_of_an_exact_map_is_exact_at_any_step_count():
    model = ExactMap()
    x = torch.randn(10, 2, dtype=torch.float64)
    for k in (1, 3, 8):
        s = sample(model, x, uniform_grid(k), solver="map")
        assert s.nfe == k and torch.allclose(s.x, x * math.e)
    s = sample(model, x, torch.tensor([0.0, 0.1, 0.7, 1.0]), solver="map")
    assert s.nfe == 3 and torch.allclose(s.x, x * math.e)
    assert sample(model, x, uniform_grid(4), solver="euler").nfe == 4
    with pytest.raises(ValueError, match="unknown solver"):
        sample(model, x, uniform_grid(4), solver="leapfrog")
