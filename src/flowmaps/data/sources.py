"""Data sources: what training draws minibatches from and evaluation measures against.

A :class:`Source` is a small protocol: ``shape``, ``sigma_data``, ``num_classes`` and

- ``sample(n)``: a training batch ``{"x1": data, ...}`` (pair stores add ``"x0"``, labelled sets ``"label"``)
  drawn with the global torch RNG, so a resumed run draws the same batches as an uninterrupted one;
- ``batches(batch_size, step, seed)``: the stream of training batches the trainer reads from training step
  ``step`` on (by default ``sample`` again and again; a source streamed from disk yields batch k as a function of
  (seed, k, rank) from its own loader, so a resumed run reads the same batches);
- ``reference(n, seed)``: held-out target samples, drawn with their own generator so every evaluation compares
  against the same set;
- ``reference_batches(batch_size)`` and ``reference_id()`` (image sets): the whole reference set of the Fréchet
  distance in a fixed order, and a checksum that names it (the key of its cached statistics);
- ``real(n)``: draws of the real data distribution (for an adversarial loss: the teacher's own data when the
  source is teacher pairs).

Each data kind keeps its options model beside its source (``data.kind`` selects it); :func:`build_source`
builds the source an options model describes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from ..core.options import Options
from ..core.teachers import GaussianMixture
from ..errors import DataError


class Source:
    """A distribution to train on; subclasses set the attributes and implement ``sample`` and ``reference``."""

    shape: tuple[int, ...]
    sigma_data: float
    name: str = ""
    num_classes: int = 0  # batches carry "label" in 0 … num_classes − 1 when > 0
    bounds: tuple[float, float] | None = None  # square range of 2-D data (plots, the KL histogram)
    sigma0: float | None = None  # the base scale the data was made with (teacher pairs), if fixed
    mixture: GaussianMixture | None = None  # the exact distribution, when the data is a Gaussian mixture
    stats_dir: Path | None = None  # where reference statistics are cached beside the data (a prepared store)

    def sample(self, n: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def reference(self, n: int, seed: int = 1234) -> Tensor:
        raise NotImplementedError

    def real(self, n: int) -> Tensor:
        return self.sample(n)["x1"]

    def batches(self, batch_size: int, step: int = 0, seed: int = 0) -> Iterator[dict[str, Tensor]]:
        while True:
            yield self.sample(batch_size)

    def reference_batches(self, batch_size: int) -> Iterator[Tensor]:
        raise NotImplementedError(f"{self.name}: no reference set of images")

    def reference_id(self) -> str:
        raise NotImplementedError(f"{self.name}: no reference set of images")


def check_scale(source: Source) -> Source:
    """A source whose data has a positive, finite spread (a constant data set cannot be preconditioned)."""
    if not math.isfinite(source.sigma_data) or source.sigma_data <= 0:
        raise DataError(f"{source.name}: the data has standard deviation {source.sigma_data:.3g}; "
                        "training needs data that varies")
    return source


class MixtureSource(Source):
    """Draws of a Gaussian mixture; ``labels``: each batch also carries the component of every draw as its class."""

    def __init__(self, mix: GaussianMixture, name: str = "gmm", labels: bool = False) -> None:
        self.mixture, self.name, self.labels = mix, name, labels
        self.shape, self.sigma_data = (mix.dim,), mix.std()
        self.num_classes = mix.components if labels else 0
        if mix.dim == 2:
            lo = float((mix.means - 4 * mix.stds).min())
            hi = float((mix.means + 4 * mix.stds).max())
            self.bounds = (min(lo, -hi), max(hi, -lo))

    def sample(self, n: int) -> dict[str, Tensor]:
        x, k = self.mixture.sample_labelled(n)
        return {"x1": x, "label": k} if self.labels else {"x1": x}

    def reference(self, n: int, seed: int = 1234) -> Tensor:
        return self.mixture.sample(n, torch.Generator().manual_seed(seed))


def hflip(x: Tensor) -> Tensor:
    """Flip a random half of the images (each with probability 1/2, global RNG) along the width."""
    return torch.where((torch.rand(len(x)) < 0.5)[:, None, None, None], x.flip(-1), x)


class TensorSource(Source):
    """A finite data set in memory: batches are uniform draws (with replacement) of its training rows
    (optionally flipped horizontally); ``reference`` returns up to n held-out rows in a seeded order, or, with
    none held out, n seeded draws of the training rows."""

    def __init__(self, x: Tensor, name: str, labels: Tensor | None = None, heldout: Tensor | None = None,
                 flip: bool = False, bounds: tuple[float, float] | None = None) -> None:
        self.x, self.labels, self.flip, self.name, self.bounds = x, labels, flip, name, bounds
        self.heldout = heldout if heldout is not None and len(heldout) else None
        self.shape, self.sigma_data = tuple(x.shape[1:]), float(x.std()) if len(x) > 1 else 0.0
        self.num_classes = int(labels.max()) + 1 if labels is not None else 0

    def sample(self, n: int) -> dict[str, Tensor]:
        idx = torch.randint(len(self.x), (n,))
        x = self.x[idx]
        if self.flip:
            x = hflip(x)
        return {"x1": x, "label": self.labels[idx]} if self.labels is not None else {"x1": x}

    def reference(self, n: int, seed: int = 1234) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        if self.heldout is None:
            return self.x[torch.randint(len(self.x), (n,), generator=g)]
        return self.heldout[torch.randperm(len(self.heldout), generator=g)[:n]]

    def _reference_set(self) -> Tensor:
        return self.heldout if self.heldout is not None else self.x

    def reference_batches(self, batch_size: int) -> Iterator[Tensor]:
        ref = self._reference_set()
        for a in range(0, len(ref), batch_size):
            yield ref[a:a + batch_size]

    def reference_id(self) -> str:
        """The SHA-256 of the reference set's float32 bytes."""
        return hashlib.sha256(self._reference_set().float().contiguous().numpy().tobytes()).hexdigest()


class GMMData(Options):
    """``data.kind: gmm`` — a Gaussian mixture with exact velocity and flow map (it can be its own teacher):
    ``components`` means uniform on the sphere of ``radius`` in ``dim`` dimensions, isotropic ``std``;
    ``labels``: batches carry each draw's component as its class."""

    kind: Literal["gmm"] = "gmm"
    dim: int = Field(2, ge=1)
    components: int = Field(8, ge=1)
    std: float = Field(0.1, gt=0)
    radius: float = Field(1.0, gt=0)
    seed: int = 0
    labels: bool = False

    def build(self, nested: Callable[[Any], Source]) -> Source:
        mix = GaussianMixture.random(self.dim, self.components, self.std, self.radius, self.seed)
        return MixtureSource(mix, f"gmm{self.dim}d", labels=self.labels)


class ArrayData(Options):
    """``data.kind: array`` — a user's ``.npy``/``.npz`` of shape (N, *dims) (``key``: the array of an .npz)."""

    kind: Literal["array"] = "array"
    path: str
    key: str | None = None

    def build(self, nested: Callable[[Any], Source]) -> Source:
        from ..io.arrays import load_array

        x = load_array(self.path, self.key)
        bounds = None
        if x.dim() == 2 and x.shape[1] == 2:  # a square around the data, for plots and the KL histogram
            r = float(x.abs().max()) * 1.05
            bounds = (-r, r)
        return TensorSource(x, name=str(self.path), bounds=bounds)
