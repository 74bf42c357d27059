"""Latent data: images encoded once by an autoencoder into a sharded store (:mod:`flowmaps.io.shards`, kind
``latents``), then trained on like any data set (``data.kind: latents``); samples are decoded by the same
autoencoder.

The store holds the field ``x1`` (float32 latents ``z = c · E(x)``, E the encoder's mean, c its scaling factor,
so the store is a deterministic function of the images whatever the batch size or interruptions) and, for
labelled images, ``label`` (int64). The manifest records the autoencoder's identity (its folder and the
SHA-256 of its files), the scaling factor and the image data section it encoded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from ..core.options import Options
from ..errors import ConfigError, StoreError
from ..io.shards import ShardReader, manifest, open_for_writing, shard_count, write_manifest, write_shard
from .sources import Source

KIND = "latents"


def encode_store(encode: Callable[[Tensor], Tensor], images: Tensor, labels: Tensor | None, out: str | Path,
                 about: dict[str, Any], shard_size: int = 65_536, batch_size: int = 256, repair: bool = False,
                 progress: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Encode ``images`` (N, C, H, W) with ``encode`` into the latent store ``out`` (created or resumed; a store
    of other images or another autoencoder is refused); returns the manifest. ``about``: what made it (the
    autoencoder's identity, the data section). ``stop_after``: return after that many new shards."""
    root = Path(out)
    with torch.no_grad():
        probe = encode(images[:1])
    fields = {"x1": (tuple(probe.shape[1:]), "float32")}
    if labels is not None:
        fields["label"] = ((), "int64")
    want = manifest(KIND, len(images), shard_size, fields, **about)
    lock, m = open_for_writing(root, want, repair)
    try:
        todo = [k for k in range(shard_count(m)) if str(k) not in m["shards"]][:stop_after]
        bar = tqdm(total=len(images), initial=len(images) - sum(min(shard_size, len(images) - k * shard_size)
                                                                   for k in todo),
                   unit="image", disable=not progress, dynamic_ncols=True, desc="encode")
        for k in todo:
            start, stop = k * shard_size, min((k + 1) * shard_size, len(images))
            t_start = time.perf_counter()
            with torch.no_grad():
                z = torch.cat([encode(images[a: min(a + batch_size, stop)]) for a in range(start, stop, batch_size)])
            if not torch.isfinite(z).all():
                raise StoreError(f"the autoencoder made non-finite latents for images {start}..{stop - 1}")
            arrays = {"x1": z.float().cpu().numpy()}
            if labels is not None:
                arrays["label"] = labels[start:stop].numpy().astype(np.int64)
            m["shards"][str(k)] = write_shard(root, k, start, arrays)
            m["complete"] = len(m["shards"]) == shard_count(m)
            m["seconds"] = m.get("seconds", 0.0) + time.perf_counter() - t_start
            write_manifest(root, m)
            bar.update(stop - start)
        bar.close()
    finally:
        lock.close()
    return m


class LatentSource(Source):
    """Uniform random rows of a latent store (global RNG), with labels when the images had them; ``reference``
    is seeded draws of the same rows (the latents of the training images)."""

    def __init__(self, store: ShardReader) -> None:
        self.store, self.name = store, f"latents:{store.root}"
        self.shape = tuple(store.fields["x1"]["shape"])
        self.labelled = "label" in store.fields
        self.num_classes = int(self.store.get(np.arange(len(store)), ("label",))["label"].max()) + 1 \
            if self.labelled else 0
        probe = torch.randperm(len(store), generator=torch.Generator().manual_seed(0))[:20_000]
        self.sigma_data = float(self._rows(probe)["x1"].std())
        self.autoencoder = store.manifest["autoencoder"]  # what decodes samples (see flowmaps.run.autoencoders)

    def _rows(self, idx: Tensor) -> dict[str, Tensor]:
        rows = self.store.get(idx.numpy())
        out = {"x1": torch.from_numpy(rows["x1"])}
        if self.labelled:
            out["label"] = torch.from_numpy(rows["label"])
        return out

    def sample(self, n: int) -> dict[str, Tensor]:
        return self._rows(torch.randint(len(self.store), (n,)))

    def reference(self, n: int, seed: int = 1234) -> Tensor:
        return self._rows(torch.randint(len(self.store), (n,), generator=torch.Generator().manual_seed(seed)))["x1"]


class LatentsData(Options):
    """``data.kind: latents`` — a complete latent store written by ``flowmaps encode`` at ``path``."""

    kind: Literal["latents"] = "latents"
    path: str

    def build(self, nested: Callable[[Any], Source]) -> Source:
        if not Path(self.path).is_dir():
            raise ConfigError(f"data.path {self.path}: no such folder (make it with flowmaps encode)")
        return LatentSource(ShardReader(self.path, KIND))
