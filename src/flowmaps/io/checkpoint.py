"""Checkpoints as one safetensors file: nested state (model, EMA, optimizer, RNG, step) without pickle.

Tensors are stored as safetensors entries; everything else (ints, floats, strings, dict keys of any
JSON-able type, tuples) goes into a JSON skeleton in the file's metadata, next to one SHA-256 over the skeleton
and the tensor bytes: a flipped bit anywhere, an edited step counter included, is refused. Loading executes no
code. Writes are atomic (:func:`flowmaps.io.files.atomic_write`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError
from .files import atomic_write

FORMAT = "flowmaps-checkpoint/2"


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


def digest(tensors: dict[str, torch.Tensor], skeleton: str = "") -> str:
    """SHA-256 over ``skeleton`` and the names, dtypes, shapes and raw bytes of ``tensors`` (in name order)."""
    h = hashlib.sha256(skeleton.encode())
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write nested ``state`` atomically to one safetensors file (skeleton and checksum in its metadata)."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = json.dumps(_flatten(state, tensors, ""))
    meta = {"format": FORMAT, "flowmaps": skeleton, "sha256": digest(tensors, skeleton)}

    def write(tmp: str) -> None:
        try:
            save_file(tensors, tmp, metadata=meta)
        except SafetensorError as err:  # safetensors reports I/O failures (disk full) as its own error
            raise OSError(str(err)) from None

    atomic_write(path, write)


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
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        reason = " ".join(str(err).split())
        raise CheckpointError(f"{path}: refused: {_sniff(path)} ({reason})") from None
    if "flowmaps" not in meta:
        raise CheckpointError(f"{path}: not a flowmaps checkpoint (no state skeleton in its metadata)")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {meta.get('format')!r}, this flowmaps reads {FORMAT!r}")
    if digest(tensors, meta["flowmaps"]) != meta.get("sha256"):
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
