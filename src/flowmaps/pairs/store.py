"""Teacher pairs ``(z, Φ(z))`` on disk: a sharded store (:mod:`flowmaps.io.shards`) of kind ``pairs`` with the
fields ``z`` (noise, the batch's "x0") and ``x1`` (``Φ(z)``), both float32 of the data's shape. The manifest also
records the teacher's identity (path, config and weight hashes, its data section), solver, steps, NFE, σ0, the
noise seed, the classes of a class-conditional teacher, its guidance scale and its first time t0.

Pair ``i``'s noise is ``z_i = σ0 · randn(shape, generator=torch.Generator().manual_seed(seed · 2³² + i))``.
Because every z depends only on (seed, i), a store is the same whatever the batch size, the number of processes
or where a run was interrupted, and any shard can be made again on its own. z is stored although it is
reproducible because recreating it costs one generator per sample (about 8 µs each on a CPU core, as much as a
small training step per batch) while reading it from a shard is free; :func:`noise_problems`
recomputes it from the seeds. A class-conditional teacher makes pair ``i`` of class ``i mod num_classes``
(every class equally often): the label follows from the index and is not stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..io.shards import ShardReader, manifest, read_manifest, shard_file, verify

KIND = "pairs"
_SEED_STRIDE = 2**32


def indexed_noise(seed: int, index: Tensor | np.ndarray | range, shape: tuple[int, ...], sigma0: float) -> Tensor:
    """``z_i = σ0 · randn(shape)`` from the per-sample generator seeded ``seed · 2³² + i``, stacked over ``index``."""
    out = torch.empty(len(index), *shape)
    for row, i in enumerate(index):
        g = torch.Generator().manual_seed(int(seed) * _SEED_STRIDE + int(i))
        out[row] = torch.randn(*shape, generator=g)
    return sigma0 * out


def pair_manifest(n: int, shard_size: int, shape: tuple[int, ...], **about: Any) -> dict[str, Any]:
    """A new pair store's manifest (``about``: teacher, solver, steps, nfe, seed, sigma0, num_classes, guidance,
    t0)."""
    return manifest(KIND, n, shard_size, {"z": (shape, "float32"), "x1": (shape, "float32")}, **about,
                    noise="z_i = sigma0 * torch.randn(shape, generator=torch.Generator().manual_seed(seed*2**32 + i))",
                    labels="label_i = i mod num_classes (when num_classes > 0)")


def verify_store(root: str | Path, full: bool = True, check_noise: bool = False) -> dict[int, str]:
    """``{shard: "file (why)"}`` for every listed shard that is missing, truncated, reshaped, fails its SHA-256
    or holds non-finite values; ``check_noise`` also recomputes every z from its seed."""
    root = Path(root)
    m = read_manifest(root, KIND)
    bad = verify(root, m, full)
    shape = tuple(m["fields"]["z"]["shape"])
    for key, entry in m["shards"].items() if check_noise else ():
        if int(key) in bad:
            continue
        z = np.load(root / shard_file(int(key), "z"), mmap_mode="r", allow_pickle=False)
        ref = indexed_noise(m["seed"], range(entry["start"], entry["start"] + entry["rows"]), shape, m["sigma0"])
        if not np.array_equal(z, ref.numpy()):
            bad[int(key)] = f"{shard_file(int(key), 'z')} (stored z differs from its seeds)"
    return bad


class PairStore(ShardReader):
    """A complete pair store, verified once: ``get(idx) -> (z, x1)`` for global indices."""

    def __init__(self, root: str | Path) -> None:
        super().__init__(root, KIND)
        self.shape = tuple(self.fields["x1"]["shape"])
        self.num_classes = int(self.manifest.get("num_classes", 0))

    def pairs(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        rows = self.get(idx.cpu().numpy())
        return torch.from_numpy(rows["z"]), torch.from_numpy(rows["x1"])
