"""Typed run configuration: YAML recipes plus ``key=value`` command-line overrides.

A run config has the sections ``data``, ``path``, ``model``, ``objective``, ``teacher``, ``train`` and ``eval``.
The sections that come in variants are unions discriminated by one key — ``data.kind``, ``model.net``,
``objective.method``, ``teacher.kind`` — validated by the options model that lives beside each variant's code
(a data source, a network, an objective, a teacher). Every key is read: an unknown key at any depth, a wrong
type, a value out of range or a combination that cannot run is a :class:`ConfigError` of one line, before any
file is written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SerializeAsAny, ValidationError, ValidationInfo, field_validator, model_validator

from ..core.metrics.frechet import EXTRACTORS
from ..core.nets.mlp import MLPOptions
from ..core.nets.unet import UNetOptions
from ..core.objectives import objective_class, options_of
from ..core.options import Options, dispatch
from ..core.paths import INTERPOLANTS
from ..core.sampling import edm_subset_grid
from ..core.teachers import TEACHERS
from ..data import data_options
from ..errors import ConfigError

NETS: dict[str, type[Options]] = {"mlp": MLPOptions, "unet": UNetOptions}
VARIANTS: dict[str, Callable[[Any], Options]] = {
    "data": data_options,
    "model": lambda value: dispatch(value, "model", "net", "mlp", NETS),
    "objective": options_of,
    "teacher": lambda value: dispatch(value, "teacher", "kind", None, TEACHERS),
}
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


class PathConfig(Options):
    """The interpolant ``I_t = α_t x0 + β_t x1`` with base ``x0 ~ N(0, σ0² I)``."""

    interpolant: Literal[INTERPOLANTS] = "linear"  # type: ignore[valid-type]
    sigma0: float | None = Field(None, gt=0, description="base scale; null: the data's std (as in the papers)")
    sigma_data: float | None = Field(None, gt=0, description="data scale for preconditioning; null: measured")


def decay_name(decay: float) -> str:
    """An EMA's name: its decay as written, e.g. ``0.9999``."""
    return f"{decay:g}"


class TrainConfig(Options):
    steps: int = Field(10_000, ge=1)
    batch_size: int = Field(1024, ge=1)
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["adam", "adamw", "radam"] = "radam"
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(10.0, gt=0)
    ema: list[float] = Field(default_factory=lambda: [0.999], min_length=1,
                             description="EMA decays kept side by side (the first is the default for sampling)")
    accumulate: int = Field(1, ge=1, description="micro-batches per step (batch_size is split into them)")
    schedule: Literal["constant", "cosine", "sqrt"] = "constant"
    warmup: int = Field(0, ge=0)
    decay_after: int = Field(0, ge=0, description="sqrt schedule: lr · sqrt(decay_after / step) after this step")
    log_every: int = Field(100, ge=1)
    ckpt_every: int = Field(1000, ge=1)
    device: str = Field("auto", description="cpu, cuda, cuda:N, mps; auto: cuda when available")
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    nonfinite: Literal["stop", "skip"] = "stop"
    max_skipped: float = Field(0.1, ge=0, le=1, description="nonfinite=skip: stop once more than this fraction "
                               "of the steps done (and more than 10 steps) were skipped")
    threads: int | None = Field(None, ge=1)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not DEVICE.fullmatch(value):
            raise ValueError(f"{value!r} is not a device; use auto, cpu, cuda, cuda:N or mps")
        return value

    @field_validator("ema", mode="before")
    @classmethod
    def _ema(cls, value: Any) -> Any:
        decays = value if isinstance(value, list | tuple) else [value]
        for d in decays:
            if isinstance(d, int | float) and not 0 <= d < 1:
                raise ValueError(f"EMA decays must lie in [0, 1), got {d}")
        if len(set(decays)) != len(decays):
            raise ValueError(f"EMA decays must differ, got {list(decays)}")
        return list(decays)

    @model_validator(mode="after")
    def _micro_batches(self) -> TrainConfig:
        if self.batch_size % self.accumulate:
            raise ValueError(f"accumulate={self.accumulate} must divide batch_size={self.batch_size} (the batch is "
                             "split into that many micro-batches)")
        return self


