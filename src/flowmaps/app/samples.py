"""``flowmaps sample``: samples made in batches (:func:`flowmaps.core.sampling.sample_batches`) and written as
they come, never the whole set on the device.

- ``FILE.npy``: float32 (n, *shape), rows written into a memory-mapped temporary file, renamed when complete;
- ``FILE.png``: a picture (an image grid of the first 256, or a scatter plot of 2-D samples), single process;
- ``DIR`` (no suffix): numbered PNGs ``DIR/000000.png …`` (uint8, what torch-fidelity, clean-fid and EDM's
  ``fid.py`` read), each written atomically; ``DIR/samples.json`` records the run and the sampler, a rerun with
  the same settings makes only the missing files, other settings are refused. Under ``torchrun`` the ranks split
  the batches.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import distributed
from ..core.sampling import sample_batches
from ..errors import ConfigError
from ..io.files import atomic_write, write_text
from ..io.images import save_png, to_uint8

MANIFEST = "samples.json"
Decoder = Callable[[torch.Tensor], torch.Tensor]


def _decoded(x: torch.Tensor, decode: Decoder | None) -> torch.Tensor:
    """Samples as data: ``decode(x)`` for a model of latents (images), else ``x``."""
    return x if decode is None else decode(x).cpu()


def png_name(i: int, n: int) -> str:
    return f"{i:0{max(6, len(str(n - 1)))}d}.png"


def open_png_folder(out: Path, about: dict[str, Any]) -> None:
    """Create ``out`` with its manifest, or accept it when its manifest records ``about``; rank 0 decides, every
    rank raises its one line."""
    problem = None
    if distributed.world()[0] == 0:
        manifest = out / MANIFEST
        if manifest.is_file():
            try:
                was = json.loads(manifest.read_text())
            except ValueError:
                was = None
            if was != about:
                diff = sorted(k for k in about if not isinstance(was, dict) or was.get(k) != about[k])
                problem = (f"{out}: holds samples of other settings ({', '.join(diff) or 'unreadable manifest'} "
                           "differ); choose another --out or delete it")
        elif out.exists() and (not out.is_dir() or any(out.iterdir())):
            problem = f"{out}: exists and is not a sample folder; choose another --out"
        else:
            write_text(manifest, json.dumps(about, indent=1))
    first = distributed.collect(problem)[0]
    if first is not None:
        raise ConfigError(first)


def write_pngs(model, shape: tuple[int, ...], out: Path, about: dict[str, Any], n: int, seed: int, batch: int,
               decode: Decoder | None = None, **spec: Any) -> tuple[int, int | None]:
    """Numbered PNGs of ``n`` samples in ``out`` (see the module docstring; ``decode``: latents to images);
    ``(files made now, NFE)``."""
    if len(shape) != 3:
        raise ConfigError(f"{out}: a folder of PNGs holds images; these samples have shape {shape} (write .npy)")
    open_png_folder(out, about)

    def done(a: int, count: int) -> bool:
        return all((out / png_name(i, n)).is_file() for i in range(a, a + count))

    made, nfe = 0, None
    for a, x, used in sample_batches(model, shape, n, seed, batch, done=done, **spec):
        for i, u in enumerate(to_uint8(_decoded(x, decode)).numpy()):
            save_png(out / png_name(a + i, n), u)
        made, nfe = made + len(x), used
    return made, nfe


def write_picture(model, shape: tuple[int, ...], out: Path, n: int, seed: int, batch: int,
                  bounds: tuple[float, float] | None, decode: Decoder | None = None, **spec: Any) -> int | None:
    """A PNG picture of the first samples: up to 256 images as a grid, or up to 20,000 2-D samples as a scatter
    plot (only those are made)."""
    made = list(sample_batches(model, shape, min(n, 20_000 if len(shape) == 1 else 256), seed, batch, **spec))
    x, nfe = _decoded(torch.cat([x for _, x, _ in made]), decode), made[-1][2]
    if x.dim() == 2 and x.shape[1] == 2:
        from .plots import scatter_panels

        scatter_panels([(f"{spec['solver']}, NFE {nfe}", x)], out, bounds)
    else:
        from .plots import image_grid

        image_grid(x, out)
    return nfe


def write_npy(model, shape: tuple[int, ...], out: Path, n: int, seed: int, batch: int,
              decode: Decoder | None = None, **spec: Any) -> int | None:
    """``n`` samples into ``out`` (.npy, float32), batch by batch through a memory map; the NFE. A file larger than
    the free space of its disk is refused before anything is sampled (``decode``: samples are latents, the file
    holds their images)."""
    need, free = 4 * n * math.prod(shape), shutil.disk_usage(out.parent).free
    if need > free:
        raise ConfigError(f"{out}: {n} samples need {need} bytes, the disk has {free} free; ask for a smaller --n")
    nfe = None

    def write(tmp: str) -> None:
        nonlocal nfe
        rows = None
        for a, x, used in sample_batches(model, shape, n, seed, batch, **spec):
            x = _decoded(x, decode)
            if rows is None:
                rows = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, *x.shape[1:]))
            rows[a:a + len(x)] = x.float().numpy()
            nfe = used
        rows.flush()
        del rows

    atomic_write(out, write)
    return nfe
