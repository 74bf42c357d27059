"""Data sources: what training draws minibatches from and evaluation measures against.

A :class:`Source` is a small protocol: ``shape``, ``sigma_data``, ``num_classes`` and

- ``sample(n)``: a training batch ``{"x1": data, ...}`` (pair stores add ``"x0"``, labelled sets ``"label"``)
  drawn with the global torch RNG, so a resumed run draws the same batches as an uninterrupted one;
- ``batches(batch_size)``: the stream of training batches the trainer reads (by default ``sample`` again and
  again; a source streamed from disk yields batches by index from its own loader);
- ``reference(n, seed)``: held-out target samples, drawn with their own generator so every evaluation compares
  against the same set;
- ``real(n)``: draws of the real data distribution (for an adversarial loss: the teacher's own data when the
  source is teacher pairs).

Each data kind keeps its options model beside its source (``data.kind`` selects it); :func:`build_source`
builds the source an options model describes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
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

    def sample(self, n: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def reference(self, n: int, seed: int = 1234) -> Tensor:
        raise NotImplementedError

    def real(self, n: int) -> Tensor:
        return self.sample(n)["x1"]

    def batches(self, batch_size: int) -> Iterator[dict[str, Tensor]]:
        while True:
            yield self.sample(batch_size)


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
