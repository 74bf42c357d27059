"""Samplers: the base noise, time grids, ODE solvers for velocity fields, and flow-map composition.

One table, :data:`SOLVERS`, names every solver, the model forms it samples, its NFE for a number of steps, and
what a step means; :data:`DEFAULTS` gives each model form its sampler (solver and steps) and the solvers an
evaluation compares. Every sampler returns
:class:`Samples` with the number of network evaluations (NFE) actually spent, and draws its randomness (the
re-noising of consistency-style sampling) from a generator it is given, never from the global RNG.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torchdiffeq import odeint

from .distributed import world
from .paths import bcast, sigma_to_t, t_to_sigma, velocity_to_denoiser
from .times import karras_sigma

Velocity = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Solver:
    """A sampler: which model ``forms`` it takes, its NFE for ``steps`` steps (None: data-dependent), and what
    a step is."""

    name: str
    forms: tuple[str, ...]
    nfe_per_step: int | None
    help: str
    nfe_offset: int = 0

    def nfe(self, steps: int) -> int | None:
        return None if self.nfe_per_step is None else self.nfe_per_step * steps + self.nfe_offset


ALL_FORMS = ("velocity", "flowmap", "endpoint")
SOLVERS: dict[str, Solver] = {s.name: s for s in (
    Solver("map", ALL_FORMS, 1, "N steps compose the model's own map X_{t_i,t_{i+1}} (the flow-map sampler; a "
           "velocity model's step is an Euler step, an endpoint model's follows the line to its prediction): N NFE"),
    Solver("renoise", ("endpoint",), 1, "N consistency-style steps: predict the endpoint, re-noise it with fresh "
           "noise: N NFE"),
    Solver("euler", ALL_FORMS, 1, "N Euler steps of the model's velocity: N NFE"),
    Solver("heun", ALL_FORMS, 2, "N Heun (trapezoid) steps of the model's velocity: 2N NFE"),
    Solver("rk4", ALL_FORMS, 4, "N classical Runge-Kutta steps of the model's velocity: 4N NFE"),
    Solver("edm", ALL_FORMS, 2, "EDM's Heun sampler on N levels of its rho=7 sigma schedule, last step Euler: "
           "2N - 1 NFE (18 levels = 35 NFE)", nfe_offset=-1),
    Solver("adaptive", ALL_FORMS, None, "torchdiffeq's dopri5 at rtol = atol = 1e-5 (N is ignored; the NFE "
           "is counted)"),
)}


@dataclass(frozen=True)
class FormDefaults:
    """A model form's sampler (``solver``, ``steps``) and the solvers an evaluation compares at every step count."""

    solver: str
    steps: int
    evaluate: tuple[str, ...]


DEFAULTS: dict[str, FormDefaults] = {
    "velocity": FormDefaults("heun", 18, ("euler", "heun")),  # 36 NFE; an evaluation adds the adaptive solve
    "flowmap": FormDefaults("map", 1, ("map",)),
    "endpoint": FormDefaults("map", 1, ("map", "renoise")),
}


