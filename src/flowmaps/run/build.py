"""Build the pieces of a run from its config, and load a finished run back (for sampling, eval, teaching).

Everything here validates before it returns, so a caller that builds first and writes afterwards never
leaves a file behind for an input that cannot run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..core.models import FlowMap
from ..core.objectives import Context, Objective, objective_class
from ..core.paths import interpolant
from ..core.teachers import DiffusersTeacher, Teacher, guided
from ..data import Source, build_source
from ..errors import CheckpointError, ConfigError
from ..io.checkpoint import load_state
from ..io.files import sha256
from ..pairs.generate import PairTeacher, teacher_sampler
from .config import RunConfig, config_diff, decay_name, load_config, parse_config, read_yaml
from .teachers import is_diffusers_folder, load_teacher

CONFIG_FILE, CHECKPOINT_FILE = "config.yaml", "checkpoint.safetensors"


def resolve_device(name: str | None = "auto") -> torch.device:
    """The device ``name`` (cpu, cuda, cuda:N, mps; ``auto`` or None: cuda when available, else cpu), refused in
    one line where this machine lacks it."""
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r}: not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name}: this torch has no usable CUDA GPU "
                              f"(torch {torch.__version__}, built {'with' if torch.version.cuda else 'without'} CUDA)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name}: MPS is not available here")
    return device


def resolve_scales(cfg: RunConfig, source: Source) -> tuple[float, float]:
    """``(σ0, σ_data)``: configured values, else the source's fixed base scale (teacher pairs), else the data's
    measured standard deviation. Pairs made with another σ0 than ``path.sigma0`` are refused."""
    sigma_data = cfg.path.sigma_data or source.sigma_data
    fixed, asked = source.sigma0, cfg.path.sigma0
    if fixed is not None and asked is not None and abs(fixed - asked) > 1e-6 * fixed:
        raise ConfigError(f"the pairs' noise has scale σ0={fixed:.6g} but path.sigma0={asked:.6g}; "
                          "leave path.sigma0 null or set it to the store's")
    return asked or fixed or sigma_data, sigma_data


def check_labels(cfg: RunConfig, source: Source) -> None:
    """A class-conditional model (``model.num_classes`` > 0) needs data whose labels fit its embedding."""
    k = cfg.model.num_classes
    if k and not source.num_classes:
        raise ConfigError(f"model.num_classes={k}, but the data ({source.name}) has no labels; "
                          "set model.num_classes=0 or use labelled data")
    if k and source.num_classes > k:
        raise ConfigError(f"model.num_classes={k}, but the data ({source.name}) has {source.num_classes} classes")


def build_model(cfg: RunConfig, source: Source, form: str) -> FlowMap:
    """The preconditioned flow-map wrapper around ``model.net`` for this data, trained as ``form``."""
    check_labels(cfg, source)
    sigma0, sigma_data = resolve_scales(cfg, source)
    m = cfg.model
    try:
        net = m.build(source.shape, 2 * m.time_dim)
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None
    return FlowMap(net, interpolant(cfg.path.interpolant), sigma0, sigma_data, form=form, time_dim=m.time_dim,
                   max_freq=m.max_freq, null_class=m.label_embeddings > m.num_classes)


@dataclass
class Run:
    """A loaded run: its config, data source and model (EMA weights unless asked otherwise)."""

    cfg: RunConfig
    source: Source
    model: FlowMap
    step: int
    path: Path
    identity: dict[str, Any] = field(default_factory=dict)
    t0: float = 0.0  # the first time of its solves: a distilled model starts where its teacher does

    def teacher(self) -> Teacher:
        """The model's ODE velocity ``b(x, t, label=None)`` as a teacher (no gradients)."""
        m = self.model
        return Teacher(m.velocity, m.sigma0, self.source.shape, t0=self.t0, num_classes=m.num_classes, interp=m.interp)



def run_identity(path: Path, step: int, cfg: RunConfig) -> dict[str, Any]:
    """What pins a run used as a teacher: its folder, the SHA-256 of its config and checkpoint, its step and
    data section."""
    return {"kind": "run", "path": str(path.resolve()), "config_sha256": sha256(path / CONFIG_FILE),
            "checkpoint_sha256": sha256(path / CHECKPOINT_FILE), "step": step,
            "data": cfg.data.model_dump(mode="json")}


def ema_states(saved: dict, cfg: RunConfig) -> dict[str, dict]:
    """``{decay name: weights}`` of a checkpoint's EMAs (one written before several EMAs holds the first's)."""
    emas = saved["ema"]
    if any(isinstance(v, torch.Tensor) for v in emas.values()):
        return {decay_name(cfg.train.ema[0]): emas}
    return emas


