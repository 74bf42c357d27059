"""Build the pieces of a run from its config, and load a finished run back (for sampling, eval, teaching)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import Tensor, nn

from .checkpoint import CheckpointError, load_state
from .config import ConfigError, RunConfig, config_diff, load_config, parse_config
from .data.sources import Source, build_source
from .models import FlowMap
from .objectives import Context, Objective, objective_class
from .paths import Interpolant, interpolant

CONFIG_FILE, CHECKPOINT_FILE = "config.yaml", "checkpoint.safetensors"


def build_net(cfg: RunConfig, shape: tuple[int, ...], emb_dim: int) -> nn.Module:
    m = cfg.model
    if m.net == "mlp":
        from .nets.mlp import MLP

        dim = int(torch.tensor(shape).prod())
        return MLP(dim, emb_dim, m.width, m.depth, m.num_classes, m.act)
    if m.net == "unet":
        if len(shape) != 3:
            raise ConfigError(f"model.net=unet needs image data of shape (C, H, W); the data has shape {shape}")
        from .nets.unet import UNet

        import inspect

        known = set(inspect.signature(UNet).parameters) - {"shape", "emb_dim", "num_classes"}
        unknown = sorted(set(m.options) - known)
        if unknown:
            raise ConfigError(f"model.options: unknown UNet option(s) {unknown}; known: {sorted(known)}")
        try:
            return UNet(shape, emb_dim, num_classes=m.num_classes, **m.options)
        except ValueError as err:
            raise ConfigError(f"model.options: {err}") from None
    raise ConfigError(f"unknown network {m.net!r}")


def resolve_scales(cfg: RunConfig, source: Source) -> tuple[float, float]:
    """``(σ0, σ_data)``: configured values, else the source's fixed base scale (teacher pairs), else the data's
    measured standard deviation."""
    sigma_data = cfg.path.sigma_data or source.sigma_data
    return cfg.path.sigma0 or source.sigma0 or sigma_data, sigma_data


def check_labels(cfg: RunConfig, source: Source) -> None:
    """A class-conditional model (``model.num_classes`` > 0) needs data whose labels fit its embedding."""
    k = cfg.model.num_classes
    if k and not source.num_classes:
        raise ConfigError(f"model.num_classes={k}, but the data ({source.name}) has no labels; "
                          "set model.num_classes=0 or use labelled data")
    if k and source.num_classes > k:
        raise ConfigError(f"model.num_classes={k}, but the data ({source.name}) has {source.num_classes} classes")


def build_model(cfg: RunConfig, source: Source, kind: str) -> FlowMap:
    check_labels(cfg, source)
    sigma0, sigma_data = resolve_scales(cfg, source)
    time_dim = cfg.model.time_dim
    net = build_net(cfg, source.shape, 2 * time_dim)
    return FlowMap(net, interpolant(cfg.path.interpolant), sigma0, sigma_data, kind=kind, time_dim=time_dim,
                   max_freq=cfg.model.max_freq)


@dataclass
class Run:
    """A loaded run: its config, data source and model (EMA weights unless asked otherwise)."""

    cfg: RunConfig
    source: Source
    model: FlowMap
    step: int
    path: Path

    def velocity(self) -> Callable[..., Tensor]:
        """``b(x, t, label=None)``: the model's ODE velocity, without gradients."""
        model = self.model

        def b(x: Tensor, t: Tensor, label: Tensor | None = None) -> Tensor:
            with torch.no_grad():
                return model.velocity(x, t, label)

        return b


def load_run(path: str | Path, ema: bool = True, device: str = "cpu") -> Run:
    """Load ``path/config.yaml`` and the weights of ``path/checkpoint.safetensors``."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise ConfigError(f"{path}: not a run directory (no {CONFIG_FILE})")
    cfg = load_config(path / CONFIG_FILE)
    state = load_state(path / CHECKPOINT_FILE, device=device)
    diff = config_diff(parse_config(yaml.safe_load(state.get("config") or "{}")), cfg,
                       sections=("data", "path", "model", "objective"))
    if diff:
        raise CheckpointError(f"{path / CHECKPOINT_FILE}: written by another config than {path / CONFIG_FILE} "
                              f"({'; '.join(diff[:3])})")
    source = build_source(cfg.data)
    model = build_model(cfg, source, objective_class(cfg.objective["method"]).kind).to(device)
    weights = state["ema" if ema else "model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"{path / CHECKPOINT_FILE}: weights do not match the run's config "
                              f"({str(err).splitlines()[0]})") from None
    model.eval().requires_grad_(False)
    return Run(cfg, source, model, int(state["step"]), path)


def build_teacher(cfg: RunConfig, source: Source, interp: Interpolant, sigma0: float):
    """The velocity ``b(x, t)`` a distillation objective learns from, on this run's path."""
    if cfg.teacher is None:
        return None
    if cfg.teacher.kind == "analytic":
        if source.mixture is None:
            raise ConfigError("teacher.kind=analytic needs data.kind=gmm (a Gaussian mixture with exact velocity)")
        return source.mixture.teacher(interp, sigma0)
    run = load_run(cfg.teacher.path, device=cfg.train.device)
    if run.source.shape != source.shape:
        raise ConfigError(f"teacher {cfg.teacher.path} was trained on data of shape {run.source.shape}; "
                          f"this run's data has shape {source.shape}")
    if run.model.interp != interp or abs(run.model.sigma0 - sigma0) > 1e-6 * sigma0:
        raise ConfigError(f"teacher {cfg.teacher.path} uses interpolant={run.model.interp.name}, "
                          f"sigma0={run.model.sigma0:.6g}; set path.interpolant and path.sigma0 to match")
    if run.model.num_classes and run.model.num_classes != cfg.model.num_classes:
        raise ConfigError(f"teacher {cfg.teacher.path} is class-conditional with {run.model.num_classes} classes; "
                          f"set model.num_classes={run.model.num_classes} (this run has {cfg.model.num_classes})")
    return run.velocity()


def build_objective(cfg: RunConfig, source: Source) -> Objective:
    sigma0, _ = resolve_scales(cfg, source)
    interp = interpolant(cfg.path.interpolant)
    teacher = build_teacher(cfg, source, interp, sigma0)
    cls = objective_class(cfg.objective["method"])
    return cls(cfg.objective_options(), Context(interp, sigma0, teacher, source))