def get_solver(name: str, form: str | None = None) -> Solver:
    """The solver called ``name``; with ``form``, one that can sample a model of that form."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; choose one of {', '.join(SOLVERS)}")
    s = SOLVERS[name]
    if form is not None and form not in s.forms:
        raise ValueError(f"solver {name!r} samples {' or '.join(s.forms)} models, not a {form} model")
    return s


@dataclass
class Samples:
    x: Tensor
    nfe: int


class _Counted:
    """A velocity field that counts its evaluations."""

    def __init__(self, velocity: Velocity) -> None:
        self.velocity, self.nfe = velocity, 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.nfe += 1
        return self.velocity(x, t)


def noise(n: int, shape: tuple[int, ...], sigma0: float, seed: int) -> Tensor:
    """The base draw ``x0 ~ N(0, σ0² I)`` of ``n`` samples from its own generator: every model and step count
    evaluated with the same seed starts from the same noise."""
    return sigma0 * torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def noise_batches(n: int, shape: tuple[int, ...], sigma0: float, seed: int, batch: int) -> Iterator[tuple[int, Tensor]]:
    """:func:`noise` drawn about ``batch`` rows at a time from the same generator: ``(start, rows)``, the same
    rows as ``noise(n, …)``. torch's normal sampler fills 16 numbers at a time (and the last 16 of a draw
    afresh), so each batch is rounded up to a multiple of 16 numbers and a last batch of fewer than 16 numbers
    joins the one before."""
    per = math.prod(shape)
    batch = -(-batch // (m := 16 // math.gcd(per, 16))) * m
    g = torch.Generator().manual_seed(seed)
    a = 0
    while a < n:
        rows = batch if (n - a - batch) * per >= 16 else n - a
        yield a, sigma0 * torch.randn(rows, *shape, generator=g)
        a += rows


# ----- time grids ------------------------------------------------------------------------------


def uniform_grid(steps: int, t0: float = 0.0, t1: float = 1.0) -> Tensor:
    """``t_i = t0 + i (t1 - t0)/steps``, i = 0..steps."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(t0, t1, steps + 1, dtype=torch.float64)


