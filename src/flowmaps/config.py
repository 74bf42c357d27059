"""Typed run configuration: YAML recipes plus ``key=value`` command-line overrides.

Every section rejects unknown keys and out-of-range values, so a typo fails before any work starts.
The objective's own options are validated by the objective's ``Config`` (see ``objectives``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration that cannot run; the message is one line for the user."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    """Where training data comes from.

    ``toy``: a 2-D set by ``name``; ``gmm``: an analytic Gaussian mixture (its exact velocity can teach);
    ``array``: a user's ``.npy``/``.npz`` of shape (N, *dims); ``pairs``: a teacher pair store; ``images``:
    image sets (``name``: digits, bundled, or a local folder / torchvision set at ``path``).
    """

    kind: Literal["toy", "gmm", "array", "pairs", "images"] = "toy"
    name: str = "checker"
    path: str | None = None
    key: str | None = None
    dim: int = Field(2, ge=1)
    components: int = Field(8, ge=1)
    std: float = Field(0.1, gt=0)
    radius: float = Field(1.0, gt=0)
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _need_path(self) -> DataConfig:
        if self.kind in ("array", "pairs") and not self.path:
            raise ValueError(f"data.kind={self.kind} needs data.path")
        return self


class PathConfig(Section):
    """The interpolant ``I_t = α_t x0 + β_t x1`` with base ``x0 ~ N(0, σ0² I)``."""

    interpolant: Literal["linear", "trig"] = "linear"
    sigma0: float | None = Field(None, gt=0, description="base scale; null: the data's std (as in the papers)")
    sigma_data: float | None = Field(None, gt=0, description="data scale for preconditioning; null: measured")


class ModelConfig(Section):
    net: Literal["mlp", "unet"] = "mlp"
    width: int = Field(256, ge=1)
    depth: int = Field(4, ge=1)
    time_dim: int = Field(32, ge=2)
    max_freq: float = Field(1000.0, ge=1, description="largest time-embedding frequency over π (flow maps: small)")
    act: Literal["gelu", "silu", "relu"] = "gelu"
    num_classes: int = Field(0, ge=0)
    options: dict[str, Any] = Field(default_factory=dict, description="extra network arguments (e.g. UNet)")


class TeacherConfig(Section):
    """A velocity teacher: ``analytic`` (the data's Gaussian mixture) or a trained ``run`` directory."""

    kind: Literal["analytic", "run"] = "analytic"
    path: str | None = None
    solver: Literal["euler", "heun", "rk4", "adaptive", "edm"] = "heun"
    steps: int = Field(18, ge=1)

    @model_validator(mode="after")
    def _need_path(self) -> TeacherConfig:
        if self.kind == "run" and not self.path:
            raise ValueError("teacher.kind=run needs teacher.path (a run directory)")
        return self


class TrainConfig(Section):
    steps: int = Field(10_000, ge=1)
    batch_size: int = Field(1024, ge=1)
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["adam", "adamw", "radam"] = "radam"
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(10.0, gt=0)
    ema: float = Field(0.999, ge=0, lt=1)
    schedule: Literal["constant", "cosine", "sqrt"] = "constant"
    warmup: int = Field(0, ge=0)
    decay_after: int = Field(0, ge=0, description="sqrt schedule: lr · sqrt(decay_after / step) after this step")
    log_every: int = Field(100, ge=1)
    ckpt_every: int = Field(1000, ge=1)
    device: str = "cpu"
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    nonfinite: Literal["stop", "skip"] = "stop"
    threads: int | None = Field(None, ge=1)


class EvalConfig(Section):
    n: int = Field(20_000, ge=2)
    steps: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16])
    seed: int = 1234
    bins: int = Field(50, ge=2)
    features: list[Literal["digits", "inception"]] | None = Field(
        None, description="Fréchet-distance features for images; null: digits for 1-channel, inception for RGB")

    @model_validator(mode="after")
    def _steps(self) -> EvalConfig:
        if not self.steps or min(self.steps) < 1:
            raise ValueError(f"eval.steps must be integers >= 1, got {self.steps}")
        return self


class RunConfig(Section):
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    path: PathConfig = Field(default_factory=PathConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    objective: dict[str, Any] = Field(default_factory=lambda: {"method": "fm"})
    teacher: TeacherConfig | None = None
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _objective(self) -> RunConfig:
        from .objectives import objective_class

        cls = objective_class(self.objective.get("method"))
        cls.Config(**{k: v for k, v in self.objective.items() if k != "method"})
        if cls.needs_teacher and self.teacher is None:
            raise ValueError(f"objective {self.objective['method']!r} distills a teacher: set teacher.kind")
        return self

    def objective_options(self) -> BaseModel:
        from .objectives import objective_class

        cls = objective_class(self.objective["method"])
        return cls.Config(**{k: v for k, v in self.objective.items() if k != "method"})


def _set(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        nxt = node.get(k)
        if nxt is None:
            nxt = node[k] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {dotted}: {k} is not a section")
        node = nxt
    node[keys[-1]] = value


def _one_line(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def parse_config(tree: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Validate a config tree after applying ``key.sub=value`` overrides (values parsed as YAML)."""
    tree = yaml.safe_load(yaml.safe_dump(tree)) or {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        _set(tree, key.strip(), yaml.safe_load(raw))
    try:
        return RunConfig(**tree)
    except ValidationError as err:
        raise ConfigError(f"invalid config: {_one_line(err)}") from None
    except (KeyError, ValueError) as err:
        raise ConfigError(f"invalid config: {err}") from None


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML recipe and validate it (see :func:`parse_config`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: a config is a mapping of sections, got {type(tree).__name__}")
    try:
        return parse_config(tree, overrides)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def config_diff(a: RunConfig, b: RunConfig, sections: tuple[str, ...] | None = None) -> list[str]:
    """``key: a-value != b-value`` for every dotted key that differs (only under ``sections`` if given)."""

    def flat(tree: dict, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in tree.items():
            if isinstance(v, dict) and v:
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    fa, fb = flat(a.model_dump(mode="json")), flat(b.model_dump(mode="json"))
    keys = sorted(k for k in fa.keys() | fb.keys() if sections is None or k.split(".")[0] in sections)
    return [f"{k}: {fa.get(k)!r} != {fb.get(k)!r}" for k in keys if fa.get(k) != fb.get(k)]
