"""``data.kind: prepared`` — training images streamed from a prepared store (``flowmaps prepare``).

A :class:`torch.utils.data.DataLoader` with ``workers`` processes reads each batch's rows from the store's uint8
shards (positional reads, :class:`flowmaps.io.shards.ShardReader`) and turns them into float batches in [−1, 1]
(``x/127.5 − 1``), flipped on the fly (``hflip``). Only the rows of the batches in flight are read, so a training
process's memory does not grow with the store's size.

Batch ``k`` of rank ``r`` (of ``W`` ranks) is a function of (seed, k, r) alone, so a resumed run draws the
same batches as an uninterrupted one with nothing in the checkpoint but the step: epoch ``e``'s permutation
``P_e`` of the ``n`` training rows (seeded by (seed, e)) is dealt to the ranks, rank r holding
``P_e[r], P_e[r + W], …`` (``⌊n/W⌋`` rows, its own share); its batch k takes the positions ``kB … kB + B − 1``
of that share, running on into epoch e + 1. The flips of batch k come from a generator seeded by (seed, r, k).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..core.distributed import world
from ..core.options import Options
from ..errors import DataError, FlowmapsError
from ..io.shards import ShardReader
from .images import split
from .sources import Source

KIND = "images"


class ImageStore(ShardReader):
    """A complete prepared image store: ``get(idx) -> {"x": uint8 (k, C, H, W), "label": int64 (k,)}``, its
    image ``shape``, ``num_classes``, pixel ``mean``/``std`` (of ``x/127.5 − 1``) and ``checksum`` (the SHA-256
    of its shards' digests: the data set's identity)."""

    def __init__(self, root: str | Path) -> None:
        super().__init__(root, KIND)
        m = self.manifest
        self.shape = tuple(int(s) for s in self.fields["x"]["shape"])
        self.num_classes = int(m.get("num_classes", 0))
        count, total, squares = (sum(e["moments"][i] for e in m["shards"].values()) for i in range(3))
        self.mean = total / count
        self.std = math.sqrt(max(squares / count - self.mean**2, 0.0))
        digests = json.dumps({k: m["shards"][k]["sha256"] for k in sorted(m["shards"], key=int)}, sort_keys=True)
        self.checksum = hashlib.sha256(digests.encode()).hexdigest()


@lru_cache(maxsize=2)
def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_positions(n: int, batch: int, seed: int, step: int, rank: int = 0, ranks: int = 1) -> np.ndarray:
    """Positions in 0 … n − 1 of batch ``step`` of ``rank`` (see the module docstring)."""
    share = n // ranks
    if share < 1:
        raise DataError(f"{n} training images cannot be shared by {ranks} processes")
    q = step * batch + np.arange(batch)
    epoch, j = q // share, q % share
    out = np.empty(batch, dtype=np.int64)
    for e in np.unique(epoch):
        sel = epoch == e
        out[sel] = _permutation(n, seed, int(e))[rank + ranks * j[sel]]
    return out


def flips(batch: int, seed: int, step: int, rank: int = 0) -> np.ndarray:
    """Which images of batch ``step`` of ``rank`` are mirrored (each with probability 1/2)."""
    return np.random.default_rng([seed, rank, step, 1]).random(batch) < 0.5


def one_line(err: Exception) -> FlowmapsError:
    """A flowmaps error raised in a DataLoader worker as one line again (the loader adds the worker's traceback)."""
    lines = [ln for ln in str(err).splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    prefix = f"{type(err).__module__}.{type(err).__name__}: "
    return type(err)(last.removeprefix(prefix))


class _Steps(Dataset):
    """Item ``k``: training batch ``k`` of this rank, read and converted in a loader worker."""

    def __init__(self, source: StoreSource, batch: int, seed: int, rank: int, ranks: int) -> None:
        self.source, self.batch, self.seed, self.rank, self.ranks = source, batch, seed, rank, ranks

    def __getitem__(self, step: int) -> dict[str, Tensor]:
        s = self.source
        pos = batch_positions(s.n_train, self.batch, self.seed, step, self.rank, self.ranks)
        flip = flips(self.batch, self.seed, step, self.rank) if s.flip else None
        return s.rows(pos, flip)


class StoreSource(Source):
    """Training batches streamed from an :class:`ImageStore` (see the module docstring); ``sample(n)`` draws
    uniformly with the global RNG (the protocol's in-memory draw), ``reference`` is the held-out split when there
    is one, else the training rows."""

    def __init__(self, store: ImageStore, flip: bool = False, heldout: float = 0.0, seed: int = 0,
                 labels: bool = True, workers: int = 2) -> None:
        self.store, self.flip, self.workers = store, flip, workers
        self.name, self.shape, self.bounds = f"prepared:{store.root}", store.shape, (-1.0, 1.0)
        self.sigma_data = store.std
        self.num_classes = store.num_classes if labels else 0
        self.train_idx, self.held_idx = (None, None) if heldout == 0 else (
            t.numpy() for t in split(len(store), heldout, seed))
        self.n_train = len(store) if self.train_idx is None else len(self.train_idx)
        if self.n_train < 1:
            raise DataError(f"{store.root}: no training images left after holding out {heldout:g}")
        self.split_id = f"{store.checksum}:heldout={heldout:g}:seed={seed}"
        self.stats_dir = store.root / "stats"

    def rows(self, pos: np.ndarray, flip: np.ndarray | None = None, held: bool = False) -> dict[str, Tensor]:
        """Training (or held-out) rows at positions ``pos`` as a batch, mirrored where ``flip``."""
        index = self.held_idx if held else self.train_idx
        got = self.store.get(pos if index is None else index[pos])
        x = torch.from_numpy(got["x"]).float() / 127.5 - 1
        if flip is not None:
            x = torch.where(torch.from_numpy(flip)[:, None, None, None], x.flip(-1), x)
        return {"x1": x, "label": torch.from_numpy(got["label"])} if self.num_classes else {"x1": x}

    def sample(self, n: int) -> dict[str, Tensor]:
        pos = torch.randint(self.n_train, (n,)).numpy()
        flip = (torch.rand(n) < 0.5).numpy() if self.flip else None
        return self.rows(pos, flip)

    def batches(self, batch_size: int, step: int = 0, seed: int = 0) -> Iterator[dict[str, Tensor]]:
        rank, ranks = world()
        steps = _Steps(self, batch_size, seed, rank, ranks)
        loader = DataLoader(steps, batch_size=None, sampler=itertools.count(step), num_workers=self.workers,
                            prefetch_factor=2 if self.workers else None,
                            generator=torch.Generator().manual_seed(seed))  # not the global RNG
        try:
            yield from loader
        except FlowmapsError as err:
            raise one_line(err) from None

    def _reference_rows(self) -> tuple[int, bool]:
        return (len(self.held_idx), True) if self.held_idx is not None else (self.n_train, False)

    def reference(self, n: int, seed: int = 1234) -> Tensor:
        count, held = self._reference_rows()
        g = torch.Generator().manual_seed(seed)
        pos = torch.randperm(count, generator=g)[:n] if held else torch.randint(count, (n,), generator=g)
        return self.rows(pos.numpy(), held=held)["x1"]

    def reference_batches(self, batch_size: int) -> Iterator[Tensor]:
        count, held = self._reference_rows()
        for a in range(0, count, batch_size):
            yield self.rows(np.arange(a, min(a + batch_size, count)), held=held)["x1"]

    def reference_id(self) -> str:
        return self.split_id


class PreparedData(Options):
    """``data.kind: prepared`` — a store written by ``flowmaps prepare`` at ``path``, streamed by ``workers``
    loader processes; ``hflip`` mirrors a random half of every batch; ``heldout`` keeps a fraction (fixed by
    ``seed``) out of training as the Fréchet distance's reference; ``labels: false`` drops the labels."""

    kind: Literal["prepared"] = "prepared"
    path: str
    hflip: bool = False
    heldout: float = Field(0.0, ge=0, lt=1)
    seed: int = Field(0, description="seed of the held-out split")
    labels: bool = True
    workers: int = Field(2, ge=0, description="DataLoader worker processes (0: read in the training process)")

    def build(self, nested: Callable[[Any], Source]) -> Source:
        return StoreSource(ImageStore(self.path), self.hflip, self.heldout, self.seed, self.labels, self.workers)
