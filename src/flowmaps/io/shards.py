"""Sharded array stores: a manifest and numbered ``.npy`` shards, written atomically and resumably, verified by
SHA-256, read row by row with positional reads. Teacher pairs, prepared image sets and latents are stores of this
one kind.

A store is a directory::

    manifest.json             format, kind, n, shard_size, fields {name: {shape, dtype}}, what made it (kind-
                              specific keys) and, per finished shard, its start, rows and the SHA-256 of each file
    shard-00000.<field>.npy   rows ``start … start + rows − 1`` of one field, shape (rows, *field shape)

Row ``i`` lives in shard ``i // shard_size`` at row ``i % shard_size``. A writer holds the store's lock; shards
of any process are written atomically, so an interrupted run leaves only finished shards, which a rerun skips.
A reader verifies every shard once (each file's SHA-256 against the manifest, and floating-point fields finite)
and remembers it by file size and modification time in ``.verified.json`` (best effort: a read-only store is
verified again at the next open).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StorageError, StoreError
from .files import LOCK_FILE, atomic_write, is_temp_file, lock_folder, remove_stale_temp, sha256, write_text

FORMAT = "flowmaps-shards/1"
MANIFEST = "manifest.json"
VERIFIED = ".verified.json"
PROGRESS = ("shards", "complete", "seconds")  # manifest keys that change as the store fills


def shard_file(k: int, field: str) -> str:
    return f"shard-{k:05d}.{field}.npy"


def shard_count(m: dict) -> int:
    return -(-int(m["n"]) // int(m["shard_size"]))


def manifest(kind: str, n: int, shard_size: int, fields: dict[str, tuple[tuple[int, ...], str]],
             **about: Any) -> dict[str, Any]:
    """A new store's manifest: ``fields`` maps each name to (row shape, dtype); ``about`` says what made it."""
    specs = {f: {"shape": list(shape), "dtype": str(np.dtype(dtype))} for f, (shape, dtype) in fields.items()}
    return {"format": FORMAT, "kind": kind, "n": int(n), "shard_size": int(shard_size), "fields": specs, **about,
            "shards": {}, "complete": False}


def read_manifest(root: str | Path, kind: str | None = None) -> dict[str, Any]:
    """The manifest of the store at ``root`` (of ``kind`` when given)."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise StoreError(f"{root}: not a flowmaps store (no {MANIFEST})")
    try:
        m = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreError(f"{path}: unreadable manifest ({err})") from None
    found = m.get("format") if isinstance(m, dict) else None
    if found != FORMAT:
        raise StoreError(f"{root}: not a store this flowmaps reads (format {found!r}, expected {FORMAT!r}); "
                         "make it again")
    if kind is not None and m.get("kind") != kind:
        raise StoreError(f"{root}: a store of {m.get('kind')}, not of {kind}")
    return m


def write_manifest(root: Path, m: dict) -> None:
    write_text(root / MANIFEST, json.dumps(m, indent=1))


def _refuse_other(m: dict, want: dict, root: Path) -> None:
    """A store made by something else (another teacher, other settings) is refused, naming what differs."""
    for key in sorted(set(m) | set(want)):
        if key in PROGRESS or m.get(key) == want.get(key):
            continue
        if isinstance(m.get(key), dict) and isinstance(want.get(key), dict):
            diff = sorted(k for k in set(m[key]) | set(want[key]) if m[key].get(k) != want[key].get(k))
            raise StoreError(f"{root}: made by another {key} (differs in {', '.join(diff)}); choose another --out")
        raise StoreError(f"{root}: was made with {key}={m.get(key)!r}, this run asks {key}={want.get(key)!r}; "
                         "use the same settings to resume or choose another --out")


def open_for_writing(root: Path, want: dict, repair: bool) -> tuple[Any, dict[str, Any]]:
    """Create or reopen the store under its lock: ``(lock, manifest)``. A store of other settings is refused; a
    listed shard that fails verification is an error naming it, or is dropped to be made again (``repair``)."""
    if root.exists() and not root.is_dir():
        raise StoreError(f"{root}: exists and is not a folder; a store is a folder")
    if root.exists() and not (root / MANIFEST).exists() and any(
            p.name != LOCK_FILE and not is_temp_file(p) for p in root.iterdir()):
        raise StoreError(f"{root}: exists and is not a flowmaps store; choose another --out")
    root.mkdir(parents=True, exist_ok=True)
    lock = lock_folder(root, f"another process is writing this {want['kind'].removesuffix('s')} store")
    try:
        remove_stale_temp(root)  # left by a write that was killed
        if (root / MANIFEST).exists():
            m = read_manifest(root)
            _refuse_other(m, want, root)
            bad = verify(root, m)
            if bad and not repair:
                raise StoreError(f"{root}: damaged shards: {describe(bad)}; rerun with --repair to make them again")
            for k in bad:
                del m["shards"][str(k)]
                m["complete"] = False
        else:
            m = want
            write_manifest(root, m)
    except BaseException:
        if lock is not None:
            lock.close()
        raise
    return lock, m


def write_shard(root: Path, k: int, start: int, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Write shard ``k`` (each field atomically); its manifest entry ``{start, rows, sha256: {field: hex}}``."""
    rows = {len(a) for a in arrays.values()}
    if len(rows) != 1:
        raise ValueError(f"shard {k}: fields of different lengths {rows}")
    digests = {}
    for field, a in arrays.items():
        path = root / shard_file(k, field)
        atomic_write(path, lambda tmp, a=a: save_array_file(tmp, a))
        digests[field] = sha256(path)
    return {"start": int(start), "rows": rows.pop(), "sha256": digests}


