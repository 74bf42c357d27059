"""``flowmaps prepare``: an image data set → a prepared image store, which training streams from disk.

The store is a sharded store (:mod:`flowmaps.io.shards`) of kind ``images`` with the fields ``x`` (uint8
(C, H, W)) and ``label`` (int64; −1 for an unlabelled set). Its manifest records the source (path, set, split,
size), ``num_classes``, the class names of an image folder, and per shard the pixel moments
``[count, Σ x, Σ x²]`` of ``x/127.5 − 1`` (the data's standard deviation without a pass over the data). Writing
is resumable shard by shard, every file is checksummed, and a store of another source or settings is refused.

Sources:

- an image folder: every image file under it, as RGB; labels from the first-level sub-folder names when there
  are two or more; images of several sizes need ``size``;
- a ``.npy`` (memory-mapped) or ``.npz`` (the member ``key`` read whole) array of (N, C, H, W) or (N, H, W, C)
  images, uint8 0..255 or floats in [−1, 1]; labels from the ``.npz`` member ``label_key``;
- a torchvision set (``cifar10``, ``mnist``, …) from its local root (never downloaded; needs torchvision).

Decoding runs in ``workers`` processes of a :class:`torch.utils.data.DataLoader` whose batches are whole shards.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..errors import ConfigError, DataError, FlowmapsError
from ..io.arrays import npy_header
from ..io.shards import manifest, open_for_writing, shard_count, write_manifest, write_shard
from .images import IMAGE_SUFFIXES, TORCHVISION_SETS
from .stream import KIND, one_line


def _resize_u8(x: np.ndarray, size: int | None) -> np.ndarray:
    """uint8 (N, C, H, W) resized to size×size (bilinear, antialiased), rounded back to uint8."""
    if size is None or x.shape[-2:] == (size, size):
        return x
    t = F.interpolate(torch.from_numpy(np.ascontiguousarray(x)).float(), size=(size, size), mode="bilinear",
                      align_corners=False, antialias=True)
    return t.round().clamp(0, 255).to(torch.uint8).numpy()


def _as_u8(a: np.ndarray, where: str) -> np.ndarray:
    """uint8 as is; floats in [−1, 1] as ``round((x + 1) · 127.5)``; anything else is a DataError."""
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind != "f":
        raise DataError(f"{where}: dtype {a.dtype}; images are uint8 0..255 or floats in [-1, 1]")
    if a.size and (not np.isfinite(a).all() or a.min() < -1 - 1e-3 or a.max() > 1 + 1e-3):
        raise DataError(f"{where}: float images must be finite and lie in [-1, 1] (or store uint8)")
    return np.clip(np.round((a.astype(np.float32) + 1) * 127.5), 0, 255).astype(np.uint8)


class ArrayImages(Dataset):
    """Rows of an image array (N, C, H, W) or (N, H, W, C) (or (N, H, W): one channel), with labels or −1."""

    def __init__(self, a: np.ndarray, labels: np.ndarray | None, size: int | None, where: str) -> None:
        if a.ndim == 3:
            a = a[:, None]
        if a.ndim != 4 or len(a) == 0:
            raise DataError(f"{where}: shape {a.shape}; images must be (N, C, H, W) or (N, H, W, C), N >= 1")
        self.last = a.shape[1] not in (1, 3) and a.shape[3] in (1, 3)  # channels last
        if not self.last and a.shape[1] not in (1, 3):
            raise DataError(f"{where}: shape {a.shape}; images need 1 or 3 channels, first or last")
        if labels is not None and labels.shape != (len(a),):
            raise DataError(f"{where}: labels of shape {labels.shape} for {len(a)} images")
        self.a, self.labels, self.size, self.where = a, labels, size, where

    def __len__(self) -> int:
        return len(self.a)

    def __getitems__(self, idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = min(idx), max(idx) + 1
        x = np.asarray(self.a[lo:hi])[np.asarray(idx) - lo]
        x = _as_u8(x.transpose(0, 3, 1, 2) if self.last else x, f"{self.where} rows {lo}..{hi - 1}")
        y = np.full(len(idx), -1, np.int64) if self.labels is None else np.asarray(self.labels)[idx].astype(np.int64)
        return _resize_u8(x, self.size), y


class FolderImages(Dataset):
    """Every image file under a folder as RGB, labelled by its first-level sub-folder when there are several."""

    def __init__(self, root: Path, size: int | None) -> None:
        if not root.is_dir():
            raise DataError(f"{root}: no such folder")
        self.files = sorted(f for f in root.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        if not self.files:
            raise DataError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        parts = [f.relative_to(root).parts for f in self.files]
        self.classes = sorted({p[0] for p in parts if len(p) > 1})
        if len(self.classes) < 2:
            self.classes = []
        index = {c: i for i, c in enumerate(self.classes)}
        self.labels = np.array([index.get(p[0], -1) if self.classes else -1 for p in parts], np.int64)
        self.size = size
        self.shape = self._load(0).shape

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, i: int) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(self.files[i]) as im:
                im = im.convert("RGB")
                if self.size is not None:
                    im = im.resize((self.size, self.size), Image.BICUBIC)
                return np.asarray(im).transpose(2, 0, 1)
        except OSError as err:
            raise DataError(f"{self.files[i]}: unreadable image ({err})") from None

    def __getitems__(self, idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
        images = [self._load(i) for i in idx]
        for i, im in zip(idx, images):
            if im.shape != self.shape:
                raise DataError(f"{self.files[i]}: {im.shape[2]}×{im.shape[1]} pixels, the first image has "
                                f"{self.shape[2]}×{self.shape[1]}; pass --size to resize every image")
        return np.stack(images), self.labels[idx]


class TorchvisionImages(Dataset):
    """A torchvision data set's items (PIL image, target) as uint8 RGB, resized to ``size``."""

    def __init__(self, ds: Any, size: int | None) -> None:
        self.ds, self.size = ds, size
        self.shape = self.__getitems__([0])[0].shape[1:]

    def __len__(self) -> int:
        return len(self.ds)

    def __getitems__(self, idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
        items = [self.ds[i] for i in idx]
        x = np.stack([np.asarray(im.convert("RGB")).transpose(2, 0, 1) for im, _ in items])
        y = np.array([int(t) if isinstance(t, int | np.integer) else -1 for _, t in items], np.int64)
        return _resize_u8(x, self.size), y


def open_source(src: str | Path, size: int | None = None, torchvision_set: str | None = None, split: str = "train",
                key: str | None = None, label_key: str | None = None) -> tuple[Dataset, dict[str, Any]]:
    """The data set at ``src`` as a dataset of ``(uint8 (k, C, H, W), int64 labels (k,))`` batches, and what
    describes it in the manifest (``source``, ``num_classes``, ``classes``)."""
    p = Path(src)
    about: dict[str, Any] = {"source": {"path": str(p.resolve()), "size": size}}
    if torchvision_set is not None:
        return _torchvision(torchvision_set, p, size, split, about)
    if key is not None or label_key is not None:
        about["source"].update(key=key, label_key=label_key)
    if p.is_dir():
        if key is not None or label_key is not None:
            raise ConfigError(f"{p}: --key and --label-key choose the arrays of an .npz, not of a folder")
        items = FolderImages(p, size)
        about.update(num_classes=len(items.classes), classes=items.classes)
        return items, about
    if not p.is_file():
        raise DataError(f"{p}: no such file or folder")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        if key is not None or label_key is not None:
            raise ConfigError(f"{p}: a .npy holds one array; --key and --label-key are for .npz files")
        npy_header(p)
        a, labels = np.load(p, mmap_mode="r", allow_pickle=False), None
    elif suffix == ".npz":
        a, labels = _npz(p, key, label_key)
    else:
        raise DataError(f"{p}: prepare reads an image folder, a .npy or a .npz (or --set NAME with a local root)")
    items = ArrayImages(a, labels, size, str(p))
    about.update(num_classes=_classes(labels, p), classes=[])
    return items, about


def _npz(p: Path, key: str | None, label_key: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(p, allow_pickle=False) as z:
            names = list(z.files)
            if key is None:
                candidates = [k for k in names if k != label_key]
                if len(candidates) != 1:
                    raise DataError(f"{p}: holds the arrays {names}; pass --key to choose the images")
                key = candidates[0]
            for k in (key, label_key):
                if k is not None and k not in names:
                    raise DataError(f"{p}: no array named {k!r}; its arrays are {names}")
            return z[key], (z[label_key] if label_key is not None else None)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{p}: unreadable or corrupt .npz file ({' '.join(str(err).split())[:120]})") from None


def _classes(labels: np.ndarray | None, where: Path) -> int:
    if labels is None:
        return 0
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise DataError(f"{where}: labels must be a 1-D integer array, got {labels.dtype} of shape {labels.shape}")
    if len(labels) and labels.min() < 0:
        raise DataError(f"{where}: labels must be >= 0, found {int(labels.min())}")
    return int(labels.max()) + 1 if len(labels) else 0


def _torchvision(name: str, root: Path, size: int | None, split: str, about: dict) -> tuple[Dataset, dict]:
    if name not in TORCHVISION_SETS:
        raise ConfigError(f"--set {name}: not a torchvision set flowmaps reads; choose one of "
                          f"{', '.join(TORCHVISION_SETS)}")
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise DataError(f"--set {name} needs torchvision: pip install 'flowmaps[images]'") from None
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; --set {name} reads the set from its local root (never downloaded)")
    kw = {"split": split} if name in ("svhn", "stl10", "celeba") else {"train": split == "train"}
    try:
        ds = getattr(tvd, TORCHVISION_SETS[name])(root=str(root), download=False, **kw)
    except RuntimeError as err:
        raise DataError(f"{root}: {TORCHVISION_SETS[name]} not found there ({err})") from None
    about["source"].update(set=name, split=split)
    data = getattr(ds, "data", None)
    targets = getattr(ds, "targets", getattr(ds, "labels", None))
    labels = None if targets is None or name == "celeba" else np.asarray(targets, dtype=np.int64)
    if isinstance(data, np.ndarray | torch.Tensor) and name != "celeba":
        items: Dataset = ArrayImages(np.asarray(data), labels, size, f"{root} ({name})")
    else:
        items = TorchvisionImages(ds, size)
    about.update(num_classes=_classes(labels, root), classes=list(getattr(ds, "classes", []) or []))
    return items, about


def _shape(items: Dataset) -> tuple[int, ...]:
    x, _ = items.__getitems__([0])
    return tuple(int(s) for s in x.shape[1:])


def _collate(batch):
    return batch  # a whole shard, already stacked by the dataset's __getitems__


def _write(root: Path, m: dict, k: int, x: np.ndarray, y: np.ndarray, shard_size: int) -> None:
    """Shard ``k`` with its pixel moments into the manifest ``m``."""
    if y.min() < -1 or (m["num_classes"] and y.max() >= m["num_classes"]):
        raise DataError(f"shard {k}: labels outside 0..{m['num_classes'] - 1}")
    entry = write_shard(root, k, k * shard_size, {"x": x, "label": y})
    u = x.astype(np.float64) / 127.5 - 1
    entry["moments"] = [int(u.size), float(u.sum()), float(np.square(u).sum())]
    m["shards"][str(k)] = entry
    m["complete"] = len(m["shards"]) == shard_count(m)


def prepare(items: Dataset, about: dict[str, Any], out: str | Path, shard_size: int = 8192, workers: int = 0,
            repair: bool = False, progress: bool = True) -> dict[str, Any]:
    """Write ``items`` into the image store ``out`` (creating or resuming it); returns the manifest.

    Missing shards are decoded ``workers`` at a time (each worker one whole shard) and written in order; the
    manifest is rewritten after each, so an interrupted run keeps every finished shard."""
    if shard_size < 1 or workers < 0:
        raise ConfigError(f"shard size must be >= 1 and workers >= 0 (got {shard_size}, {workers})")
    root, n = Path(out), len(items)
    want = manifest(KIND, n, shard_size, {"x": (_shape(items), "uint8"), "label": ((), "int64")}, **about)
    lock, m = open_for_writing(root, want, repair)
    try:
        todo = [k for k in range(shard_count(m)) if str(k) not in m["shards"]]
        ranges = [list(range(k * shard_size, min((k + 1) * shard_size, n))) for k in todo]
        loader = DataLoader(items, batch_sampler=ranges, num_workers=workers, collate_fn=_collate)
        bar = tqdm(total=n, initial=n - sum(map(len, ranges)), unit="img", unit_scale=True, disable=not progress,
                   dynamic_ncols=True, desc="prepare")
        t_start = time.perf_counter()
        try:
            for k, (x, y) in zip(todo, loader):
                _write(root, m, k, x, y, shard_size)
                m["seconds"] = m.get("seconds", 0.0) + time.perf_counter() - t_start
                t_start = time.perf_counter()
                write_manifest(root, m)
                bar.update(len(y))
        except FlowmapsError as err:
            raise one_line(err) from None
        finally:
            bar.close()
    finally:
        if lock is not None:
            lock.close()
    return m
