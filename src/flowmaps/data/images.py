"""Image data sets as tensors (N, C, H, W) scaled to [−1, 1], with labels where the set has them.

``data.kind: images`` with ``data.name``:

- ``digits``: the 1,797 8×8 digits bundled with scikit-learn (the embedded default); ``size`` 8, 16 or 32
  upsamples them bilinearly; a held-out split (``heldout``, default 0.2, fixed by ``seed``) is kept out of
  training and is what ``reference`` draws (the Fréchet distance's target);
- ``folder``: every image file under ``path`` (PNG/JPEG/...), resized to ``size``; labels from the first-level
  sub-folder names when there are several;
- ``npy``: an array (N, C, H, W) at ``path``: uint8 in 0..255, or floats already in [−1, 1];
- a torchvision set (``cifar10``, ``cifar100``, ``mnist``, ``fashionmnist``, ``svhn``, ``stl10``,
  ``celeba``) read from its local root ``path`` (never downloaded; needs the ``images`` extra).

``hflip: true`` flips a random half of every batch horizontally (not for digits, which are not
mirror-symmetric). ``heldout`` > 0 holds out that fraction for every set; ``labels: false`` drops the labels.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor

from ..core.options import Options
from ..errors import DataError
from ..io.arrays import load_array, npy_header
from .sources import Source, TensorSource

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
TORCHVISION_SETS = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "mnist": "MNIST", "fashionmnist": "FashionMNIST",
                    "svhn": "SVHN", "stl10": "STL10", "celeba": "CelebA"}


def to_unit(x: np.ndarray | Tensor, vmax: float) -> Tensor:
    """``x / vmax`` mapped from [0, 1] to [−1, 1] as float32."""
    return torch.as_tensor(np.asarray(x), dtype=torch.float32) / vmax * 2 - 1


def resize(x: Tensor, size: int | None) -> Tensor:
    """Bilinear resize of (N, C, H, W) to size×size (``None``: unchanged)."""
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def load_digits(size: int | None = None) -> tuple[Tensor, Tensor]:
    """scikit-learn's digits as (1797, 1, s, s) in [−1, 1] (s = 8 or ``size``) and their labels (1797,)."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = to_unit(d.images[:, None], 16.0)
    return resize(x, size), torch.as_tensor(d.target, dtype=torch.long)


