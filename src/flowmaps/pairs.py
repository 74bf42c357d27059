"""Teacher pairs ``(z, Φ(z))`` on disk: a sharded, checksummed, resumable store read memory-mapped by training.

A store is a directory::

    manifest.json     format, teacher identity (path, config and weight hashes, its data config), solver,
                      steps, NFE, σ0, shape, seed, n, shard_size and, per finished shard, rows + sha256
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

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from .checkpoint import LOCK_FILE, atomic_write, is_temp_file, lock_folder, remove_stale_temp
from .config import ConfigError, DataConfig
from .data.sources import Source, build_source
from .distributed import world
from .sampling import class_labels, edm_grid, sample, solve_edm, uniform_grid

FORMAT = "flowmaps-pairs/1"
MANIFEST = "manifest.json"
SOLVERS = ("edm", "euler", "heun", "rk4", "adaptive", "map")
_SEED_STRIDE = 2**32


class PairStoreError(ValueError):
    """A pair store that is missing, corrupt, incomplete or made by another teacher; one line for the user."""


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.npy"


def noise(seed: int, index: Tensor | np.ndarray | range, shape: tuple[int, ...], sigma0: float) -> Tensor:
    """``z_i = σ0 · randn(shape)`` from the per-sample generator seeded ``seed · 2³² + i``, stacked over ``index``."""
    out = torch.empty(len(index), *shape)
    for row, i in enumerate(index):
        g = torch.Generator().manual_seed(int(seed) * _SEED_STRIDE + int(i))
        out[row] = torch.randn(*shape, generator=g)
    return sigma0 * out


def sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ----- the teacher's sampler Φ ------------------------------------------------------------------


def solver_plan(solver: str, steps: int, sigma0: float) -> tuple[Tensor | None, int | None]:
    """``(grid, NFE)`` of a teacher solver: ``edm`` is EDM's Heun on its σ grid (:func:`sampling.solve_edm`,
    ``2·steps − 1`` NFE: 35 for 18 steps; grid shown in t); ``adaptive``: no grid, data-dependent NFE."""
    if solver not in SOLVERS:
        raise ConfigError(f"unknown pair solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if solver == "edm":
        return edm_grid(steps, sigma0), 2 * steps - 1
    if solver == "adaptive":
        return None, None
    per_step = {"euler": 1, "heun": 2, "rk4": 4, "map": 1}[solver]
    return uniform_grid(steps), per_step * steps


def teacher_sampler(model, solver: str, steps: int) -> Callable[..., tuple[Tensor, int]]:
    """``Φ(z, label) -> (x1, nfe)`` for a loaded model: its ODE from noise z (t = 0) to data (t = 1), of class
    ``label`` for a class-conditional model; ``edm`` starts from EDM's ``x_σmax = σ_max z/σ0`` (the data term
    dropped, as EDM does) and runs its Heun sampler."""
    grid, _ = solver_plan(solver, steps, model.sigma0)

    @torch.no_grad()
    def phi(z: Tensor, label: Tensor | None = None) -> tuple[Tensor, int]:
        if solver == "edm":
            s = solve_edm(lambda x, t: model.velocity(x, t, label), z, model.sigma0, steps)
        else:
            s = sample(model, z, grid, solver=solver, label=label)
        return s.x, s.nfe

    return phi


# ----- the store --------------------------------------------------------------------------------


@dataclass
class Teacher:
    """What identifies a teacher in a manifest (``identity``) plus its map ``phi(z, label) -> (x1, nfe)``.

    A class-conditional teacher (``num_classes`` > 0) makes pair i of class ``i mod num_classes``, so labels,
    like the noise, follow from the index and are not stored."""

    phi: Callable[..., tuple[Tensor, int]]
    identity: dict[str, Any]
    sigma0: float
    shape: tuple[int, ...]
    num_classes: int = 0


def run_teacher(path: str | Path, solver: str = "edm", steps: int = 18, device: str = "cpu") -> Teacher:
    """A trained run directory as a pair teacher; its identity is the config's and the weights' sha256."""
    from .runs import CHECKPOINT_FILE, CONFIG_FILE, load_run

    run = load_run(path, device=device)
    identity = {"kind": "run", "path": str(Path(path).resolve()),
                "config_sha256": sha256(Path(path) / CONFIG_FILE),
                "checkpoint_sha256": sha256(Path(path) / CHECKPOINT_FILE), "step": run.step,
                "data": run.cfg.data.model_dump(mode="json")}
    return Teacher(teacher_sampler(run.model, solver, steps), identity, run.model.sigma0, run.source.shape,
                   run.model.num_classes)


def _check_manifest(m: dict, want: dict, root: Path) -> None:
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


def _save(path: str, rows: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, rows, allow_pickle=False)


def _write_manifest(root: Path, m: dict) -> None:
    atomic_write(root / MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(m, indent=1)))


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
            ref = noise(m["seed"], range(start, start + entry["rows"]), shape, m["sigma0"]).numpy()
            if not np.array_equal(z, ref):
                problem = "stored z differs from its seeds"
        if problem is not None:
            bad[k] = problem
    return bad


def generate_pairs(teacher: Teacher, n: int, out: str | Path, seed: int = 0, solver: str = "edm", steps: int = 18,
                   shard_size: int | None = None, batch_size: int = 8192, repair: bool = False, progress: bool = True,
                   stop_after: int | None = None) -> dict[str, Any]:
    """Write ``n`` pairs of ``teacher`` into the store ``out`` (creating or resuming it); returns the manifest.

    Resuming skips the shards the manifest lists; a listed shard that is missing, truncated or fails its
    checksum is an error naming it, or is regenerated with ``repair``. A store of another teacher or other
    settings is refused. ``shard_size`` defaults to the existing store's, else 65,536. ``stop_after``: return
    after that many new shards per process (to test interruption).

    Several processes (a process group, see :mod:`flowmaps.distributed`) split the missing shards round-robin:
    rank 0 holds the store's lock and writes the manifest, every rank writes its own shards. Since every z and
    label follow from the index, the store is the same whatever the number of processes.
    """
    rank, size = world()
    root = Path(out)
    if shard_size is None:
        shard_size = read_manifest(root)["shard_size"] if (root / MANIFEST).exists() else 65_536
    if n < 1 or shard_size < 1 or batch_size < 1:
        raise ValueError(f"n, shard_size and batch_size must be >= 1 (got {n}, {shard_size}, {batch_size})")
    _, nfe = solver_plan(solver, steps, teacher.sigma0)
    want = {"format": FORMAT, "teacher": teacher.identity, "solver": solver, "steps": steps, "nfe": nfe,
            "seed": seed, "n": n, "shard_size": shard_size, "shape": list(teacher.shape),
            "sigma0": teacher.sigma0, "dtype": "float32", "layout": "(rows, 2, *shape): [:,0]=z, [:,1]=phi(z)",
            "noise": "z_i = sigma0 * torch.randn(shape, generator=torch.Generator().manual_seed(seed*2**32 + i))",
            "num_classes": teacher.num_classes, "labels": "label_i = i mod num_classes (when num_classes > 0)",
            "shards": {}, "complete": False}
    lock, m, failure = None, None, None
    try:
        if rank == 0:
            try:
                lock, m = _open_store(root, want, repair)
            except Exception as err:  # every rank stops with rank 0's message
                failure = err
        m, message = _share((m, None if failure is None else str(failure)))
        if failure is not None:
            raise failure
        if message is not None:
            raise PairStoreError(message)
        m = _generate(teacher, n, root, m, shard_size, batch_size, progress and rank == 0, stop_after)
        return _share(m)
    finally:
        if lock is not None:
            lock.close()


def _share(obj: Any, gather: bool = False) -> Any:
    """Rank 0's ``obj`` on every rank (``gather``: the list of every rank's ``obj``); plain values alone."""
    rank, size = world()
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


def _open_store(root: Path, want: dict, repair: bool) -> tuple[Any, dict[str, Any]]:
    """Create or reopen the store under its lock: ``(lock, manifest)`` with damaged shards dropped (``repair``)."""
    if root.exists() and not (root / MANIFEST).exists() and any(
            p.name != LOCK_FILE and not is_temp_file(p) for p in root.iterdir()):
        raise PairStoreError(f"{root}: exists and is not a pair store; choose another --out")
    root.mkdir(parents=True, exist_ok=True)
    lock = lock_folder(root, "another process is writing this pair store")
    try:
        remove_stale_temp(root)  # left by a write that was killed
        if (root / MANIFEST).exists():
            m = read_manifest(root)
            _check_manifest(m, want, root)
            bad = verify_store(root, full=True)
            if bad and not repair:
                names = ", ".join(f"{shard_name(k)} ({why})" for k, why in sorted(bad.items()))
                raise PairStoreError(f"{root}: damaged shards: {names}; rerun with --repair to regenerate them")
            for k in bad:
                del m["shards"][str(k)]
                m["complete"] = False
        else:
            m = want
            _write_manifest(root, m)
    except BaseException:
        if lock is not None:
            lock.close()
        raise
    return lock, m


def _generate(teacher: Teacher, n: int, root: Path, m: dict, shard_size: int, batch_size: int, progress: bool,
              stop_after: int | None) -> dict[str, Any]:
    """Make the shards the manifest ``m`` lacks, split over the ranks; rank 0 records each round of them."""
    rank, size = world()
    count = -(-n // shard_size)
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
            raise PairStoreError(failed[0])
        for r, e in enumerate(made):
            if e is not None:
                m["shards"][str(e[0])] = e[1]
                if r != rank:
                    bar.update(e[1]["rows"])
        m["complete"] = len(m["shards"]) == count
        m["seconds"] = m.get("seconds", 0.0) + time.perf_counter() - t_start
        t_start = time.perf_counter()
        if rank == 0:
            _write_manifest(root, m)
    bar.close()
    return m


def _make_shard(teacher: Teacher, root: Path, seed: int, k: int, n: int, shard_size: int, batch_size: int,
                bar: tqdm) -> tuple[int, dict]:
    """Shard ``k``: pairs ``k·shard_size …`` in teacher batches, written atomically; ``(k, manifest entry)``."""
    start, stop = k * shard_size, min((k + 1) * shard_size, n)
    t_start = time.perf_counter()
    rows = np.empty((stop - start, 2, *teacher.shape), dtype=np.float32)
    for a in range(start, stop, batch_size):
        b = min(a + batch_size, stop)
        z = noise(seed, range(a, b), teacher.shape, teacher.sigma0)
        x1, used = teacher.phi(z, class_labels(teacher.num_classes, b - a, start=a))
        if not torch.isfinite(x1).all():
            raise PairStoreError(f"teacher produced non-finite samples for indices {a}..{b - 1}")
        rows[a - start: b - start, 0] = z.numpy()
        rows[a - start: b - start, 1] = x1.detach().float().cpu().numpy()
        bar.update(b - a)
        bar.set_postfix(samples_s=f"{(b - start) / (time.perf_counter() - t_start):.0f}", nfe=used)
    path = root / shard_name(k)
    atomic_write(path, lambda tmp: _save(tmp, rows))
    return k, {"file": shard_name(k), "start": start, "rows": stop - start, "sha256": sha256(path)}


# ----- reading: the training source --------------------------------------------------------------


class PairStore:
    """A finished store, memory-mapped: ``len`` pairs, ``get(idx) -> (z, x1)`` for global indices."""

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
        for k in range(len(m["shards"])):
            problem = _shard_problem(self.root, k, m["shards"][str(k)], self.shape, full=False)
            if problem is not None:
                raise PairStoreError(f"{self.root / shard_name(k)}: {problem}; rerun `flowmaps pairs ... --repair`")
            self.shards.append(np.load(self.root / shard_name(k), mmap_mode="r", allow_pickle=False))

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


class PairSource(Source):
    """Training batches ``{"x0": z, "x1": Φ(z)}`` from a store; ``real(n)`` draws the teacher's own data."""

    real_source: Source | None = None

    def real(self, n: int) -> Tensor:
        if self.real_source is None:
            raise PairStoreError("this pair store does not record its teacher's data; no real samples available")
        return self.real_source.sample(n)["x1"]