class EvalConfig(Options):
    n: int = Field(20_000, ge=2)
    steps: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16], min_length=1)
    edm_grids: list[list[int]] = Field(default_factory=list, description="time grids of EDM's 18 σ levels "
                                       "evaluated besides eval.steps: increasing indices, e.g. [[0], [0, 1]]")
    seed: int = 1234
    bins: int = Field(50, ge=2)
    batch: int = Field(500, ge=1, description="samples per sampler batch (and per feature pass)")
    features: list[str] | None = Field(
        None, description="Fréchet-distance features for images; null: digits for 1-channel, inception for RGB")
    reference: dict[str, str] = Field(default_factory=dict, description="reference statistics per feature set, "
                                      "a .npz with mu and sigma (e.g. {inception: cifar10-32x32.npz}); the "
                                      "others are computed from the data once and cached")
    every: int = Field(0, ge=0, description="during training, every this many steps: Fréchet distance at each "
                       "of eval.steps and a sample grid (0: never)")
    every_n: int = Field(1000, ge=2, description="samples per evaluation during training")

    @field_validator("features")
    @classmethod
    def _features(cls, value: list[str] | None) -> list[str] | None:
        unknown = [f for f in value or [] if f not in EXTRACTORS]
        if unknown:
            raise ValueError(f"unknown feature extractor {unknown[0]!r}; choose from {', '.join(EXTRACTORS)}")
        return value

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: list[int]) -> list[int]:
        if min(value) < 1:
            raise ValueError(f"steps must be integers >= 1, got {value}")
        return value

    @field_validator("edm_grids")
    @classmethod
    def _edm_grids(cls, value: list[list[int]]) -> list[list[int]]:
        for g in value:
            edm_subset_grid(g)  # its ValueError names the fault
        return value


class RunConfig(Options):
    seed: int = 0
    data: SerializeAsAny[Options] = Field(default_factory=lambda: data_options({}))
    path: PathConfig = Field(default_factory=PathConfig)
    model: SerializeAsAny[Options] = Field(default_factory=MLPOptions)
    objective: SerializeAsAny[Options] = Field(default_factory=lambda: options_of({"method": "fm"}))
    teacher: SerializeAsAny[Options] | None = None
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @field_validator("data", "model", "objective", "teacher", mode="before")
    @classmethod
    def _variant(cls, value: Any, info: ValidationInfo) -> Options | None:
        """Each variant section validated by the options model its discriminating key names."""
        return None if value is None else VARIANTS[info.field_name](value)

    @model_validator(mode="after")
    def _combination(self) -> RunConfig:
        method = self.objective.method
        cls = objective_class(method)
        if cls.needs_teacher and self.teacher is None:
            raise ValueError(f"objective {method!r} distills a teacher: set teacher.kind "
                             f"({', '.join(TEACHERS)})")
        if self.teacher is not None and not cls.needs_teacher:
            raise ValueError(f"objective {method!r} uses no teacher: remove the teacher section")
        if cls.needs_pairs and self.data.kind != "pairs":
            raise ValueError(f"objective {method!r} trains on teacher pairs: set data.kind=pairs "
                             "(see `flowmaps pairs`)")
        if getattr(self.objective, "coupling", "independent") != "independent" and self.data.kind == "pairs":
            raise ValueError("objective.coupling pairs fresh noise with the data; teacher pairs (data.kind=pairs) "
                             "are paired by their ODE: leave it independent")
        if cls.paths is not None and self.path.interpolant not in cls.paths:
            raise ValueError(f"objective {method!r} is defined on the {' or '.join(cls.paths)} path: "
                             f"set path.interpolant={cls.paths[0]}")
        if self.model.cond_drop and (not self.model.num_classes or cls.needs_teacher):
            raise ValueError("model.cond_drop trains a class-conditional model without a teacher to also be "
                             "unconditional (classifier-free guidance): it needs model.num_classes > 0 and an "
                             "objective without a teacher")
        if self.teacher is not None and self.teacher.kind == "analytic" and self.data.kind != "gmm":
            raise ValueError("teacher.kind=analytic is the exact velocity of a Gaussian mixture: it needs "
                             "data.kind=gmm")
        if getattr(self.model, "checkpointing", False) and cls.jvp:
            raise ValueError(f"model.checkpointing does not compose with the JVP of objective {method!r} (torch "
                             "recomputes the blocks outside torch.func.jvp); use it with objectives without a JVP")
        return self


