"""A user's own data set as a ``.npy`` / ``.npz`` array of shape (N, *dims), validated on load."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .files import atomic_write

_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile)


def npy_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype]:
    """``(shape, dtype)`` from a ``.npy`` file's header, without reading its data; a file that is not a .npy
    array of numbers (no NPY header, Python objects, a truncated header) is a :class:`DataError` naming it."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
    except (ValueError, OSError, EOFError) as err:
        reason = " ".join(str(err).split())[:120]
        raise DataError(f"{p}: unreadable or corrupt .npy file (not a NumPy .npy array: {reason})") from None
    if dtype.hasobject:
        raise DataError(f"{p}: unreadable or corrupt .npy file (it holds Python objects, dtype {dtype}, which "
                        "flowmaps never unpickles; save numbers, e.g. np.save(path, x.astype(np.float32)))")
    return tuple(shape), dtype


def _read(p: Path, key: str | None) -> np.ndarray:
    """Read the single array (or array ``key``) of ``p``; object arrays are refused (no pickle)."""
    if p.suffix.lower() == ".npy":
        if key is not None:
            raise DataError(f"{p}: key={key!r} given but a .npy file holds a single array")
        npy_header(p)
        return np.load(p, allow_pickle=False)
    with np.load(p, allow_pickle=False) as z:
        names = list(z.files)
        if key is None:
            if len(names) != 1:
                raise DataError(f"{p}: holds {len(names)} arrays {names}; pass key= to choose one")
            key = names[0]
        elif key not in names:
            raise DataError(f"{p}: no array named {key!r}; keys are {names}")
        return z[key]


def load_array(path: str | os.PathLike, key: str | None = None) -> torch.Tensor:
    """Load a numeric, finite array of shape (N, *dims), N >= 1, from ``.npy`` or ``.npz`` as float32."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    if p.suffix.lower() not in (".npy", ".npz"):
        raise DataError(f"{p}: unsupported extension {p.suffix!r}; expected .npy or .npz")
    try:
        a = _read(p, key)
    except DataError:
        raise
    except _READ_ERRORS as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"{p}: unreadable or corrupt {p.suffix} file ({reason})") from e
    if a.dtype.kind not in "biuf":
        raise DataError(f"{p}: unsupported dtype {a.dtype}; expected a bool, integer or float array")
    if a.ndim < 2:
        raise DataError(f"{p}: shape {a.shape} has ndim {a.ndim}; expected (N, *dims) with ndim >= 2")
    if a.size == 0:
        raise DataError(f"{p}: empty array of shape {a.shape}")
    with np.errstate(over="ignore"):
        a = np.ascontiguousarray(a, dtype=np.float32)
    bad = ~np.isfinite(a.reshape(len(a), -1))
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise DataError(f"{p}: {int(bad.sum())} non-finite values after conversion to float32 (first in row {row})")
    return torch.from_numpy(a)


def save_array(path: str | os.PathLike, x: torch.Tensor | np.ndarray) -> None:
    """Write ``x`` to ``path`` (.npy) atomically: temp file in the same folder, fsync, ``os.replace``."""
    p = Path(path)
    if p.suffix.lower() != ".npy":
        raise DataError(f"{p}: save_array writes .npy files only")
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, a, allow_pickle=False)

    atomic_write(p, write)
