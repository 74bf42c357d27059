"""Training objectives: one file per family, each exporting ``METHODS = {name: ObjectiveClass}``.

An objective is a module with ``loss(model, batch, step) -> Loss``: it computes losses and nothing else (no
optimizer step, no communication). Its options are its ``Config`` model, beside it. ``form`` names the model
it trains (see :mod:`flowmaps.core.models`); ``needs_teacher``, ``needs_pairs``, ``paths`` and ``jvp`` say what
it requires of the run, checked when a config is read. An auxiliary network (a discriminator) is a submodule the
objective declares in :meth:`Objective.auxiliaries`: the trainer makes its optimizer, steps it on the
auxiliary loss the objective returns in ``Loss.aux``, averages its gradients over processes and checkpoints it,
like the model's. Every other state (frozen copies, step counters) is in the objective's ``state_dict``.

Adding a method is adding a file here and a config; :func:`register` adds one from outside the package.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, create_model
from torch import Tensor, nn

from ..couplings import couple
from ..options import Options, dispatch
from ..paths import Interpolant

Velocity = Callable[..., Tensor]  # b(x, t, label=None)


@dataclass
class Context:
    """What an objective may need besides its options: the path, the base scale, the data's shape, a teacher
    velocity, draws of real data (for an adversarial loss), the first time ``t0`` of the teacher's range
    (flow maps are trained on ``t0 ≤ s ≤ t ≤ 1``), the run's seed (for noise an objective keeps for the whole
    run) and the model's number of classes (0: unconditional)."""

    interp: Interpolant
    sigma0: float
    shape: tuple[int, ...]
    teacher: Velocity | None = None
    real: Callable[[int], Tensor] | None = None
    t0: float = 0.0
    seed: int = 0
    num_classes: int = 0


@dataclass
class Loss:
    """The model's loss (a scalar), numbers to log, and the losses of the objective's auxiliary networks."""

    value: Tensor
    logs: dict[str, float] = field(default_factory=dict)
    aux: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class Auxiliary:
    """A network the objective trains beside the model, with the optimizer the trainer makes for it."""

    net: nn.Module
    optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer]


class Objective(nn.Module):
    form: ClassVar[str] = "velocity"
    needs_teacher: ClassVar[bool] = False
    needs_pairs: ClassVar[bool] = False
    paths: ClassVar[tuple[str, ...] | None] = None  # the interpolants it is defined on (None: any)
    jvp: ClassVar[bool] = False  # whether its loss runs torch.func.jvp through the model
    Config: ClassVar[type[Options]] = Options

    def __init__(self, opts: Options, ctx: Context) -> None:
        super().__init__()
        self.opts, self.ctx = opts, ctx

    def loss(self, model: nn.Module, batch: dict[str, Tensor], step: int) -> Loss:
        raise NotImplementedError

    def extra_parameters(self) -> list[nn.Parameter]:
        """Parameters of the objective trained with the model by the main optimizer (e.g. a learned loss weight)."""
        return []

    def auxiliaries(self) -> dict[str, Auxiliary]:
        """Networks trained beside the model on ``Loss.aux[name]`` (e.g. a discriminator)."""
        return {}


class CouplingOptions(Options):
    """How a batch's fresh noise is paired with its data (on teacher pairs, whose batches carry ``x0``, never)."""

    coupling: Literal["independent", "ot", "sinkhorn"] = Field(
        "independent", description="pairing of noise and data in a batch: independent, exact minibatch OT, "
        "or a draw from the Sinkhorn plan")
    reg: float = Field(0.05, gt=0, description="Sinkhorn entropic regularization (relative to mean cost)")
    coupling_frac: float = Field(1.0, gt=0, le=1, description="share of each batch the coupling pairs (among "
                                 "itself, the rest independent): a mixture of the two couplings, at the cost of "
                                 "a plan on that share")
    coupling_block: int = Field(0, ge=0, description="plan the coupled share in blocks of this many points, "
                                "each among itself (0: one plan on the whole share): minibatch OT at a smaller "
                                "batch than the gradient's, at a fraction of the cost")


def noise_and_data(batch: dict[str, Tensor], sigma0: float,
                   opts: CouplingOptions) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(x0, x1, label)``: the batch's pairs as they are, or a fresh ``x0 = σ0 ε`` coupled to the data by
    ``opts.coupling`` (:func:`flowmaps.core.couplings.couple`, a permutation of the data and its labels)."""
    x1, label = batch["x1"], batch.get("label")
    if "x0" in batch:
        return batch["x0"], x1, label
    x0 = sigma0 * torch.randn_like(x1)
    kw = {"reg": opts.reg} if opts.coupling == "sinkhorn" else {}
    return couple(opts.coupling, x0, x1, label, frac=opts.coupling_frac, block=opts.coupling_block, **kw)


def per_sample_mse(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample mean squared difference, shape (batch,)."""
    return (a - b).pow(2).flatten(1).mean(1)


_EXTRA: dict[str, type[Objective]] = {}


def register(name: str, cls: type[Objective]) -> None:
    """Make ``cls`` available as ``objective.method: name`` (for objectives defined outside this package)."""
    _EXTRA[name] = cls
    options_model.cache_clear()


@cache
def _packaged() -> dict[str, type[Objective]]:
    methods: dict[str, type[Objective]] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        methods.update(getattr(module, "METHODS", {}))
    return methods


def registry() -> dict[str, type[Objective]]:
    """All methods: the modules of this package, then those added by :func:`register`."""
    return {**_packaged(), **_EXTRA}


def objective_class(method: str) -> type[Objective]:
    methods = registry()
    if method not in methods:
        raise ValueError(f"unknown objective method {method!r}; choose one of {', '.join(sorted(methods))}")
    return methods[method]


@cache
def options_model(method: str) -> type[Options]:
    """The options model of ``method``: its objective's ``Config`` with the field ``method: Literal[method]``."""
    cls = objective_class(method)
    return create_model(f"{cls.__name__}Options", __base__=cls.Config, method=(Literal[method], method),
                        __module__=cls.__module__)


def options_of(value: Any) -> Options:
    """Validate an ``objective`` section (a mapping with its ``method``) into its options model."""
    return dispatch(value, "objective", "method", None, options_model, lambda: sorted(registry()))