def edm_sigmas(steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> Tensor:
    """EDM's ρ-schedule ``σ_i = (σ_max^{1/ρ} + i/(N-1)(σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ``, i < N, and σ_N = 0."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    u = torch.arange(steps, dtype=torch.float64) / max(steps - 1, 1)
    return torch.cat([karras_sigma(u, sigma_min, sigma_max, rho), torch.zeros(1, dtype=torch.float64)])


def edm_grid(steps: int = 18, sigma0: float = 1.0, **kw) -> Tensor:
    """The EDM σ-schedule as a t-grid, ``t_i = σ0/(σ0 + σ_i)``, ending at t = 1."""
    return sigma_to_t(edm_sigmas(steps, **kw), sigma0)


EDM_SUBSETS = ((0,), (0, 1), (0, 1, 2), (0, 3, 5), (0, 1, 3, 5))
"""Lines matching's few-step samplers as indices into EDM's 18-step σ schedule (NFE 1, 2, 3, 3, 4)."""


def edm_subset_grid(indices: tuple[int, ...] | list[int], sigma0: float = 1.0, steps: int = 18, **kw) -> Tensor:
    """Few-step grid from a subset of EDM's σ schedule (see :data:`EDM_SUBSETS`): ``t = σ0/(σ0 + σ_i)`` for the
    listed i, then t = 1. Start it from ``α_{t_0} x0`` (see :func:`start_state`)."""
    idx = [int(i) for i in indices]
    if not idx or min(idx) < 0 or max(idx) >= steps:
        raise ValueError(f"EDM step indices must lie in 0..{steps - 1}, got {list(indices)}")
    if any(b <= a for a, b in itertools.pairwise(idx)):
        raise ValueError(f"EDM step indices must be strictly increasing, got {list(indices)}")
    t = edm_grid(steps, sigma0, **kw)
    return torch.cat([t[idx], t[-1:]])


def constant_speed_grid(steps: int, sigma0: float = 1.0, sigma_max: float | None = None, frame: str = "t") -> Tensor:
    """Uniform progress along the straight lines: uniform in t on ``I_t`` (``frame="t"``), or uniform in σ on
    EDM's ``x_σ = x1 + σ z`` from ``sigma_max`` to 0 (``frame="sigma"``, the VE form), mapped to t."""
    t0 = 0.0 if sigma_max is None else float(sigma_to_t(sigma_max, sigma0))
    if frame == "t":
        return uniform_grid(steps, t0, 1.0)
    if frame == "sigma":
        if sigma_max is None:
            raise ValueError("a grid uniform in sigma needs sigma_max")
        return sigma_to_t(torch.linspace(sigma_max, 0.0, steps + 1, dtype=torch.float64), sigma0)
    raise ValueError(f"unknown frame {frame!r}; choose t or sigma")


def from_noise(model, z: Tensor, steps: int, t0: float = 0.0) -> tuple[Tensor, Tensor]:
    """``(state, grid)``: the uniform grid of ``steps`` steps from the first time ``t0`` to 1 and the sampler's
    input ``α_{t0} z`` there (:func:`start_state`)."""
    grid = uniform_grid(steps, t0)
    return start_state(model, z, grid), grid


def start_state(model, x0: Tensor, grid: Tensor) -> Tensor:
    """Sampler input at ``grid[0]`` from noise ``x0``: ``α_{t_0} x0`` (EDM's ``σ_max z``, data term dropped)."""
    t0 = torch.as_tensor(grid, dtype=torch.float64)[:1]
    return (model.interp.alpha(t0).to(x0.dtype) * x0) if float(t0) > 0 else x0


def check_grid(grid: Tensor | list[float]) -> Tensor:
    """A validated 1-D float64 grid: at least two finite times, strictly increasing, inside [0, 1]."""
    g = torch.as_tensor(grid, dtype=torch.float64)
    if g.dim() != 1 or g.numel() < 2:
        raise ValueError(f"a time grid needs at least two times, got {g.tolist()}")
    if not bool(torch.isfinite(g).all()):
        raise ValueError(f"time grid must hold finite numbers, got {g.tolist()}")
    if bool((g[1:] <= g[:-1]).any()):
        raise ValueError(f"time grid must be strictly increasing, got {g.tolist()}")
    if bool((g < 0).any() or (g > 1).any()):
        raise ValueError(f"times must lie in [0, 1], got {g.tolist()}")
    return g


def _full(t: Tensor | float, x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)


# ----- ODE solvers for a velocity field ---------------------------------------------------------


def step(velocity: Velocity, x: Tensor, t: Tensor, u: Tensor, method: str = "euler",
         k1: Tensor | None = None) -> Tensor:
    """One step of ``dx/dt = velocity(x, t)`` from ``t`` to ``u`` (per-sample times, shape (B,)): Euler (order 1),
    Heun (2) or RK4 (4); ``k1``: ``velocity(x, t)`` when already computed."""
    if method not in ("euler", "heun", "rk4"):
        raise ValueError(f"unknown fixed-step solver {method!r}; choose euler, heun or rk4")
    h = bcast(u - t, x)
    k1 = velocity(x, t) if k1 is None else k1
    if method == "euler":
        return x + h * k1
    if method == "heun":
        return x + 0.5 * h * (k1 + velocity(x + h * k1, u))
    mid = t + 0.5 * (u - t)
    k2 = velocity(x + 0.5 * h * k1, mid)
    k3 = velocity(x + 0.5 * h * k2, mid)
    k4 = velocity(x + h * k3, u)
    return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def steps(velocity: Velocity, x: Tensor, grid: Tensor, method: str = "euler",
          final_correction: bool = True) -> Iterator[tuple[Tensor, Tensor]]:
    """Fixed-grid integration of ``dx/dt = velocity(x, t)``, one :func:`step` at a time: yields ``(x_i,
    velocity(x_i, t_i))`` before each step and the final state with ``None`` after the last. Heun's last step is
    an Euler step when ``final_correction`` is False (EDM's σ = 0 step)."""
    grid = check_grid(grid)
    for i in range(len(grid) - 1):
        t, u = _full(grid[i], x), _full(grid[i + 1], x)
        k1 = velocity(x, t)
        yield x, k1
        last = i == len(grid) - 2
        x = step(velocity, x, t, u, "euler" if (method == "heun" and last and not final_correction) else method, k1)
    yield x, None


@torch.no_grad()
def solve(velocity: Velocity, x: Tensor, grid: Tensor, method: str = "euler", final_correction: bool = True) -> Samples:
    """Integrate ``dx/dt = velocity(x, t)`` over a fixed grid (see :func:`steps`)."""
    f = _Counted(velocity)
    *_, (last, _) = steps(f, x, grid, method, final_correction)
    return Samples(last, f.nfe)


@torch.no_grad()
def solve_edm(velocity: Velocity, x0: Tensor, sigma0: float = 1.0, steps: int = 18, **kw) -> Samples:
    """EDM's deterministic Heun sampler (Karras et al. 2022, Alg. 1) for a linear-path velocity.

    In EDM's own frame: ``x = σ_max x0/σ0``, ``d_i = (x − D(x; σ_i))/σ_i``, Euler to σ_{i+1} and the trapezoid
    correction except on the last step (σ_N = 0): ``2·steps − 1`` NFE (35 for 18). ``D`` is the velocity read
    as a denoiser (:func:`paths.velocity_to_denoiser`); the result at σ = 0 is the data (t = 1).
    """
    sigmas = edm_sigmas(steps, **kw)
    f = _Counted(velocity)
    denoise = velocity_to_denoiser(f, sigma0)
    x = float(sigmas[0]) / sigma0 * x0

    def d(y: Tensor, sig: float) -> Tensor:
        return (y - denoise(y, _full(sig, y))) / sig

    for i in range(steps):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        d1 = d(x, s)
        x_next = x + (s_next - s) * d1
        if s_next > 0:
            x_next = x + (s_next - s) * 0.5 * (d1 + d(x_next, s_next))
        x = x_next
    return Samples(x, f.nfe)


@torch.no_grad()
def solve_adaptive(velocity: Velocity, x: Tensor, t0: float = 0.0, t1: float = 1.0, rtol: float = 1e-5,
                   atol: float = 1e-5, method: str = "dopri5") -> Samples:
    """Integrate ``dx/dt = velocity(x, t)`` from t0 to t1 with torchdiffeq's adaptive solver."""
    f = _Counted(velocity)
    ts = torch.tensor([t0, t1], dtype=x.dtype, device=x.device)
    path = odeint(lambda t, y: f(y, t.expand(y.shape[0]).to(y.dtype)), x, ts, rtol=rtol, atol=atol, method=method)
    return Samples(path[-1], f.nfe)


# ----- the model sampler -----------------------------------------------------------------------


def class_labels(num_classes: int, n: int, cls: int | None = None, start: int = 0) -> Tensor | None:
    """Labels for samples ``start … start + n − 1`` of a class-conditional model: all ``cls``, else balanced,
    ``label_i = i mod num_classes``; ``None`` for an unconditional model (``num_classes`` = 0)."""
    if cls is not None:
        if not 0 <= cls < num_classes:
            what = f"classes 0 … {num_classes - 1}" if num_classes else "no classes (it is unconditional)"
            raise ValueError(f"class {cls} requested, but the model has {what}")
        return torch.full((n,), cls, dtype=torch.long)
    return torch.arange(start, start + n) % num_classes if num_classes else None


@torch.no_grad()
def compose(model, x: Tensor, grid: Tensor, label: Tensor | None = None, renoise: bool = False,
            generator: torch.Generator | None = None) -> Samples:
    """``x ← X_{t_i, t_{i+1}}(x)`` over the grid: one NFE per step, for every model form.

    ``renoise`` (endpoint models): consistency-model sampling, ``x ← I_u(σ0 ε, f(x, s))`` with fresh ε (from
    ``generator``) before each step after the first, instead of walking the straight line.
    """
    grid = check_grid(grid)
    for i in range(len(grid) - 1):
        s, u = _full(grid[i], x), _full(grid[i + 1], x)
        if renoise:
            x1 = model.endpoint(x, s, label)
            if float(grid[i + 1]) == 1.0:
                x = x1
            else:
                device = generator.device if generator is not None else x1.device
                eps = torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=device).to(x1.device)
                x = model.interp(model.sigma0 * eps, x1, u)
        else:
            x = model.step(x, s, u, label)
    return Samples(x, len(grid) - 1)