def ema_weights(saved: dict, cfg: RunConfig, ema: bool | str, where: Path) -> dict:
    """The weights a checkpoint holds for ``ema``: True the first EMA of ``train.ema``, a decay's name (e.g.
    ``"0.9999"``) that EMA, False the raw model's."""
    if ema is False:
        return saved["model"]
    names = [decay_name(d) for d in cfg.train.ema]
    name = names[0] if ema is True else str(ema)
    if name not in names:
        raise ConfigError(f"{where}: no EMA with decay {name}; the run keeps {', '.join(names)} (train.ema)")
    return ema_states(saved, cfg)[name]


def load_run(path: str | Path, ema: bool | str = True, device: str = "cpu") -> Run:
    """Load ``path/config.yaml`` and the weights of ``path/checkpoint.safetensors`` (``ema``: see
    :func:`ema_weights`) onto ``device`` (``auto``: cuda when available)."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise ConfigError(f"{path}: not a run directory (no {CONFIG_FILE})")
    cfg = load_config(path / CONFIG_FILE)
    device = str(resolve_device(device))
    state = load_state(path / CHECKPOINT_FILE, device=device)
    try:
        saved = parse_config(read_yaml(state.get("config") or "{}"))
    except ConfigError as err:
        raise CheckpointError(f"{path / CHECKPOINT_FILE}: holds no readable config ({err})") from None
    diff = config_diff(saved, cfg, sections=("data", "path", "model", "objective"))
    if diff:
        raise CheckpointError(f"{path / CHECKPOINT_FILE}: written by another config than {path / CONFIG_FILE} "
                              f"({'; '.join(diff[:3])})")
    source = build_source(cfg.data)
    model = build_model(cfg, source, objective_class(cfg.objective.method).form).to(device)
    try:
        model.load_state_dict(ema_weights(state, cfg, ema, path))
    except (KeyError, RuntimeError) as err:
        raise CheckpointError(f"{path / CHECKPOINT_FILE}: weights do not match the run's config "
                              f"({str(err).splitlines()[0]})") from None
    model.eval().requires_grad_(False)
    return Run(cfg, source, model, int(state["step"]), path, run_identity(path, int(state["step"]), cfg),
               float((state.get("teacher") or {}).get("t0", 0.0)))


@dataclass
class BuiltTeacher:
    """A distillation teacher: its velocity (a :class:`flowmaps.core.teachers.Teacher`) on this run's path, what
    pins it (the identity a resume must find again), and its model when it is a run."""

    velocity: Teacher | None = None
    identity: dict = field(default_factory=dict)
    model: FlowMap | None = None


def build_teacher(cfg: RunConfig, source: Source, sigma0: float) -> BuiltTeacher:
    """The teacher ``cfg.teacher`` describes (guided at ``teacher.guidance``), checked against this run's data,
    path and classes."""
    if cfg.teacher is None:
        return BuiltTeacher()
    model = None
    opts, interp = cfg.teacher, interpolant(cfg.path.interpolant)
    if opts.kind == "analytic":
        mix = source.mixture
        teacher = Teacher(mix.teacher(interp, sigma0), sigma0, source.shape, num_classes=source.num_classes,
                          interp=interp)
        identity = {"kind": "analytic", "data": cfg.data.model_dump(mode="json")}
        null = True
    elif opts.kind == "run":
        teacher, identity, model = _run_teacher(cfg, source, sigma0, interp)
        null = model.null_class
    else:
        if interp.name != "linear":
            raise ConfigError(f"teacher.kind={opts.kind} is converted to the linear path: set path.interpolant=linear")
        teacher, identity = load_teacher(opts, sigma0, source.shape, str(resolve_device(cfg.train.device)))
        null = opts.kind == "python" or opts.null_class
        if tuple(teacher.shape) != tuple(source.shape):
            raise ConfigError(f"teacher {identity.get('path', opts.kind)} makes data of shape {tuple(teacher.shape)}; "
                              f"this run's data has shape {source.shape}")
        if abs(teacher.sigma0 - sigma0) > 1e-6 * sigma0:
            raise ConfigError(f"teacher {opts.kind} has sigma0={teacher.sigma0:.6g}; set path.sigma0 to match")
        if teacher.num_classes and teacher.num_classes != cfg.model.num_classes:
            raise ConfigError(f"teacher {identity.get('path', opts.kind)} is class-conditional with "
                              f"{teacher.num_classes} classes; set model.num_classes={teacher.num_classes} "
                              f"(this run has {cfg.model.num_classes})")
    return BuiltTeacher(*guide(teacher, identity, opts.guidance, null, "teacher.guidance"), model)


def guide(teacher: Teacher, identity: dict, w: float, null: bool, what: str) -> tuple[Teacher, dict]:
    """The teacher guided at scale w (:func:`flowmaps.core.teachers.guided`), its identity recording w and t0."""
    identity = {**identity, "guidance": w, "t0": teacher.t0}
    if not w:
        return teacher, identity
    if not teacher.num_classes or not null:
        raise ConfigError(f"{what}={w:g} needs a class-conditional teacher with a null class (trained with label "
                          "dropout: model.cond_drop; diffusers: null_class)")
    return replace(teacher, b=guided(teacher.b, w, teacher.num_classes)), identity


def _run_teacher(cfg: RunConfig, source: Source, sigma0: float, interp) -> tuple[Teacher, dict, FlowMap]:
    where = cfg.teacher.path
    run = load_run(where, device=str(resolve_device(cfg.train.device)))
    if run.model.form == "endpoint":
        raise ConfigError(f"teacher {where} is an endpoint model ({run.cfg.objective.method}): its straight lines "
                          "to predicted endpoints are not a velocity field to distill; use a velocity or flow-map run")
    if run.source.shape != source.shape:
        raise ConfigError(f"teacher {where} was trained on data of shape {run.source.shape}; "
                          f"this run's data has shape {source.shape}")
    if run.model.interp != interp or abs(run.model.sigma0 - sigma0) > 1e-6 * sigma0:
        raise ConfigError(f"teacher {where} uses interpolant={run.model.interp.name}, "
                          f"sigma0={run.model.sigma0:.6g}; set path.interpolant and path.sigma0 to match")
    if run.model.num_classes and run.model.num_classes != cfg.model.num_classes:
        raise ConfigError(f"teacher {where} is class-conditional with {run.model.num_classes} classes; "
                          f"set model.num_classes={run.model.num_classes} (this run has {cfg.model.num_classes})")
    if cfg.teacher.init and config_diff(run.cfg, cfg, sections=("model",)):
        raise ConfigError(f"teacher.init starts from the weights of {where}, whose network differs "
                          f"({'; '.join(config_diff(run.cfg, cfg, sections=('model',))[:3])}); use the same model "
                          "section or leave teacher.init false")
    return run.teacher(), run.identity, run.model


def build_objective(cfg: RunConfig, source: Source) -> tuple[Objective, BuiltTeacher]:
    """``(objective, teacher)`` for this config and data."""
    sigma0, _ = resolve_scales(cfg, source)
    teacher = build_teacher(cfg, source, sigma0)
    t0 = teacher.velocity.t0 if teacher.velocity is not None else 0.0
    ctx = Context(interpolant(cfg.path.interpolant), sigma0, source.shape, teacher.velocity, source.real, t0,
                  cfg.seed, cfg.model.num_classes)
    try:
        return objective_class(cfg.objective.method)(cfg.objective, ctx), teacher
    except ValueError as err:
        raise ConfigError(f"objective: {err}") from None


def open_teacher(path: str | Path, guidance: float = 0.0, diffusers: dict | None = None, sigma0: float | None = None,
                 device: str = "cpu", ema: bool | str = True) -> tuple[Any, Teacher, dict]:
    """``(model, teacher, identity)`` of a trained run directory or a diffusers ``save_pretrained`` folder, guided
    at scale ``guidance``: ``model`` is what a sampler runs (the run's own model unless guided, else the teacher),
    ``teacher`` its velocity with σ0, shape, first time and classes. ``diffusers``: the options of
    :class:`flowmaps.core.teachers.DiffusersTeacher` (prediction, null_class); ``sigma0``: its base scale (1);
    ``ema``: a run's weights (see :func:`ema_weights`)."""
    dev = str(resolve_device(device))
    if is_diffusers_folder(path):
        if ema is not True:
            raise ConfigError(f"{path}: a diffusers folder holds one set of weights; --ema is for run directories")
        opts = DiffusersTeacher(path=str(path), guidance=guidance, **(diffusers or {}))
        teacher, identity = load_teacher(opts, sigma0 or 1.0, None, dev)
        teacher, identity = guide(teacher, identity, guidance, opts.null_class, "--guidance")
        return teacher, teacher, identity
    if diffusers or sigma0 is not None:
        raise ConfigError(f"{path}: a flowmaps run has its own base scale and prediction; --sigma0, --prediction "
                          "and --null-class are for diffusers folders")
    run = load_run(path, ema=ema, device=dev)
    if not guidance:
        return run.model, run.teacher(), run.identity
    if run.model.form != "velocity":
        raise ConfigError(f"{path}: --guidance samples velocity models; this run is a {run.model.form} model")
    teacher, identity = guide(run.teacher(), run.identity, guidance, run.model.null_class, "--guidance")
    return teacher, teacher, identity


def pair_teacher(path: str | Path, solver: str = "edm", steps: int = 18, device: str = "cpu", guidance: float = 0.0,
                 diffusers: dict | None = None, sigma0: float | None = None) -> PairTeacher:
    """A trained run directory or a diffusers folder (see :func:`open_teacher`) as a pair teacher; its identity
    is the config's and the weights' SHA-256 (and the guidance scale)."""
    model, teacher, identity = open_teacher(path, guidance, diffusers, sigma0, device)
    return PairTeacher(teacher_sampler(model, solver, steps, teacher.t0), identity, teacher.sigma0, teacher.shape,
                       teacher.num_classes)
