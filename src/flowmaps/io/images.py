"""Images on disk: pixels in [−1, 1] to uint8 and back, PNG files written atomically, and sample grids.

``u = round((x + 1) · 127.5)`` clipped to 0..255 (what every FID library feeds its network), and
``x = u / 127.5 − 1``; a uint8 image written as PNG and read back is the same array.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .files import atomic_write


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Images in [−1, 1] (any float dtype, any device) as uint8 ``round((x + 1) · 127.5)``, clipped."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(u: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 pixels as float32 in [−1, 1]: ``u / 127.5 − 1``."""
    return torch.as_tensor(np.asarray(u) if isinstance(u, np.ndarray) else u).float() / 127.5 - 1


def save_png(path: str | Path, u: np.ndarray) -> None:
    """One uint8 image (C, H, W) with C = 1 or 3 as a PNG, written atomically."""
    from PIL import Image

    a = np.ascontiguousarray(u[0] if u.shape[0] == 1 else u.transpose(1, 2, 0))
    atomic_write(path, lambda tmp: Image.fromarray(a).save(tmp, format="PNG"))


def load_png(path: str | Path) -> np.ndarray:
    """A PNG as uint8 (C, H, W): grey images as C = 1, colour as C = 3."""
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im.convert("L") if im.mode in ("L", "I", "1") else im.convert("RGB"))
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def grid(u: torch.Tensor, cols: int | None = None, pad: int = 1) -> np.ndarray:
    """uint8 images (N, C, H, W) tiled row by row into one (C, rows·(H+pad)−pad, cols·(W+pad)−pad) array."""
    n, c, h, w = u.shape
    cols = cols or max(1, int(np.ceil(np.sqrt(n))))
    rows = -(-n // cols)
    out = np.zeros((c, rows * (h + pad) - pad, cols * (w + pad) - pad), dtype=np.uint8)
    a = u.cpu().numpy()
    for i in range(n):
        r, k = divmod(i, cols)
        out[:, r * (h + pad): r * (h + pad) + h, k * (w + pad): k * (w + pad) + w] = a[i]
    return out
