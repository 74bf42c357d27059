"""Files that are never half-written, folders one process at a time, and content hashes.

A write goes to a temporary file in the same folder, is fsynced, renamed over the target and the folder is
fsynced: readers (and a process killed at any instant) see the old file or the new one, never a mix. A kill
leaves at most a ``.NAME.*.tmp`` file, which :func:`remove_stale_temp` clears.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from ..errors import BusyError, StorageError

TMP_SUFFIX = ".tmp"
LOCK_FILE = ".lock"


def storage_error(path: str | Path, err: OSError) -> StorageError:
    """One line naming ``path`` and why the system refused, saying whether an earlier version is kept."""
    reason = err.strerror or " ".join(str(err).split()) or type(err).__name__
    kept = "the previous version is kept" if Path(path).exists() else "nothing was written"
    return StorageError(f"{path}: write failed ({reason}); {kept}")


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, fsync it, rename it onto ``path``, fsync the folder.

    An operating-system failure (disk full, read-only, permissions) is a :class:`StorageError`; the temporary
    file is removed and ``path`` keeps its previous content. The new file's mode follows the umask.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        write(str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:
        raise storage_error(path, err) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> None:
    """``text`` into ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_report(out: str | Path, data, text: str) -> None:
    """A benchmark's result: ``data`` as indented JSON into ``out``.json, then ``text`` into ``out``.md, each
    atomically (an interrupted run leaves the previous report or the new one, never half of one)."""
    out = Path(out)
    write_text(out.with_suffix(".json"), json.dumps(data, indent=1))
    write_text(out.with_suffix(".md"), text)


def is_temp_file(path: Path) -> bool:
    """Whether ``path`` is a leftover of an interrupted :func:`atomic_write`."""
    return path.name.startswith(".") and path.name.endswith(TMP_SUFFIX) and path.is_file()


def remove_stale_temp(folder: str | Path) -> list[Path]:
    """Delete the temporary files interrupted writes left in ``folder`` (call only while owning it)."""
    stale = [p for p in Path(folder).iterdir() if is_temp_file(p)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def holds_only_leftovers(folder: Path) -> bool:
    """Whether ``folder`` holds nothing but a lock file and temporary files (a start that wrote nothing)."""
    return all(p.name == LOCK_FILE or is_temp_file(p) for p in folder.iterdir())


def lock_folder(folder: str | Path, busy: str):
    """Hold an exclusive lock on ``folder`` (its ``.lock`` file) while the returned file is open.

    The kernel releases it when the process ends, even by SIGKILL. ``busy`` is the :class:`BusyError`'s message
    when another process holds it. Returns None where ``fcntl`` does not exist (no lock).
    """
    try:
        import fcntl
    except ImportError:
        return None
    f = open(Path(folder) / LOCK_FILE, "a")  # noqa: SIM115 (held open as the lock)
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise BusyError(f"{folder}: {busy}") from None
    return f


def sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """The SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