@torch.no_grad()
def sample(model, x0: Tensor, grid: Tensor | None = None, solver: str = "map", label: Tensor | None = None,
           generator: torch.Generator | None = None, rtol: float = 1e-5, atol: float = 1e-5) -> Samples:
    """Push noise ``x0`` (at ``grid[0]``) to data with ``solver`` (see :data:`SOLVERS`).

    ``map`` composes the model's own steps (:func:`compose`); ``renoise`` adds consistency-style fresh noise
    from ``generator``; ``euler``/``heun``/``rk4`` integrate the model's velocity on the grid; ``adaptive``
    ignores the grid's interior points; ``edm`` is EDM's deterministic sampler (:func:`solve_edm`) with as
    many steps as the grid (18 steps = 35 NFE), from σ_max = 80, or, for a grid that starts at ``t0 > 0`` (a
    teacher's first time), from ``σ_max = σ(t0)`` with ``x0`` the state ``α_{t0} z`` there.
    """
    get_solver(solver, model.form)
    grid = uniform_grid(1) if grid is None else check_grid(grid)
    if solver in ("map", "renoise"):
        return compose(model, x0, grid, label, renoise=solver == "renoise", generator=generator)

    def vel(x, t):
        return model.velocity(x, t, label)

    if solver == "adaptive":
        return solve_adaptive(vel, x0, float(grid[0]), float(grid[-1]), rtol=rtol, atol=atol)
    if solver == "edm":
        t0 = float(grid[0])
        if t0 > 0:  # the state α_{t0} z at the first time, read as EDM's x_σmax = σ_max z/σ0
            alpha = float(model.interp.alpha(grid[:1]))
            return solve_edm(vel, x0 / alpha, model.sigma0, steps=len(grid) - 1,
                             sigma_max=float(t_to_sigma(t0, model.sigma0)))
        return solve_edm(vel, x0, model.sigma0, steps=len(grid) - 1)
    return solve(vel, x0, grid, solver)


