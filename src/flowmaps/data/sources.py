"""Data sources: what the training loop draws minibatches from, built from ``DataConfig``.

A source yields batches ``{"x1": data, ...}`` (pair stores add ``"x0"``, labelled sets ``"label"``) using the
global torch RNG, so a resumed run draws the same batches as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..config import ConfigError
from ..teachers import GaussianMixture


@dataclass
class Source:
    """A distribution to train on: ``sample(n)`` draws a batch, ``reference(n)`` draws held-out targets."""

    shape: tuple[int, ...]
    sigma_data: float
    bounds: tuple[float, float] | None = None
    mixture: GaussianMixture | None = None
    name: str = ""
    sigma0: float | None = None  # the base scale the data was made with (teacher pairs), if fixed
    num_classes: int = 0  # batches carry "label" in 0 … num_classes − 1 when > 0
    _sampler: object = field(default=None, repr=False)
    _reference: object = field(default=None, repr=False)

    def sample(self, n: int) -> dict[str, Tensor]:
        return self._sampler(n)

    def reference(self, n: int, seed: int = 1234) -> Tensor:
        """``n`` target samples, drawn with their own seed so every evaluation compares against the same set."""
        return self._reference(n, torch.Generator().manual_seed(seed))


def toy_source(name: str) -> Source:
    from .toy import sample_toy, toy_bounds

    ref = sample_toy(name, 100_000, torch.Generator().manual_seed(0))
    return Source(shape=(2,), sigma_data=float(ref.std()), bounds=toy_bounds(name), name=name,
                  _sampler=lambda n: {"x1": sample_toy(name, n)},
                  _reference=lambda n, g: sample_toy(name, n, g))


def mixture_source(mix: GaussianMixture, name: str = "gmm", labels: bool = False) -> Source:
    """Draws of the mixture; ``labels``: each batch also carries the component of every draw as its class."""
    bounds = None
    if mix.dim == 2:
        lo = float((mix.means - 4 * mix.stds).min())
        hi = float((mix.means + 4 * mix.stds).max())
        bounds = (min(lo, -hi), max(hi, -lo))

    def draw(n: int) -> dict[str, Tensor]:
        x, k = mix.sample_labelled(n)
        return {"x1": x, "label": k} if labels else {"x1": x}

    return Source(shape=(mix.dim,), sigma_data=mix.std(), bounds=bounds, mixture=mix, name=name,
                  num_classes=mix.components if labels else 0,
                  _sampler=draw, _reference=lambda n, g: mix.sample(n, g))


def tensor_source(x: Tensor, name: str, labels: Tensor | None = None) -> Source:
    """A finite dataset: batches are uniform draws (with replacement across batches) of its rows."""

    def draw(n: int, g: torch.Generator | None = None) -> dict[str, Tensor]:
        idx = torch.randint(len(x), (n,), generator=g)
        out = {"x1": x[idx]}
        if labels is not None:
            out["label"] = labels[idx]
        return out

    return Source(shape=tuple(x.shape[1:]), sigma_data=float(x.std()), name=name,
                  num_classes=int(labels.max()) + 1 if labels is not None else 0,
                  _sampler=draw, _reference=lambda n, g: draw(n, g)["x1"])


def build_source(cfg) -> Source:
    """The :class:`Source` described by a ``DataConfig``."""
    if cfg.kind == "toy":
        return toy_source(cfg.name)
    if cfg.kind == "gmm":
        unknown = sorted(set(cfg.options) - {"labels"})
        if unknown:
            raise ConfigError(f"unknown data.options {unknown} for data.kind=gmm; known: ['labels']")
        mix = GaussianMixture.random(cfg.dim, cfg.components, cfg.std, cfg.radius, cfg.seed)
        return mixture_source(mix, f"gmm{cfg.dim}d", labels=bool(cfg.options.get("labels", False)))
    if cfg.kind == "array":
        from .arrays import load_array

        return tensor_source(load_array(cfg.path, cfg.key), name=str(cfg.path))
    if cfg.kind == "pairs":
        from ..pairs import pair_source

        return pair_source(cfg)
    if cfg.kind == "images":
        from .images import image_source

        return image_source(cfg)
    raise ValueError(f"unknown data kind {cfg.kind!r}")
