"""Teachers from outside flowmaps, loaded from disk: a diffusers ``save_pretrained`` folder and a user's Python
factory, each as a :class:`flowmaps.core.teachers.Teacher` in the t-frame plus the identity that pins it.

The conversions themselves are pure functions of the core (:mod:`flowmaps.core.frames`); this module only finds
the files, checks them and hashes them. diffusers is an optional dependency (``flowmaps[diffusers]``), imported
here when a diffusers teacher is asked for. Weights are read from safetensors only: pickled ``.bin`` weights are
refused, never loaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

from ..core.frames import VPSchedule, vp_velocity
from ..core.teachers import DiffusersTeacher, PythonTeacher, Teacher
from ..errors import ConfigError
from ..io.files import sha256

MODEL_CONFIG, SCHEDULER_CONFIG = "config.json", "scheduler_config.json"


def is_diffusers_folder(path: str | Path) -> bool:
    """A ``save_pretrained`` folder: a pipeline (``model_index.json``) or a model (``config.json`` naming its
    ``_diffusers_version``)."""
    path = Path(path)
    if (path / "model_index.json").is_file():
        return True
    try:
        return "_diffusers_version" in json.loads((path / MODEL_CONFIG).read_text())
    except (OSError, ValueError):
        return False


def import_diffusers(what: str):
    """The diffusers package, or one line saying how to install it."""
    try:
        import diffusers
    except ImportError:
        raise ConfigError(f"{what} needs the diffusers package: pip install 'flowmaps[diffusers]'") from None
    logging.getLogger("diffusers").setLevel(logging.ERROR)  # unused scheduler keys are not the user's problem
    return diffusers


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: missing; a diffusers teacher folder holds {path.name} (save_pretrained)")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None


def safetensors_weights(folder: Path) -> list[Path]:
    """The folder's ``*.safetensors`` files; a folder with only pickled weights (``.bin``) is refused."""
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickled = sorted(p.name for p in folder.glob("*.bin"))
        why = (f"holds only pickled weights ({', '.join(pickled)}), which flowmaps never loads; re-save them with "
               "save_pretrained(..., safe_serialization=True)") if pickled else "holds no .safetensors weights"
        raise ConfigError(f"{folder}: {why}")
    return weights


def diffusers_teacher(opts: DiffusersTeacher, sigma0: float, device: str = "cpu") -> tuple[Teacher, dict[str, Any]]:
    """A diffusers ``UNet2DModel`` and its VP scheduler at ``opts.path`` as a t-frame teacher with base scale σ0:
    ``b = x̂1 − σ0 ε̂`` (:func:`flowmaps.core.frames.vp_velocity`), first time ``t0`` = the t of its largest
    timestep; identity: the folder and the SHA-256 of its configs and weights."""
    root = Path(opts.path)
    if not root.is_dir():
        raise ConfigError(f"teacher.path {root}: no such folder")
    unet_dir, sched_dir = (root / "unet", root / "scheduler") if (root / "unet").is_dir() else (root, root)
    config = _read_json(unet_dir / MODEL_CONFIG)
    sched = _read_json(sched_dir / SCHEDULER_CONFIG)
    if config.get("_class_name") != "UNet2DModel":
        raise ConfigError(f"{unet_dir / MODEL_CONFIG}: a {config.get('_class_name')}; teacher.kind=diffusers loads "
                          "a UNet2DModel (wrap other models with teacher.kind=python)")
    if "beta_schedule" not in sched or str(sched.get("_class_name", "")).startswith("EDM"):
        raise ConfigError(f"{sched_dir / SCHEDULER_CONFIG}: a {sched.get('_class_name')} without a variance-"
                          "preserving beta schedule; teacher.kind=diffusers reads DDPM/DDIM/Euler-type schedulers")
    weights = safetensors_weights(unet_dir)
    diffusers = import_diffusers("teacher.kind=diffusers")
    try:
        abar = diffusers.DDPMScheduler.from_config(sched).alphas_cumprod
        unet = diffusers.UNet2DModel.from_pretrained(unet_dir, use_safetensors=True)
    except (ValueError, OSError, NotImplementedError) as err:
        raise ConfigError(f"{root}: diffusers could not load it ({' '.join(str(err).split())[:200]})") from None
    unet = unet.to(device).eval().requires_grad_(False)
    kind = opts.prediction or sched.get("prediction_type", "epsilon")
    embeds = int(config.get("num_class_embeds") or 0)
    if opts.null_class and not embeds:
        raise ConfigError(f"teacher {root}: null_class is set but the model has no class embedding")
    channels, size = int(config["in_channels"]), config["sample_size"]
    shape = (channels, *(size if isinstance(size, list | tuple) else (size, size)))

    def net(x, tau, label):
        return unet(x, tau, class_labels=label).sample[:, :channels]  # learned-variance models: the mean half

    schedule = VPSchedule(abar, sigma0)
    teacher = Teacher(vp_velocity(net, schedule, kind), sigma0, shape, t0=schedule.t0,
                      num_classes=embeds - opts.null_class)
    files = [unet_dir / MODEL_CONFIG, sched_dir / SCHEDULER_CONFIG, *weights]
    identity = {"kind": "diffusers", "path": str(root.resolve()), "prediction": kind, "null_class": opts.null_class,
                "files": {str(p.relative_to(root)): sha256(p) for p in files}}
    return teacher, identity


def _load_target(target: str):
    """The object ``module:attr`` or ``path/file.py:attr`` names, and the file's SHA-256 for a file."""
    where, attr = target.rsplit(":", 1)
    digest = None
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise ConfigError(f"teacher.target {target}: no such file {path}")
            spec = importlib.util.spec_from_file_location(f"flowmaps_teacher_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            digest = sha256(path)
        else:
            module = importlib.import_module(where)
    except ImportError as err:
        raise ConfigError(f"teacher.target {target}: cannot import {where} ({err})") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"teacher.target {target}: {where} has no {attr}")
        obj = getattr(obj, part)
    return obj, digest


def python_teacher(opts: PythonTeacher, sigma0: float, shape: tuple[int, ...] | None) -> tuple[Teacher, dict]:
    """``factory(**options)`` of ``opts.target``: a :class:`Teacher`, or a plain ``b(x, t, label=None)`` taken on
    this run's σ0 and data ``shape``; identity: the target, the options and, for a file, its SHA-256."""
    factory, digest = _load_target(opts.target)
    try:
        out = factory(**opts.options)
    except TypeError as err:
        raise ConfigError(f"teacher.target {opts.target}: {err}") from None
    if not isinstance(out, Teacher):
        if not callable(out):
            raise ConfigError(f"teacher.target {opts.target}: returned a {type(out).__name__}, not a Teacher or a "
                              "velocity b(x, t, label=None)")
        if shape is None:
            raise ConfigError(f"teacher.target {opts.target}: returned a plain velocity; pairs need a Teacher "
                              "(flowmaps.core.teachers.Teacher) that states its sigma0 and shape")
        out = Teacher(out, sigma0, tuple(shape))
    identity = {"kind": "python", "target": opts.target, "options": opts.options}
    if digest is not None:
        identity["file_sha256"] = digest
    return out, identity


def load_teacher(opts, sigma0: float, shape: tuple[int, ...] | None, device: str = "cpu") -> tuple[Teacher, dict]:
    """A ``diffusers`` or ``python`` teacher section as ``(Teacher, identity)``."""
    if opts.kind == "diffusers":
        return diffusers_teacher(opts, sigma0, device)
    return python_teacher(opts, sigma0, shape)
