"""Figures: 2-D sample scatter panels and image grids, written to files (matplotlib's object API: no GUI
backend is chosen and no global pyplot state is touched)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from ..io.files import atomic_write
from ..io.images import grid, save_png, to_uint8


def save_figure(fig, path: str | Path) -> None:
    """Write a matplotlib figure atomically (format from the suffix) and close it."""
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix[1:]))


def scatter_panels(panels: list[tuple[str, Tensor]], path: str | Path, bounds: tuple[float, float] | None = None,
                   cols: int | None = None, max_points: int = 20_000) -> None:
    """One scatter plot per ``(title, samples (N, 2))`` in a grid of ``cols`` columns (``samples`` None: an empty
    cell)."""
    cols = cols or len(panels)
    rows = (len(panels) + cols - 1) // cols
    fig = Figure(figsize=(2.6 * cols, 2.9 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (title, x) in zip(axes.flat, panels):
        if x is None:  # an empty cell of the grid
            continue
        x = x[:max_points].detach().cpu()
        ax.scatter(x[:, 0], x[:, 1], s=0.3, alpha=0.5, linewidths=0, color="C0")
        if bounds is not None:
            ax.set_xlim(*bounds)
            ax.set_ylim(*bounds)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=8)
    save_figure(fig, path)


def tile(x: Tensor, cols: int | None = None) -> np.ndarray:
    """Images (N, C, H, W) in [−1, 1] as one (rows·(H+1)−1, cols·(W+1)−1, C) array in [0, 1] (see
    :func:`flowmaps.io.images.grid`)."""
    if x.dim() != 4:
        raise ValueError(f"an image grid needs images (N, C, H, W), got shape {tuple(x.shape)}")
    return grid(to_uint8(x), cols).transpose(1, 2, 0) / 255.0


def image_grid(x: Tensor, path: str | Path, cols: int | None = None, max_images: int = 256, scale: int = 4) -> None:
    """Save up to ``max_images`` images in [−1, 1] as one PNG grid, each pixel ``scale``×``scale``."""
    if x.dim() != 4:
        raise ValueError(f"an image grid needs images (N, C, H, W), got shape {tuple(x.shape)}")
    save_png(path, grid(to_uint8(x[:max_images]), cols).repeat(scale, 1).repeat(scale, 2))


def image_panels(panels: list[tuple[str, Tensor]], path: str | Path, n: int = 64) -> None:
    """One titled grid of the first ``n`` images per ``(title, images)`` side by side (a comparison figure)."""
    fig = Figure(figsize=(2.4 * len(panels), 2.6))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (title, x) in zip(axes.flat, panels):
        g = tile(x[:n])
        ax.imshow(g[..., 0] if g.shape[2] == 1 else g, cmap="gray" if g.shape[2] == 1 else None, vmin=0, vmax=1)
        ax.set_axis_off()
        ax.set_title(title, fontsize=7)
    save_figure(fig, path)
