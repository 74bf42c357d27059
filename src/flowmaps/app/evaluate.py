"""Sample a model at several step counts and measure the samples against the target distribution."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor

from ..core.metrics import energy_distance, kl_histogram, wasserstein2
from ..core.models import FlowMap
from ..core.sampling import (
    DEFAULTS,
    Samples,
    class_labels,
    edm_subset_grid,
    from_noise,
    noise,
    sample,
    start_state,
)
from ..io.files import write_text


def image_features(x: Tensor, features: list[str] | None = None) -> list[str]:
    """The feature sets of the Fréchet distance for images: ``features`` if given, else the digits classifier
    for one-channel images and Inception for RGB when its local weights are configured."""
    if x.dim() != 4:
        return []
    if features is not None:
        return list(features)
    if x.shape[1] == 1:
        return ["digits"]
    return ["inception"] if os.environ.get("FLOWMAPS_INCEPTION_WEIGHTS") else []


def measure(x: Tensor, ref: Tensor, bounds: tuple[float, float] | None, bins: int = 50,
            features: list[str] | None = None) -> dict[str, float]:
    """KL(target ‖ model) on the histogram grid (2-D data with known bounds), W2 and energy distance; for images
    also the Fréchet distance ``fd_<features>`` (see :func:`image_features`)."""
    out = {"w2": wasserstein2(ref, x), "energy": energy_distance(ref, x)}
    if x.dim() == 2 and x.shape[1] == 2 and bounds is not None:
        out = {"kl": kl_histogram(ref, x, bins=bins, bounds=bounds), **out}
    feats = image_features(x, features)
    if feats:
        from ..core.metrics.frechet import image_metrics

        out = {**image_metrics(x, ref, feats), **out}
    return out


def run_sampler(model: FlowMap, x0: Tensor, solver: str, steps: int | None = None, seed: int = 0,
                grid: Tensor | None = None, edm_grid: list[int] | None = None, label: Tensor | None = None,
                t0: float = 0.0) -> Samples:
    """``steps`` uniform steps of ``solver`` from the first time ``t0``, the time ``grid``, or lines matching's
    grid of EDM σ indices ``edm_grid`` (started from ``α_{t_0} x0``); ``adaptive`` ignores the steps. Class
    ``label`` per sample for a class-conditional model.

    The re-noising stream has its own generator, offset from ``seed``: :func:`flowmaps.core.sampling.noise`
    draws x0 from ``seed`` itself, and fresh noise equal to x0 would turn consistency-style sampling into the
    deterministic line sampler.
    """
    g = torch.Generator().manual_seed(seed + 1_000_003)
    if edm_grid is not None:
        grid = edm_subset_grid(edm_grid, model.sigma0)
        x0 = start_state(model, x0, grid)
    elif grid is None:
        x0, grid = from_noise(model, x0, steps or 1, t0)
    return sample(model, x0, grid, solver=solver, label=label, generator=g)


def evaluate(model: FlowMap, source, steps: list[int], n: int, seed: int = 1234, solvers: tuple[str, ...] | None = None,
             adaptive: bool | None = None, bins: int = 50, features: list[str] | None = None,
             t0: float = 0.0) -> list[dict]:
    """One row per (solver, steps): NFE and the metrics of :func:`measure` against ``source.reference``, every
    solve from the first time ``t0``.

    A class-conditional model samples every class equally often (:func:`class_labels`)."""
    ref = source.reference(n, seed=seed + 1)
    x0 = noise(n, source.shape, model.sigma0, seed)
    label = class_labels(model.num_classes, n)
    rows = []
    runs = [(solver, k) for solver in solvers or DEFAULTS[model.form].evaluate for k in steps]
    if adaptive if adaptive is not None else model.form == "velocity":
        runs.append(("adaptive", None))
    for solver, k in runs:
        s = run_sampler(model, x0, solver, k, seed, label=label, t0=t0)
        rows.append({"solver": solver, "steps": k, "nfe": s.nfe, **measure(s.x, ref, source.bounds, bins, features)})
    return rows


def markdown_table(rows: list[dict], title: str | None = None) -> str:
    """Rows as a Markdown table; floats with 4 significant digits."""
    if not rows:
        return ""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ([f"**{title}**", ""] if title else []) + ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def save_rows(path: str | Path, rows: list[dict]) -> None:
    """``path.json`` and ``path.md`` side by side, written atomically."""
    path = Path(path)
    write_text(path.with_suffix(".json"), json.dumps(rows, indent=1))
    write_text(path.with_suffix(".md"), markdown_table(rows))
