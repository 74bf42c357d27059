"""Pair generation: a teacher's sampler Φ pushes per-index noise ``z_i`` to ``Φ(z_i)``, shard by shard, into a
pair store (:mod:`flowmaps.pairs.store`), over one process or several."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from ..core.distributed import world
from ..core.sampling import class_labels, from_noise, get_solver, sample
from ..errors import ConfigError, StoreError
from ..io.shards import MANIFEST, open_for_writing, read_manifest, shard_count, write_manifest, write_shard
from .store import KIND, indexed_noise, pair_manifest


def pair_solver_nfe(solver: str, steps: int, form: str | None = None) -> int | None:
    """The NFE of a pair solver (a deterministic one of :data:`flowmaps.core.sampling.SOLVERS`: not
    ``renoise``) for ``steps`` steps on a model of ``form``; None for ``adaptive``."""
    try:
        s = get_solver(solver, form)
    except ValueError as err:
        raise ConfigError(f"pair solver: {err}") from None
    if solver == "renoise":
        raise ConfigError("pair solver renoise draws fresh noise at every step; pairs need a deterministic "
                          "sampler (edm, map, euler, heun, rk4 or adaptive)")
    return s.nfe(steps)


def teacher_sampler(model, solver: str, steps: int, t0: float = 0.0) -> Callable[..., tuple[Tensor, int]]:
    """``Φ(z, label) -> (x1, nfe)`` for a loaded model (a run's or a :class:`flowmaps.core.teachers.Teacher`): its
    sampler from noise z to data (t = 1), of class ``label`` for a class-conditional model. Every solve starts at
    the teacher's first time ``t0`` from ``α_{t0} z`` (the data term dropped, as EDM does); ``edm`` runs its Heun
    sampler on ``steps`` σ levels from σ_max = 80 (t0 = 0) or σ(t0)."""
    pair_solver_nfe(solver, steps, model.form)

    @torch.no_grad()
    def phi(z: Tensor, label: Tensor | None = None) -> tuple[Tensor, int]:
        x, grid = from_noise(model, z, steps, t0)
        s = sample(model, x, grid, solver=solver, label=label)
        return s.x, s.nfe

    return phi


@dataclass
class PairTeacher:
    """What identifies a teacher in a manifest (``identity``) plus its map ``phi(z, label) -> (x1, nfe)``.

    A class-conditional teacher (``num_classes`` > 0) makes pair i of class ``i mod num_classes``, so labels,
    like the noise, follow from the index and are not stored."""

    phi: Callable[..., tuple[Tensor, int]]
    identity: dict[str, Any]
    sigma0: float
    shape: tuple[int, ...]
    num_classes: int = 0


def generate_pairs(teacher: PairTeacher, n: int, out: str | Path, seed: int = 0, solver: str = "edm", steps: int = 18,
                   shard_size: int | None = None, batch_size: int = 8192, repair: bool = False, progress: bool = True,
                   stop_after: int | None = None) -> dict[str, Any]:
    """Write ``n`` pairs of ``teacher`` into the store ``out`` (creating or resuming it); returns the manifest.

    Resuming skips the shards the manifest lists; a listed shard that is missing, truncated or fails its
    checksum is an error naming it, or is regenerated with ``repair``. A store of another teacher or other
    settings is refused. ``shard_size`` defaults to the existing store's, else 65,536. ``stop_after``: return
    after that many new shards per process (to test interruption).

    Several processes (a process group, see :mod:`flowmaps.core.distributed`) split the missing shards round-robin:
    rank 0 holds the store's lock and writes the manifest, every rank writes its own shards. Since every z and
    label follow from the index, the store is the same whatever the number of processes.
    """
    rank, _size = world()
    root = Path(out)
    if shard_size is None:
        shard_size = read_manifest(root, KIND)["shard_size"] if (root / MANIFEST).exists() else 65_536
    if n < 1 or shard_size < 1 or batch_size < 1:
        raise ConfigError(f"n, shard_size and batch_size must be >= 1 (got {n}, {shard_size}, {batch_size})")
    want = pair_manifest(n, shard_size, teacher.shape, teacher=teacher.identity, solver=solver, steps=steps,
                         nfe=pair_solver_nfe(solver, steps), seed=seed, sigma0=teacher.sigma0,
                         num_classes=teacher.num_classes, guidance=teacher.identity.get("guidance", 0.0),
                         t0=teacher.identity.get("t0", 0.0))
    lock, m, failure = None, None, None
    try:
        if rank == 0:
            try:
                lock, m = open_for_writing(root, want, repair)
            except Exception as err:
                failure = err
        m, message = _share((m, None if failure is None else str(failure)))
        if failure is not None:
            raise failure
        if message is not None:
            raise StoreError(message)
        m = _generate(teacher, n, root, m, shard_size, batch_size, progress and rank == 0, stop_after)
        return _share(m)
    finally:
        if lock is not None:
            lock.close()


def _share(obj: Any, gather: bool = False) -> Any:
    """Rank 0's ``obj`` on every rank (``gather``: the list of every rank's ``obj``); plain values alone."""
    _rank, size = world()
    if size == 1:
        return [obj] if gather else obj
    import torch.distributed as dist

    if gather:
        out: list[Any] = [None] * size
        dist.all_gather_object(out, obj)
        return out
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _generate(teacher: PairTeacher, n: int, root: Path, m: dict, shard_size: int, batch_size: int, progress: bool,
              stop_after: int | None) -> dict[str, Any]:
    """Make the shards the manifest ``m`` lacks, split over the ranks; rank 0 records each round of them."""
    rank, size = world()
    count = shard_count(m)
    todo = [k for k in range(count) if str(k) not in m["shards"]]
    mine, rounds = todo[rank::size], -(-len(todo) // size)
    if stop_after is not None:
        rounds = min(rounds, stop_after)
    done = n - sum(min(shard_size, n - k * shard_size) for k in todo)
    bar = tqdm(total=n, initial=done, unit="pair", unit_scale=True, disable=not progress, dynamic_ncols=True,
               desc=f"pairs ({m['solver']}, {m['nfe'] or '?'} NFE)")
    t_start = time.perf_counter()
    for i in range(rounds):
        entry: tuple[int, dict] | str | None = None
        if i < len(mine):
            try:
                entry = _make_shard(teacher, root, m["seed"], mine[i], n, shard_size, batch_size, bar)
            except Exception as err:
                if size == 1:
                    raise
                entry = str(err)
        made = _share(entry, gather=True)
        failed = [e for e in made if isinstance(e, str)]
        if failed:
            raise StoreError(failed[0])
        for r, e in enumerate(made):
            if e is not None:
                m["shards"][str(e[0])] = e[1]
                if r != rank:
                    bar.update(e[1]["rows"])
        m["complete"] = len(m["shards"]) == count
        m["seconds"] = m.get("seconds", 0.0) + time.perf_counter() - t_start
        t_start = time.perf_counter()
        if rank == 0:
            write_manifest(root, m)
    bar.close()
    return m


def _make_shard(teacher: PairTeacher, root: Path, seed: int, k: int, n: int, shard_size: int, batch_size: int,
                bar: tqdm) -> tuple[int, dict]:
    """Shard ``k``: pairs ``k·shard_size …`` in teacher batches, written atomically; ``(k, manifest entry)``."""
    start, stop = k * shard_size, min((k + 1) * shard_size, n)
    t_start = time.perf_counter()
    z_rows = np.empty((stop - start, *teacher.shape), dtype=np.float32)
    x1_rows = np.empty_like(z_rows)
    for a in range(start, stop, batch_size):
        b = min(a + batch_size, stop)
        z = indexed_noise(seed, range(a, b), teacher.shape, teacher.sigma0)
        x1, used = teacher.phi(z, class_labels(teacher.num_classes, b - a, start=a))
        if not torch.isfinite(x1).all():
            raise StoreError(f"teacher produced non-finite samples for indices {a}..{b - 1}")
        z_rows[a - start: b - start] = z.numpy()
        x1_rows[a - start: b - start] = x1.detach().float().cpu().numpy()
        bar.update(b - a)
        bar.set_postfix(samples_s=f"{(b - start) / (time.perf_counter() - t_start):.0f}", nfe=used)
    return k, write_shard(root, k, start, {"z": z_rows, "x1": x1_rows})


