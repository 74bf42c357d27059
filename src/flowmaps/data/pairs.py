"""``data.kind: pairs`` — training batches ``{"x0": z, "x1": Φ(z)}`` from a teacher pair store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
from pydantic import ValidationError
from torch import Tensor

from ..core.options import Options
from ..errors import StoreError
from ..pairs.store import PairStore
from .sources import Source


class PairSource(Source):
    """Uniform random pairs of a store (global RNG); a class-conditional teacher's pair i carries
    ``label = i mod num_classes``. ``real``, ``reference``, ``bounds`` and ``mixture`` are those of the teacher's
    own data when the store records it (a store made by a flowmaps run does), else the pairs' ``x1``."""

    def __init__(self, store: PairStore, teacher_data: Source | None) -> None:
        self.store, self.teacher_data = store, teacher_data
        self.shape, self.num_classes = store.shape, store.num_classes
        self.name, self.sigma0 = f"pairs:{store.root}", float(store.manifest["sigma0"])
        probe = torch.randperm(len(store), generator=torch.Generator().manual_seed(0))[:20_000]
        self.sigma_data = float(store.pairs(probe)[1].std())
        if teacher_data is not None:
            self.bounds, self.mixture = teacher_data.bounds, teacher_data.mixture
            self.stats_dir = teacher_data.stats_dir

    def _rows(self, idx: Tensor) -> dict[str, Tensor]:
        z, x1 = self.store.pairs(idx)
        return {"x0": z, "x1": x1, "label": idx % self.num_classes} if self.num_classes else {"x0": z, "x1": x1}

    def sample(self, n: int) -> dict[str, Tensor]:
        return self._rows(torch.randint(len(self.store), (n,)))

    def reference(self, n: int, seed: int = 1234) -> Tensor:
        if self.teacher_data is not None:
            return self.teacher_data.reference(n, seed)
        return self._rows(torch.randint(len(self.store), (n,), generator=torch.Generator().manual_seed(seed)))["x1"]

    def reference_batches(self, batch_size: int) -> Iterator[Tensor]:
        return self._teacher_data().reference_batches(batch_size)

    def reference_id(self) -> str:
        return self._teacher_data().reference_id()

    def _teacher_data(self) -> Source:
        if self.teacher_data is None:
            raise StoreError(f"{self.store.root}: the store records no teacher data to measure samples against")
        return self.teacher_data

    def real(self, n: int) -> Tensor:
        return (self.teacher_data if self.teacher_data is not None else self).sample(n)["x1"]


class PairsData(Options):
    """``data.kind: pairs`` — a complete store written by ``flowmaps pairs`` at ``path``."""

    kind: Literal["pairs"] = "pairs"
    path: str

    def build(self, nested: Callable[[Any], Source]) -> Source:
        store = PairStore(self.path)
        data = store.manifest["teacher"].get("data")
        try:
            teacher_data = nested(data) if data else None
        except ValidationError as err:
            raise StoreError(f"{self.path}: the manifest's teacher data is not a data section this flowmaps "
                                 f"reads ({err.errors()[0]['msg']})") from None
        return PairSource(store, teacher_data)
