"""Teacher pairs ``(z, Φ(z))`` on disk: a sharded, checksummed, resumable store read memory-mapped by training.

A store is a directory::

    manifest.json     format, teacher identity (path, config and weight hashes, its data config, its
                      guidance scale), solver, steps, NFE, σ0, shape, seed, n, shard_size, the teacher's
                      guidance scale and first time t0 and, per finished shard, rows + sha256
    shard-00000.npy   float32 (rows, 2, *shape): [:, 0] = z (noise, the batch's "x0"), [:, 1] = Φ(z) ("x1")

Sample ``i`` lives in shard ``i // shard_size`` at row ``i % shard_size``; its noise is
``z_i = σ0 · randn(shape, generator=torch.Generator().manual_seed(seed · 2³² + i))``. Because every z
depends only on (seed, i), a store is the same whatever the batch size, the number of workers or where a run
was interrupted, and any shard can be regenerated on its own.

What is stored and why: Φ(z) must be stored (it costs the teacher's NFE per sample). z is stored as well,
although it is reproducible, because recreating it costs one generator per sample (about 8 µs each on a
CPU core, as much as a small training step per batch) while reading it from a memory-mapped shard is free;
``verify_store(..., check_noise=True)`` recomputes it from the seeds. Shards and the manifest are written
atomically, so an interrupted run leaves only finished shards, which a rerun skips.

A class-conditional teacher makes sample ``i`` of class ``i mod num_classes`` (every class equally often);
the manifest records ``num_classes`` and the label, a function of the index, is not stored.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import PairStoreError, StorageError
from ..io.files import sha256, write_text

FORMAT = "flowmaps-pairs/1"
MANIFEST = "manifest.json"
_SEED_STRIDE = 2**32


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.npy"


def indexed_noise(seed: int, index: Tensor | np.ndarray | range, shape: tuple[int, ...], sigma0: float) -> Tensor:
    """``z_i = σ0 · randn(shape)`` from the per-sample generator seeded ``seed · 2³² + i``, stacked over ``index``."""
    out = torch.empty(len(index), *shape)
    for row, i in enumerate(index):
        g = torch.Generator().manual_seed(int(seed) * _SEED_STRIDE + int(i))
        out[row] = torch.randn(*shape, generator=g)
    return sigma0 * out


def check_manifest(m: dict, want: dict, root: Path) -> None:
    """Refuse to resume a store whose teacher or settings differ from this run's."""
    if m.get("format") != FORMAT:
        raise PairStoreError(f"{root}: not a flowmaps pair store (format {m.get('format')!r})")
    if m["teacher"] != want["teacher"]:
        diff = sorted(k for k in set(m["teacher"]) | set(want["teacher"])
                      if m["teacher"].get(k) != want["teacher"].get(k))
        raise PairStoreError(f"{root}: made by another teacher (differs in {', '.join(diff)}); "
                             "choose another --out to store pairs of this teacher")
    for key in ("solver", "steps", "seed", "n", "shard_size", "shape", "sigma0"):
        if m[key] != want[key]:
            raise PairStoreError(f"{root}: was made with {key}={m[key]!r}, this run asks {key}={want[key]!r}; "
                                 "use the same settings to resume or choose another --out")


