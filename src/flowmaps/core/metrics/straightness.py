"""Straightness of the ODE flow dX/dt = v(X, t), integrated from t = 0 (noise) to t = 1 (data)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ..sampling import Velocity, uniform_grid
from ..sampling import steps as ode_steps


def _rk4(velocity: Velocity, x0: Tensor, steps: int) -> Iterator[tuple[Tensor, Tensor]]:
    """RK4 on t_k = k / steps; yields (x_k, v(x_k, t_k)) for k = 0..steps."""
    for x, v in ode_steps(velocity, x0, uniform_grid(steps), "rk4"):
        yield x, (v if v is not None else velocity(x, torch.ones(x.shape[0], dtype=x.dtype, device=x.device)))


@torch.no_grad()
def trajectories(velocity: Velocity, x0: Tensor, steps: int = 100) -> Tensor:
    """States X_{t_k}, t_k = k / steps, of dX/dt = velocity(X, t) from X_0 = x0 (RK4): (steps + 1, B, *dims)."""
    return torch.stack([x for x, _ in _rk4(velocity, x0, steps)])


@torch.no_grad()
def straightness(velocity: Velocity, x0: Tensor, steps: int = 100) -> float:
    """S = ∫_0^1 E ||(X_1 - X_0) - dX_t/dt||² dt along dX/dt = velocity(X, t), X_0 = x0.

    RK4 on a uniform grid of ``steps``; the velocity is recorded at the grid points and the time
    integral is the trapezoid rule. ||.||² sums over all non-batch dims; E averages over the batch.
    """
    vs, last = [], x0
    for last, v in _rk4(velocity, x0, steps):  # noqa: B007 (the state after the loop is X_1)
        vs.append(v)
    chord = last - x0
    err = torch.stack([(chord - v).flatten(1).square().sum(1).mean() for v in vs])
    return float(torch.trapezoid(err, dx=1.0 / steps))