def run_sampler(model, x0: Tensor, solver: str, steps: int | None = None, seed: int = 0,
                grid: Tensor | None = None, edm_grid: list[int] | None = None, label: Tensor | None = None,
                t0: float = 0.0) -> Samples:
    """``steps`` uniform steps of ``solver`` from the first time ``t0``, the time ``grid``, or lines matching's
    grid of EDM σ indices ``edm_grid`` (started from ``α_{t_0} x0``); ``adaptive`` ignores the steps. Class
    ``label`` per sample for a class-conditional model.

    The re-noising stream has its own generator, offset from ``seed``: :func:`noise` draws x0 from ``seed``
    itself, and fresh noise equal to x0 would turn consistency-style sampling into the deterministic line sampler.
    """
    g = torch.Generator().manual_seed(seed + 1_000_003)
    if edm_grid is not None:
        grid = edm_subset_grid(edm_grid, model.sigma0)
        x0 = start_state(model, x0, grid)
    elif grid is None:
        x0, grid = from_noise(model, x0, steps or 1, t0)
    return sample(model, x0, grid, solver=solver, label=label, generator=g)


@torch.no_grad()
def sample_batches(model, shape: tuple[int, ...], n: int, seed: int, batch: int, solver: str,
                   steps: int | None = None, grid: Tensor | None = None, edm_grid: list[int] | None = None,
                   cls: int | None = None, done: Callable[[int, int], bool] | None = None, t0: float = 0.0,
                   device: str | torch.device | None = None) -> Iterator[tuple[int, Tensor, int]]:
    """``(start, samples on the CPU, NFE)`` for the batches of ``n`` samples that are this process's: batch j of
    the :func:`noise_batches` stream belongs to rank ``j mod world size``, so ranks split the work and the samples
    are those of one process. Labels follow :func:`class_labels` (``cls``: one class); the re-noising generator of
    the batch at ``start`` is seeded ``seed + start`` (see :func:`run_sampler`). ``done(start, count)``: skip a
    batch already made (a resumed export). ``device``: where the model runs (default: its parameters')."""
    rank, size = world()
    device = device if device is not None else next(model.parameters()).device
    for j, (a, z) in enumerate(noise_batches(n, shape, model.sigma0, seed, batch)):
        if j % size != rank or (done is not None and done(a, len(z))):
            continue
        label = class_labels(model.num_classes, len(z), cls, start=a)
        s = run_sampler(model, z.to(device), solver, steps, seed + a, grid, edm_grid,
                        None if label is None else label.to(device), t0)
        yield a, s.x.cpu(), s.nfe