def read_manifest(root: str | Path) -> dict[str, Any]:
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise PairStoreError(f"{root}: not a pair store (no {MANIFEST})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PairStoreError(f"{path}: unreadable manifest ({err})") from None


def save_shard(path: str, rows: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, rows, allow_pickle=False)


def write_manifest(root: Path, m: dict) -> None:
    write_text(root / MANIFEST, json.dumps(m, indent=1))


def _shard_problem(root: Path, k: int, entry: dict, shape: tuple[int, ...], full: bool) -> str | None:
    """Why shard k is unusable (missing, truncated, wrong shape, checksum), or None if it is fine."""
    path = root / shard_name(k)
    if not path.is_file():
        return "missing"
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        return f"unreadable or truncated ({' '.join(str(err).split())[:80]})"
    if arr.shape != (entry["rows"], 2, *shape) or arr.dtype != np.float32:
        return f"shape {arr.shape} {arr.dtype}, expected {(entry['rows'], 2, *shape)} float32"
    if full and sha256(path) != entry["sha256"]:
        return "sha256 mismatch (corrupt)"
    if full and not all(np.isfinite(arr[i:i + 4096]).all() for i in range(0, len(arr), 4096)):
        return "holds non-finite values"
    return None


def verify_store(root: str | Path, full: bool = True, check_noise: bool = False) -> dict[int, str]:
    """``{shard: problem}`` for every listed shard that is missing, truncated, reshaped or fails its sha256;
    ``check_noise`` also recomputes every z from its seed."""
    root = Path(root)
    m = read_manifest(root)
    shape = tuple(m["shape"])
    bad = {}
    for key, entry in m["shards"].items():
        k = int(key)
        problem = _shard_problem(root, k, entry, shape, full)
        if problem is None and check_noise:
            start = k * m["shard_size"]
            z = np.load(root / shard_name(k), mmap_mode="r")[:, 0]
            ref = indexed_noise(m["seed"], range(start, start + entry["rows"]), shape, m["sigma0"]).numpy()
            if not np.array_equal(z, ref):
                problem = "stored z differs from its seeds"
        if problem is not None:
            bad[k] = problem
    return bad


VERIFIED = ".verified.json"  # shards whose sha256 and values were checked, by file size and modification time


def _stamp(path: Path, digest: str) -> list:
    st = path.stat() if path.is_file() else None
    return [digest, st.st_size, st.st_mtime_ns] if st else [digest]


def _read_verified(root: Path) -> dict[str, list]:
    try:
        return json.loads((root / VERIFIED).read_text())
    except (OSError, ValueError):
        return {}


def _write_verified(root: Path, verified: dict[str, list]) -> None:
    """Remember the verified shards (best effort: a read-only store is verified again at the next open)."""
    with contextlib.suppress(StorageError):
        write_text(root / VERIFIED, json.dumps(verified))


class PairStore:
    """A finished store, memory-mapped: ``len`` pairs, ``get(idx) -> (z, x1)`` for global indices.

    Opening it verifies every shard's SHA-256 and values (finite) once; a shard whose size and modification
    time are unchanged since is not read again (``.verified.json``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        m = self.manifest = read_manifest(self.root)
        if not m.get("complete"):
            missing = -(-m["n"] // m["shard_size"]) - len(m["shards"])
            raise PairStoreError(f"{self.root}: incomplete store ({missing} shards missing); "
                                 "rerun `flowmaps pairs` with the same arguments to finish it")
        self.shape, self.n, self.size = tuple(m["shape"]), int(m["n"]), int(m["shard_size"])
        self.num_classes = int(m.get("num_classes", 0))
        self.shards = []
        seen = _read_verified(self.root)
        verified = {}
        for k in range(len(m["shards"])):
            entry, name = m["shards"][str(k)], shard_name(k)
            stamp = _stamp(self.root / name, entry["sha256"])
            problem = _shard_problem(self.root, k, entry, self.shape, full=seen.get(name) != stamp)
            if problem is not None:
                raise PairStoreError(f"{self.root / name}: {problem}; rerun `flowmaps pairs ... --repair`")
            verified[name] = stamp
            self.shards.append(np.load(self.root / name, mmap_mode="r", allow_pickle=False))
        if verified != seen:
            _write_verified(self.root, verified)

    def __len__(self) -> int:
        return self.n

    def get(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Pairs at global indices ``idx`` (any order, repeats allowed), gathered shard by shard."""
        idx = idx.cpu().numpy()
        out = np.empty((len(idx), 2, *self.shape), dtype=np.float32)
        shard, row = idx // self.size, idx % self.size
        for k in np.unique(shard):
            sel = shard == k
            rows = row[sel]
            order = np.argsort(rows)
            got = self.shards[k][rows[order]]
            out[np.flatnonzero(sel)[order]] = got
        t = torch.from_numpy(out)
        return t[:, 0], t[:, 1]
