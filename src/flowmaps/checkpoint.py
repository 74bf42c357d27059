"""Checkpoints as one safetensors file: nested state (model, EMA, optimizer, RNG, step) without pickle.

Tensors are stored as safetensors entries; everything else (ints, floats, strings, dict keys of any
JSON-able type, tuples) goes into a JSON skeleton in the file's metadata, next to a SHA-256 of the tensor
bytes. Loading executes no code and verifies the checksum. Writes are atomic (:func:`atomic_write`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import ConfigError

TMP_SUFFIX = ".tmp"
LOCK_FILE = ".lock"
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, unsafe, or does not fit the run."""


def _flatten(obj: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = prefix or "_"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _flatten(v, tensors, f"{prefix}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, tensors, f"{prefix}/{i}") for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix!r} in a checkpoint")


def _unflatten(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, list):
        return [_unflatten(v, tensors) for v in node]
    if isinstance(node, dict):
        if "__tensor__" in node:
            return tensors[node["__tensor__"]]
        if "__tuple__" in node:
            return tuple(_unflatten(v, tensors) for v in node["__tuple__"])
        return {(tuple(k) if isinstance(k, list) else k): _unflatten(v, tensors) for k, v in node["__dict__"]}
    return node


def digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and raw bytes of ``tensors`` (in name order)."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, fsync it, rename it onto ``path``, fsync the folder.

    Readers (and a process killed at any instant) see the old file or the new one, never a mix; a kill
    leaves at most a ``.NAME.*.tmp`` file behind, which :func:`remove_stale_temp` clears.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        try:
            write(tmp)
        except SafetensorError as err:  # safetensors reports I/O failures (disk full) as its own error
            raise OSError(str(err)) from None
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would make checkpoints private
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:
        reason = err.strerror or " ".join(str(err).split())
        kept = "the previous version is kept" if path.exists() else "nothing was written"
        message = f"{path}: write failed ({reason}); {kept}"
        raise (OSError(err.errno, message) if err.errno else OSError(message)) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def is_temp_file(path: Path) -> bool:
    """Whether ``path`` is a leftover of an interrupted :func:`atomic_write`."""
    return path.name.startswith(".") and path.name.endswith(TMP_SUFFIX) and path.is_file()


def lock_folder(folder: Path, busy: str):
    """Hold an exclusive lock on ``folder`` (its ``.lock`` file) while the returned file is open.

    The kernel releases it when the process ends, even by SIGKILL. ``busy`` is the error when another
    process holds it. Returns None where ``fcntl`` does not exist (no lock).
    """
    try:
        import fcntl
    except ImportError:
        return None
    f = open(Path(folder) / LOCK_FILE, "a")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise ConfigError(f"{folder}: {busy}") from None
    return f


def remove_stale_temp(folder: str | Path) -> list[Path]:
    """Delete the temporary files interrupted writes left in ``folder`` (call only while owning it)."""
    stale = [p for p in Path(folder).iterdir() if is_temp_file(p)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write nested ``state`` atomically to one safetensors file (skeleton and checksum in its metadata)."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, tensors, "")
    meta = {"flowmaps": json.dumps(skeleton), "sha256": digest(tensors)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def _sniff(path: Path) -> str:
    """What a file that safetensors cannot read looks like, for the error message."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return "it is a Python pickle, which flowmaps never loads because unpickling can run code"
    if head[:2] == b"PK":
        return "it is a zip archive (torch.save format, a pickle inside), which flowmaps never unpickles"
    if not head:
        return "it is empty"
    return "not a readable safetensors file"


def load_state(path: str | Path, device: str = "cpu") -> dict[str, Any]:
    """Read a file written by :func:`save_state`, checksum verified.

    Only safetensors is parsed, so loading runs no code; a pickle, a corrupt, truncated or foreign file
    raises :class:`CheckpointError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:  # one handle: one version of the file
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        reason = " ".join(str(err).split())
        raise CheckpointError(f"{path}: refused: {_sniff(path)} ({reason})") from None
    if "flowmaps" not in meta:
        raise CheckpointError(f"{path}: not a flowmaps checkpoint (no state skeleton in its metadata)")
    if "sha256" in meta and digest(tensors) != meta["sha256"]:
        raise CheckpointError(f"{path}: corrupt checkpoint (checksum mismatch); use an earlier copy or retrain")
    try:
        state = _unflatten(json.loads(meta["flowmaps"]), tensors)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupt checkpoint skeleton ({err})") from None
    return _to(state, device)


def state_diff(a: Any, b: Any, where: str = "") -> list[str]:
    """The paths at which two loaded states differ, bit for bit (tensors: dtype, shape and every element)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape)
        if same and a.numel():
            same = bool((a.reshape(-1).view(torch.uint8) == b.reshape(-1).view(torch.uint8)).all())
        return [] if same else [where or "/"]
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}/{k}" for k in a.keys() ^ b.keys()]
        for k in a.keys() & b.keys():
            out += state_diff(a[k], b[k], f"{where}/{k}")
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in state_diff(x, y, f"{where}/{i}")]
    return [] if a == b else [where or "/"]


def _to(node: Any, device: str) -> Any:
    if isinstance(node, torch.Tensor):
        return node.to(device)
    if isinstance(node, dict):
        return {k: _to(v, device) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_to(v, device) for v in node)
    return node