def pair_source(cfg: DataConfig) -> Source:
    """The :class:`Source` of ``data.kind=pairs`` at ``data.path``; uniform random indices from the global RNG;
    pairs of a class-conditional teacher carry ``label = index mod num_classes``."""
    store = PairStore(cfg.path)
    teacher_data = store.manifest["teacher"].get("data")
    real = build_source(DataConfig(**teacher_data)) if teacher_data else None
    probe = torch.randperm(len(store), generator=torch.Generator().manual_seed(0))[:20_000]
    x1_sample = store.get(probe)[1]

    def draw(n: int, g: torch.Generator | None = None) -> dict[str, Tensor]:
        idx = torch.randint(len(store), (n,), generator=g)
        z, x1 = store.get(idx)
        return {"x0": z, "x1": x1, "label": idx % store.num_classes} if store.num_classes else {"x0": z, "x1": x1}

    src = PairSource(shape=store.shape, sigma_data=float(x1_sample.std()), name=f"pairs:{cfg.path}",
                     sigma0=float(store.manifest["sigma0"]), num_classes=store.num_classes,
                     bounds=real.bounds if real is not None else None,
                     mixture=real.mixture if real is not None else None,
                     _sampler=draw, _reference=real._reference if real is not None else
                     (lambda n, g: draw(n, g)["x1"]))
    src.real_source = real
    return src

