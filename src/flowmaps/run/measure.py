"""Measure a model's samples against its data: the metrics of one sampler, for ``flowmaps eval`` and for the
evaluations during training (``eval.every``).

Samples are made in batches (:func:`flowmaps.core.sampling.sample_batches`, split over the processes) and
leave the device batch by batch. 2-D data: KL(target ‖ model) on the histogram grid, W2 and the energy distance
on the whole set. Images: W2 and the energy distance on the first :data:`W2_MAX` samples, and for every feature
extractor the Fréchet distance, KID and precision/recall (:func:`flowmaps.core.metrics.frechet.scores`) against
the reference statistics (a published ``.npz``, or the data's, computed once and cached), plus the Inception
Score from Inception's logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..core import distributed
from ..core.metrics import energy_distance, kl_histogram, wasserstein2
from ..core.metrics.frechet import (
    Accumulator,
    Extractor,
    Statistics,
    default_features,
    feature_extractor,
    inception_score,
    scores,
)
from ..core.sampling import sample_batches
from ..data import Source
from ..data.reference import load_statistics, reference_statistics
from ..errors import ConfigError

W2_MAX = 4000  # samples of W2 and the energy distance (exact optimal transport is cubic in the count)


@dataclass
class ImageMeter:
    """Feature extractors and the reference statistics of each, by name."""

    extractors: dict[str, Extractor]
    references: dict[str, Statistics]


def image_meter(source: Source, features: list[str] | None, references: dict[str, str], stats_dir: str | Path,
                device: str = "cpu", batch: int = 500, progress: bool = False) -> ImageMeter | None:
    """What measures ``source``'s images (None for other data): the extractors of ``features`` (default: digits
    for one channel, Inception for RGB; one that cannot load is an error naming what to install or set) and
    their reference statistics, from ``references[name]`` (a ``.npz``) or from the data (cached)."""
    names = default_features(source.shape, features)
    extra = sorted(set(references) - set(names))
    if extra:
        raise ConfigError(f"eval.reference names {', '.join(extra)}, but the features measured are "
                          f"{', '.join(names) or 'none'} (eval.features)")
    if not names:
        return None
    extractors = {name: feature_extractor(name, device=device) for name in names}
    refs = {name: load_statistics(references[name]) if name in references else
            reference_statistics(source, ext, stats_dir, batch, progress)[0] for name, ext in extractors.items()}
    return ImageMeter(extractors, refs)


def measure(x: Tensor, ref: Tensor, bounds: tuple[float, float] | None, bins: int = 50,
            w2: bool = True) -> dict[str, float]:
    """KL(target ‖ model) on the histogram grid (2-D data with known bounds), W2 (unless ``w2`` is false: an exact
    OT problem on 4,000 samples, seconds on a CPU) and the energy distance."""
    out = {"w2": wasserstein2(ref, x)} if w2 else {}
    out["energy"] = energy_distance(ref, x)
    if x.dim() == 2 and x.shape[1] == 2 and bounds is not None:
        out = {"kl": kl_histogram(ref, x, bins=bins, bounds=bounds), **out}
    return out


def measure_samples(model, source: Source, ref: Tensor, n: int, seed: int, batch: int, meter: ImageMeter | None,
                    bins: int = 50, **spec: Any) -> tuple[dict[str, Any], Tensor]:
    """``(row, kept samples)``: ``n`` samples of ``model`` by the sampler ``spec`` (``solver`` and ``steps``,
    ``grid`` or ``edm_grid``, see :func:`flowmaps.core.sampling.run_sampler`) measured against ``ref`` and the
    meter's reference statistics; the kept samples are all of them for vectors, the first :data:`W2_MAX` images."""
    keep = W2_MAX if len(source.shape) == 3 else n
    mine = {}
    for a, x, nfe in sample_batches(model, source.shape, n, seed, batch, **spec):
        part: dict[str, Any] = {"x": x[:max(0, keep - a)], "nfe": nfe}
        for name, ext in (meter.extractors if meter else {}).items():
            out = ext(x)
            part[name] = out["features"].float()
            if name == "inception":
                part["logits"] = out["logits"].float()
        mine[a] = part
    parts = {a: p for every in distributed.collect(mine) for a, p in every.items()}
    order = sorted(parts)
    x = torch.cat([parts[a]["x"] for a in order])
    row: dict[str, Any] = {"n": n, "nfe": parts[order[0]]["nfe"], **measure(x, ref, source.bounds, bins)}
    for name in meter.extractors if meter else {}:
        acc = Accumulator(seed)
        for a in order:
            acc.add(parts[a][name])
        row.update(scores(acc.statistics(), meter.references[name], name))
        row[f"n_ref_{name}"] = meter.references[name].n
        if name == "inception":
            row["is_inception"] = inception_score(torch.cat([parts[a]["logits"] for a in order]), splits=10)
    return row, x
