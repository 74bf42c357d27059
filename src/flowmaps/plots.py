"""Figures: 2-D sample scatter panels (matplotlib, file output only)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402

from .checkpoint import atomic_write  # noqa: E402


def save_figure(fig, path: str | Path) -> None:
    """Write a matplotlib figure atomically (format from the suffix) and close it."""
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix[1:]))
    plt.close(fig)


def scatter_panels(panels: list[tuple[str, Tensor]], path: str | Path, bounds: tuple[float, float] | None = None,
                   cols: int | None = None, max_points: int = 20_000) -> None:
    """One scatter plot per ``(title, samples (N, 2))`` in a grid of ``cols`` columns."""
    cols = cols or len(panels)
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (title, x) in zip(axes.flat, panels):
        x = x[:max_points].detach().cpu()
        ax.scatter(x[:, 0], x[:, 1], s=0.3, alpha=0.5, linewidths=0, color="C0")
        if bounds is not None:
            ax.set_xlim(*bounds)
            ax.set_ylim(*bounds)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=8)
    save_figure(fig, path)
