"""Checkpoints as one safetensors file: nested state (model, EMA, optimizer, RNG, step) without pickle.

Tensors are stored as safetensors entries; everything else (ints, floats, strings, dict keys of any
JSON-able type, tuples) goes into a JSON skeleton in the file's metadata. Loading executes no code.
Writes are atomic: a temporary file in the same folder, fsync, then rename.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or does not fit the run."""


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


def atomic_write(path: str | Path, write: callable) -> None:
    """Call ``write(tmp_path)`` then fsync and rename onto ``path``: readers see the old or the new file only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write nested ``state`` atomically to one safetensors file."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, tensors, "")
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"flowmaps": json.dumps(skeleton)}))


def load_state(path: str | Path, device: str = "cpu") -> dict[str, Any]:
    """Read a file written by :func:`save_state`; corrupt or foreign files raise :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        tensors = load_file(str(path), device=device)
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({err})") from None
    if "flowmaps" not in meta:
        raise CheckpointError(f"{path}: not a flowmaps checkpoint (no state skeleton in its metadata)")
    return _unflatten(json.loads(meta["flowmaps"]), tensors)