def _one_line(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "missing" and len(e["loc"]) > 1:  # name the variant that needs the key
            where = ".".join(str(p) for p in e["loc"][:-1])
            tag = next((f"{where}.{k}={e['input'][k]}" for k in ("kind", "net", "method")
                        if isinstance(e.get("input"), dict) and k in e["input"]), where)
            parts.append(f"{tag} needs {loc}")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping (the last would silently win)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(text: str) -> Any:
    """YAML (safe, duplicate keys refused)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


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


def parse_config(tree: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Validate a config tree after applying ``key.sub=value`` overrides (values parsed as YAML)."""
    tree = yaml.safe_load(yaml.safe_dump(tree)) or {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = read_yaml(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: not a YAML value ({str(err).splitlines()[0]})") from None
        _set(tree, key.strip(), value)
    try:
        return RunConfig(**tree)
    except ValidationError as err:
        raise ConfigError(f"invalid config: {_one_line(err)}") from None


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML recipe and validate it (see :func:`parse_config`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        tree = read_yaml(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())[:160]})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: a config is a mapping of sections, got {type(tree).__name__}")
    try:
        return parse_config(tree, overrides)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


DISCRIMINATORS = {"data": "kind", "model": "net", "objective": "method", "teacher": "kind"}


def dump_config(cfg: RunConfig) -> str:
    """The config as YAML, every key written (each variant's discriminating key first)."""
    tree = cfg.model_dump(mode="json")
    for section, key in DISCRIMINATORS.items():
        if tree.get(section):
            tree[section] = {key: tree[section][key], **tree[section]}
    return yaml.safe_dump(tree, sort_keys=False)


def flat_config(cfg: RunConfig) -> dict[str, Any]:
    """``{dotted key: value}`` for every leaf of the config."""

    def flat(tree: dict, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in tree.items():
            if isinstance(v, dict) and v:
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    return flat(cfg.model_dump(mode="json"))


def config_diff(a: RunConfig, b: RunConfig, sections: tuple[str, ...] | None = None) -> list[str]:
    """``key: a-value != b-value`` for every dotted key that differs (only under ``sections`` if given)."""
    fa, fb = flat_config(a), flat_config(b)
    keys = sorted(k for k in fa.keys() | fb.keys() if sections is None or k.split(".")[0] in sections)
    return [f"{k}: {fa.get(k)!r} != {fb.get(k)!r}" for k in keys if fa.get(k) != fb.get(k)]


RESUMABLE = ("eval.", "train.device", "train.threads", "train.log_every", "train.ckpt_every")
"""Keys a run may change when it resumes: where and how it is evaluated, run and logged, not what it learns."""


def training_diff(a: RunConfig, b: RunConfig) -> list[str]:
    """:func:`config_diff` without the :data:`RESUMABLE` keys: the differences that change the training."""
    return [d for d in config_diff(a, b) if not d.split(":")[0].startswith(RESUMABLE)]


def overrides(cfg: RunConfig, base: RunConfig) -> list[str]:
    """The ``key=value`` overrides that turn ``base`` into ``cfg`` where it trains differently (each variant's
    discriminating key first), as ``load_config`` and the command line take them."""
    keys = [d.split(":")[0] for d in training_diff(cfg, base)]
    first = {f"{section}.{key}" for section, key in DISCRIMINATORS.items()}
    values = flat_config(cfg)

    def text(v: Any) -> str:
        return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))

    return [f"{k}={text(values.get(k))}" for k in sorted(keys, key=lambda k: k not in first)]