def save_array_file(path: str, a: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(a), allow_pickle=False)


def shard_problem(root: Path, m: dict, k: int, full: bool) -> tuple[str, str] | None:
    """``(file, why)`` when shard ``k`` is unusable (a file missing, truncated, of another shape or dtype, failing
    its SHA-256, or with non-finite values), else None."""
    entry = m["shards"][str(k)]
    for field, spec in m["fields"].items():
        path = root / shard_file(k, field)
        if not path.is_file():
            return path.name, "missing"
        try:
            a = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            return path.name, f"unreadable or truncated ({' '.join(str(err).split())[:80]})"
        want = (entry["rows"], *spec["shape"])
        if a.shape != want or a.dtype != np.dtype(spec["dtype"]):
            return path.name, f"shape {a.shape} {a.dtype}, expected {want} {spec['dtype']}"
        if full and sha256(path) != entry["sha256"][field]:
            return path.name, "sha256 mismatch (corrupt)"
        if full and a.dtype.kind == "f" and not all(np.isfinite(a[i:i + 4096]).all() for i in range(0, len(a), 4096)):
            return path.name, "holds non-finite values"
    return None


def verify(root: str | Path, m: dict | None = None, full: bool = True) -> dict[int, str]:
    """``{shard: "file (why)"}`` for every listed shard that fails :func:`shard_problem`."""
    root = Path(root)
    m = m or read_manifest(root)
    out = {}
    for k in m["shards"]:
        problem = shard_problem(root, m, int(k), full)
        if problem is not None:
            out[int(k)] = f"{problem[0]} ({problem[1]})"
    return out


def describe(bad: dict[int, str]) -> str:
    return ", ".join(why for _, why in sorted(bad.items()))


def _stamps(root: Path, m: dict, k: int) -> list:
    entry = m["shards"][str(k)]
    out = []
    for field in m["fields"]:
        path = root / shard_file(k, field)
        st = path.stat() if path.is_file() else None
        out.append([entry["sha256"][field], st.st_size, st.st_mtime_ns] if st else [entry["sha256"][field]])
    return out


class ShardReader:
    """A complete store, verified once: ``len`` rows, ``get(idx) -> {field: array}``.

    Rows are read with ``os.pread`` rather than through a memory map: a map keeps every page-cache page it
    touched mapped into the process (on kernels with large page-cache folios, about a megabyte per random row),
    so a training process's resident memory would grow towards the store's size; positional reads leave the
    pages in the page cache, which the kernel reclaims."""

    def __init__(self, root: str | Path, kind: str) -> None:
        self.root = Path(root)
        m = self.manifest = read_manifest(self.root, kind)
        if not m.get("complete"):
            missing = shard_count(m) - len(m["shards"])
            raise StoreError(f"{self.root}: incomplete store ({missing} shards missing); rerun the command that "
                             "makes it with the same arguments to finish it")
        self.n, self.size, self.fields = int(m["n"]), int(m["shard_size"]), dict(m["fields"])
        try:
            seen = json.loads((self.root / VERIFIED).read_text())
        except (OSError, ValueError):
            seen = {}
        verified = {}
        for k in range(shard_count(m)):
            stamp = _stamps(self.root, m, k)
            problem = shard_problem(self.root, m, k, full=seen.get(str(k)) != stamp)
            if problem is not None:
                raise StoreError(f"{self.root / problem[0]}: {problem[1]}; make the store again or repair it")
            verified[str(k)] = stamp
        if verified != seen:
            with contextlib.suppress(StorageError):
                write_text(self.root / VERIFIED, json.dumps(verified))
        self._files: dict[tuple[int, str], int] = {}

    def _file(self, k: int, field: str) -> tuple[int, int]:
        """``(file descriptor, offset of the data)`` of shard ``k``'s file of ``field``, opened once."""
        if (k, field) not in self._files:
            path = self.root / shard_file(k, field)
            with open(path, "rb") as f:
                major, _ = np.lib.format.read_magic(f)
                (np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0)(f)
                offset = f.tell()
            self._files[(k, field)] = (os.open(path, os.O_RDONLY), offset)
        return self._files[(k, field)]

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (to a loader process started by spawn) without its open files, which it opens again."""
        return {**self.__dict__, "_files": {}}

    def __del__(self) -> None:
        for fd, _ in getattr(self, "_files", {}).values():
            with contextlib.suppress(OSError):
                os.close(fd)

    def __len__(self) -> int:
        return self.n

    def get(self, idx: np.ndarray, fields: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Rows at global indices ``idx`` (any order, repeats allowed), gathered shard by shard with positional
        reads (``os.pread``), one per run of consecutive rows."""
        idx = np.asarray(idx, dtype=np.int64)
        fields = fields or tuple(self.fields)
        out = {f: np.empty((len(idx), *self.fields[f]["shape"]), dtype=self.fields[f]["dtype"]) for f in fields}
        shard, row = idx // self.size, idx % self.size
        for k in np.unique(shard):
            sel = np.flatnonzero(shard == k)
            sel = sel[np.argsort(row[sel], kind="stable")]
            rows = row[sel]
            runs = np.split(np.arange(len(rows)), np.flatnonzero(np.diff(rows) != 1) + 1)
            for f in fields:
                fd, offset = self._file(int(k), f)
                dest, width = out[f], out[f][0].nbytes
                for run in runs:
                    a, count = int(rows[run[0]]), len(run)
                    block = os.pread(fd, count * width, offset + a * width)
                    dest[sel[run]] = np.frombuffer(block, dest.dtype).reshape(count, *dest.shape[1:])
        return out
