"""The Python API, exported as ``flowmaps.*``: a config, training, a run loaded back, samples and metrics.

Every function is the command line's own code path (``flowmaps train | sample | eval``) without the files it
writes for the shell; errors are :class:`flowmaps.errors.FlowmapsError` with the same one-line messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from ..core.models import FlowMap
from ..core.sampling import DEFAULTS, class_labels, get_solver, noise
from ..errors import ConfigError
from ..run.build import Run, build_model, load_run
from ..run.config import RunConfig, load_config, parse_config
from ..run.trainer import train as _train
from .evaluate import evaluate as _evaluate
from .evaluate import run_sampler


def config(recipe: dict[str, Any] | str | Path | RunConfig = None, *overrides: str) -> RunConfig:
    """A validated run config from a dict (``{"data": {...}, "objective": {"method": "lmd"}, ...}``), a YAML
    recipe's path, or a config, with ``key.sub=value`` overrides as on the command line."""
    if isinstance(recipe, RunConfig):
        recipe = recipe.model_dump(mode="json")
    if isinstance(recipe, str | Path):
        return load_config(recipe, list(overrides))
    return parse_config(recipe or {}, list(overrides))


def model(cfg: RunConfig) -> FlowMap:
    """The untrained model a config describes (the preconditioned flow map around its network, for its data)."""
    from ..core.objectives import objective_class
    from ..data import build_source

    return build_model(cfg, build_source(cfg.data), objective_class(cfg.objective.method).form)


def train(cfg: RunConfig, out: str | Path, resume: bool = False, progress: bool = True) -> Run:
    """Train ``cfg`` into the run directory ``out`` (``resume``: continue it), then load it (EMA weights)."""
    return load_run(_train(cfg, out, resume=resume, progress=progress))


def load(path: str | Path, ema: bool = True, device: str = "cpu") -> Run:
    """A finished run directory: its config, data source and model."""
    return load_run(path, ema=ema, device=device)


def sample(run: Run, n: int = 1000, steps: int | None = None, solver: str | None = None,
           grid: list[float] | None = None, edm_grid: list[int] | None = None, cls: int | None = None,
           seed: int = 0) -> Tensor:
    """``n`` samples of a run (shape (n, *data shape)), by default with its form's sampler (heun, 18 steps, for
    a velocity model; one step of ``map`` otherwise); ``cls``: one class of a class-conditional run."""
    d = DEFAULTS[run.model.form]
    solver = solver or d.solver
    try:
        get_solver(solver, run.model.form)
        label = class_labels(run.model.num_classes, n, cls)
    except ValueError as err:
        raise ConfigError(f"{run.path}: {err}") from None
    x0 = noise(n, run.source.shape, run.model.sigma0, seed)
    return run_sampler(run.model, x0, solver, steps or d.steps, seed, grid=grid, edm_grid=edm_grid, label=label,
                       t0=run.t0).x


def evaluate(run: Run, steps: list[int] | None = None, n: int | None = None,
             solvers: tuple[str, ...] | None = None) -> list[dict]:
    """One row per (solver, steps) of metrics against the run's held-out data (KL, W2, energy distance; the
    Fréchet distance for images), by default at the config's ``eval`` settings."""
    e = run.cfg.eval
    return _evaluate(run.model, run.source, steps or e.steps, n or e.n, e.seed, solvers, bins=e.bins,
                     features=e.features, edm_grids=None if steps else e.edm_grids, t0=run.t0)
