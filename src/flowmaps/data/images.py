"""Image data sets as tensors (N, C, H, W) scaled to [−1, 1], with labels where the set has them.

``data.kind: images`` with ``data.name``:

- ``digits``: the 1,797 8×8 digits bundled with scikit-learn (the embedded default); ``options.size`` 8, 16 or 32
  upsamples them bilinearly; a held-out split (``options.heldout``, default 0.2, fixed by ``data.seed``) is
  kept out of training and is what ``reference`` draws (the Fréchet distance's target);
- ``folder``: every image file under ``data.path`` (PNG/JPEG/...), resized to ``options.size``; labels from
  the first-level sub-folder names when there are several;
- ``npy``: an array (N, C, H, W) at ``data.path``: uint8 in 0..255, or floats already in [−1, 1];
- a torchvision set (``cifar10``, ``cifar100``, ``mnist``, ``fashionmnist``, ``svhn``, ``stl10``,
  ``celeba``) read from its local root ``data.path`` (never downloaded; needs the ``images`` extra).

``options.hflip: true`` flips a random half of every batch horizontally (not for digits, which are not
mirror-symmetric). ``options.heldout`` > 0 holds out that fraction for every set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .arrays import DataError, load_array
from .sources import Source

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
TORCHVISION_SETS = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "mnist": "MNIST", "fashionmnist": "FashionMNIST",
                    "svhn": "SVHN", "stl10": "STL10", "celeba": "CelebA"}
OPTIONS = {"size", "hflip", "heldout", "labels"}


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
    k = int(round(heldout * n))
    return perm[k:].sort().values, perm[:k].sort().values


def load_npy(path: str | Path) -> Tensor:
    """An (N, C, H, W) array with C in {1, 3}: uint8 0..255, or floats in [−1, 1]."""
    p = Path(path)
    if p.suffix.lower() != ".npy":
        raise DataError(f"{p}: image arrays are .npy files of shape (N, C, H, W)")
    raw = np.load(p, mmap_mode="r", allow_pickle=False) if p.is_file() else None
    x = load_array(p)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise DataError(f"{p}: shape {tuple(x.shape)}; images must be (N, C, H, W) with C = 1 or 3")
    if raw is not None and raw.dtype == np.uint8:
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
        raise DataError(f"{root}: images of different sizes; set data.options.size")
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
    labels = torch.as_tensor(np.asarray(targets), dtype=torch.long) if targets is not None and name != "celeba" else None
    return resize(x, size), labels


def hflip(x: Tensor, g: torch.Generator | None = None) -> Tensor:
    """Flip a random half of the batch (each image with probability 1/2) along the width."""
    flip = torch.rand(len(x), generator=g) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def image_source(cfg) -> Source:
    """The :class:`Source` of ``data.kind=images`` (see the module docstring)."""
    o = dict(cfg.options)
    unknown = set(o) - OPTIONS
    if unknown:
        raise DataError(f"unknown data.options {sorted(unknown)} for images; known: {sorted(OPTIONS)}")
    size = o.get("size")
    if size is not None and (not isinstance(size, int) or size < 1):
        raise DataError(f"data.options.size must be a positive integer, got {size!r}")
    name = cfg.name
    if name == "digits":
        x, labels = load_digits(size)
    elif name == "folder":
        if not cfg.path:
            raise DataError("data.name=folder needs data.path (a folder of images)")
        x, labels = load_folder(cfg.path, size)
    elif name == "npy":
        if not cfg.path:
            raise DataError("data.name=npy needs data.path (an (N, C, H, W) .npy file)")
        x, labels = resize(load_npy(cfg.path), size), None
    elif name in TORCHVISION_SETS:
        x, labels = load_torchvision(name, cfg.path, size)
    else:
        raise DataError(f"unknown image set {name!r}; choose digits, folder, npy or one of "
                        f"{', '.join(TORCHVISION_SETS)}")
    if not o.get("labels", True):
        labels = None
    heldout = float(o.get("heldout", 0.2 if name == "digits" else 0.0))
    if not 0 <= heldout < 1:
        raise DataError(f"data.options.heldout must lie in [0, 1), got {heldout}")
    train_idx, held_idx = split(len(x), heldout, cfg.seed)
    return image_tensor_source(x, labels, train_idx, held_idx, bool(o.get("hflip", False)), name)


def image_tensor_source(x: Tensor, labels: Tensor | None, train_idx: Tensor, held_idx: Tensor, flip: bool,
                        name: str) -> Source:
    """Batches of the training rows (uniform with replacement, optionally flipped); ``reference(n)`` returns up to
    n held-out rows (all of the training rows when nothing is held out) in a seeded order."""
    train = x[train_idx]
    train_labels = labels[train_idx] if labels is not None else None
    ref = x[held_idx] if len(held_idx) else train

    def draw(n: int, g: torch.Generator | None = None) -> dict[str, Tensor]:
        idx = torch.randint(len(train), (n,), generator=g)
        out = {"x1": hflip(train[idx], g) if flip else train[idx]}
        if train_labels is not None:
            out["label"] = train_labels[idx]
        return out

    def reference(n: int, g: torch.Generator) -> Tensor:
        return ref[torch.randperm(len(ref), generator=g)[:n]]

    src = Source(shape=tuple(x.shape[1:]), sigma_data=float(train.std()), bounds=(-1.0, 1.0), name=name,
                 num_classes=int(labels.max()) + 1 if labels is not None else 0,
                 _sampler=draw, _reference=reference)
    src.heldout = x[held_idx]
    return src