def split(n: int, heldout: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices (train, held-out) of a seeded random permutation; ``round(heldout · n)`` are held out."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = round(heldout * n)
    return perm[k:].sort().values, perm[:k].sort().values


def load_npy(path: str | Path) -> Tensor:
    """An (N, C, H, W) array with C in {1, 3}: uint8 0..255, or floats in [−1, 1]."""
    p = Path(path)
    if p.suffix.lower() != ".npy":
        raise DataError(f"{p}: image arrays are .npy files of shape (N, C, H, W)")
    x = load_array(p)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise DataError(f"{p}: shape {tuple(x.shape)}; images must be (N, C, H, W) with C = 1 or 3")
    if npy_header(p)[1] == np.uint8:
        return x / 127.5 - 1
    lo, hi = float(x.min()), float(x.max())
    if lo < -1 - 1e-3 or hi > 1 + 1e-3:
        raise DataError(f"{p}: values in [{lo:.3g}, {hi:.3g}]; float images must lie in [-1, 1] (or store uint8)")
    return x


def load_folder(path: str | Path, size: int | None) -> tuple[Tensor, Tensor | None]:
    """Every image under ``path`` as RGB (N, 3, size, size); labels from sub-folder names if there are ≥ 2."""
    from PIL import Image

    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
    if not files:
        raise DataError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    images = []
    for f in files:
        try:
            with Image.open(f) as im:
                im = im.convert("RGB")
                if size is not None:
                    im = im.resize((size, size), Image.BICUBIC)
                images.append(np.asarray(im))
        except OSError as err:
            raise DataError(f"{f}: unreadable image ({err})") from None
    if len({a.shape for a in images}) > 1:
        raise DataError(f"{root}: images of different sizes; set data.size")
    x = to_unit(np.stack(images).transpose(0, 3, 1, 2), 255.0)
    classes = sorted({f.relative_to(root).parts[0] for f in files if len(f.relative_to(root).parts) > 1})
    labels = None
    if len(classes) > 1:
        index = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([index.get(f.relative_to(root).parts[0], 0) for f in files])
    return x, labels


def load_torchvision(name: str, root: str | Path | None, size: int | None) -> tuple[Tensor, Tensor | None]:
    """A torchvision data set's training split from its local ``root`` (``download=False``)."""
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise DataError(f"data.name={name} needs torchvision: pip install 'flowmaps[images]'") from None
    if not root or not Path(root).is_dir():
        raise DataError(f"data.name={name} reads the set from a local folder: set data.path to the directory "
                        f"that holds it (torchvision's root; it is never downloaded here)")
    cls = getattr(tvd, TORCHVISION_SETS[name])
    kw = {"split": "train"} if name in ("svhn", "stl10", "celeba") else {"train": True}
    try:
        ds = cls(root=str(root), download=False, **kw)
    except RuntimeError as err:
        raise DataError(f"{root}: {TORCHVISION_SETS[name]} not found there ({err})") from None
    data = getattr(ds, "data", None)
    if isinstance(data, np.ndarray | Tensor) and name != "celeba":
        x = torch.as_tensor(np.asarray(data))
        if x.dim() == 3:
            x = x[:, None]
        elif x.shape[-1] == 3:
            x = x.permute(0, 3, 1, 2)
        x = x.float() / 127.5 - 1
    else:
        x = torch.stack([to_unit(np.asarray(ds[i][0].convert("RGB")).transpose(2, 0, 1), 255.0)
                         for i in range(len(ds))])
    targets = getattr(ds, "targets", getattr(ds, "labels", None))
    labels = None
    if targets is not None and name != "celeba":
        labels = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    return resize(x, size), labels


class ImagesData(Options):
    """``data.kind: images`` (see the module docstring)."""

    kind: Literal["images"] = "images"
    name: Literal["digits", "folder", "npy", "cifar10", "cifar100", "mnist", "fashionmnist", "svhn", "stl10",
                  "celeba"] = "digits"
    path: str | None = None
    size: int | None = Field(None, ge=1, description="resize to size×size")
    hflip: bool = False
    heldout: float | None = Field(None, ge=0, lt=1, description="held-out fraction (default 0.2 for digits, else 0)")
    labels: bool = True
    seed: int = Field(0, description="seed of the held-out split")

    @model_validator(mode="after")
    def _path(self):
        if self.name == "digits" and self.path is not None:
            raise ValueError("name=digits is bundled with scikit-learn and reads no path; remove path")
        if self.name != "digits" and not self.path:
            what = {"folder": "a folder of images", "npy": "an (N, C, H, W) .npy file"}.get(
                self.name, "the local root that holds the set (never downloaded)")
            raise ValueError(f"name={self.name} needs path ({what})")
        return self

    def build(self, nested: Callable[[Any], Source]) -> Source:
        name = self.name
        if name == "digits":
            x, labels = load_digits(self.size)
        elif name == "folder":
            x, labels = load_folder(self.path, self.size)
        elif name == "npy":
            x, labels = resize(load_npy(self.path), self.size), None
        else:
            x, labels = load_torchvision(name, self.path, self.size)
        if not self.labels:
            labels = None
        heldout = self.heldout if self.heldout is not None else (0.2 if name == "digits" else 0.0)
        train_idx, held_idx = split(len(x), heldout, self.seed)
        reference = x[held_idx] if len(held_idx) else x[train_idx]  # the FD's target: held out, else all rows
        return TensorSource(x[train_idx], name, labels[train_idx] if labels is not None else None,
                            heldout=reference, flip=self.hflip, bounds=(-1.0, 1.0))
