"""Evaluate a model: one row of metrics per sampler (solver × step count, or one grid), as a table.

Every row carries the sample count ``n`` (the Fréchet distance depends on it) beside the metrics of
:func:`flowmaps.run.measure.measure_samples`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor

from ..core.models import FlowMap
from ..core.sampling import DEFAULTS, run_sampler
from ..io.files import write_text
from ..run.measure import W2_MAX, image_meter, measure, measure_samples

__all__ = ["evaluate", "markdown_table", "measure", "run_sampler", "sampler_specs", "save_rows"]


def sampler_specs(form: str, steps: list[int] | None, solvers: tuple[str, ...] | list[str] | None = None,
                  grid: Tensor | None = None, edm_grids: list[list[int]] | None = None,
                  adaptive: bool | None = None) -> list[dict[str, Any]]:
    """The samplers of an evaluation: each solver (default: the model form's) on the one ``grid``, or at each
    step count of ``steps`` (uniform grids) and on each of ``edm_grids`` (indices into EDM's 18-step σ grid);
    plus the adaptive solve, once, for a velocity model on uniform steps (``adaptive``) or when named in
    ``solvers`` (it chooses its own steps)."""
    solvers = list(solvers or DEFAULTS[form].evaluate)
    if grid is not None:
        return [{"solver": s, "grid": grid} for s in solvers]
    fixed = [s for s in solvers if s != "adaptive"]
    specs: list[dict[str, Any]] = [{"solver": s, "steps": k} for s in fixed for k in steps or []]
    specs += [{"solver": s, "edm_grid": list(g)} for s in fixed for g in edm_grids or []]
    if not specs:
        specs = [{"solver": s, "steps": 1} for s in fixed]
    by_default = form == "velocity" and bool(specs) and bool(specs[0].get("steps"))
    if fixed != solvers or (by_default if adaptive is None else adaptive):
        specs.append({"solver": "adaptive", "steps": None})
    return specs


def _describe(spec: dict[str, Any]) -> dict[str, Any]:
    if "grid" in spec:
        return {"solver": spec["solver"], "steps": len(spec["grid"]) - 1,
                "grid": ",".join(f"{float(t):g}" for t in spec["grid"])}
    if "edm_grid" in spec:
        return {"solver": spec["solver"], "steps": len(spec["edm_grid"]),
                "grid": "EDM σ idx " + ",".join(map(str, spec["edm_grid"]))}
    return {"solver": spec["solver"], "steps": spec["steps"]}


def evaluate(model: FlowMap, source, steps: list[int] | None, n: int, seed: int = 1234,
             solvers: tuple[str, ...] | None = None, adaptive: bool | None = None, bins: int = 50,
             features: list[str] | None = None, grid: Tensor | None = None, edm_grids: list[list[int]] | None = None,
             references: dict[str, str] | None = None, stats_dir: str | Path | None = None, batch: int = 500,
             device: str = "cpu", progress: bool = False, t0: float = 0.0) -> list[dict]:
    """One row per sampler of :func:`sampler_specs`: NFE, n and the metrics of :func:`measure_samples` against
    ``source.reference`` and, for images, the reference statistics (``references[name]``: a ``.npz``; else the
    data's, cached in ``stats_dir``); uniform steps start at the first time ``t0``. The feature extractors load
    before anything is sampled.

    A class-conditional model samples every class equally often (:func:`class_labels`)."""
    meter = image_meter(source, features, references or {}, stats_dir, device, batch, progress)
    ref = source.reference(min(n, W2_MAX) if len(source.shape) == 3 else n, seed=seed + 1)
    rows = []
    for spec in sampler_specs(model.form, steps, solvers, grid, edm_grids, adaptive):
        row, _ = measure_samples(model, source, ref, n, seed, batch, meter, bins, t0=t0, **spec)
        rows.append({**_describe(spec), **row})
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
