"""Training objectives: one file per family, each exporting ``METHODS = {name: ObjectiveClass}``.

An objective is a module (it may own frozen copies or a discriminator, which are checkpointed with it)
with ``loss(model, batch, step) -> (scalar, logs)``. ``kind`` names the model it trains (see ``models``),
``needs_teacher`` whether it distills a velocity teacher. Adding a method is adding a file here and a config.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from ..paths import Interpolant


class Options(BaseModel):
    """Base of every objective's options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class Context:
    """What an objective may need besides its options: the path, the base scale and a teacher velocity."""

    interp: Interpolant
    sigma0: float
    teacher: Callable[..., Tensor] | None = None  # b(x, t, label=None)
    source: Any = None


class Objective(nn.Module):
    kind: ClassVar[str] = "velocity"
    needs_teacher: ClassVar[bool] = False
    Config: ClassVar[type[Options]] = Options

    def __init__(self, opts: Options, ctx: Context) -> None:
        super().__init__()
        self.opts, self.ctx = opts, ctx

    def loss(self, model: nn.Module, batch: dict[str, Tensor], step: int) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def extra_parameters(self) -> list[nn.Parameter]:
        """Parameters of the objective trained with the model by the main optimizer (e.g. a learned loss weight)."""
        return []

    def train_state(self) -> dict[str, Any]:
        """State outside ``state_dict`` that a resume needs (e.g. a discriminator's optimizer)."""
        return {}

    def load_train_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`train_state` returned."""


def mse(a: Tensor, b: Tensor) -> Tensor:
    """Mean over the batch of the per-sample mean squared difference."""
    return (a - b).pow(2).flatten(1).mean(1).mean()


def registry() -> dict[str, type[Objective]]:
    """All methods, collected from the modules of this package."""
    methods: dict[str, type[Objective]] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        methods.update(getattr(module, "METHODS", {}))
    return methods


def objective_class(method: str | None) -> type[Objective]:
    methods = registry()
    if method is None:
        raise ValueError(f"objective.method is missing; choose one of {', '.join(sorted(methods))}")
    if method not in methods:
        raise ValueError(f"unknown objective method {method!r}; choose one of {', '.join(sorted(methods))}")
    return methods[method]
