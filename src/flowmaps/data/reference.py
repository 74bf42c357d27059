"""Reference statistics of the Fréchet distance: read from a published ``.npz`` (``mu``, ``sigma``: the format of
EDM, ADM and clean-fid), or computed once from a data set's reference set and cached.

A cache file ``DIR/<extractor>-<key>.npz`` holds ``mu``, ``sigma`` (so other tools read it too), ``n``, up to
10,000 feature rows (for KID and precision/recall), and the ``data`` and ``extractor`` identities it was made
from; ``key`` is a hash of both. The directory is the prepared store's ``stats/`` folder (beside the data), else
the caller's (the run directory's). Data that changed since have another identity, hence another key: the old
file is never used for them, and a file whose recorded identities differ from what its name promises is refused.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from ..core.metrics.frechet import Accumulator, Extractor, Statistics
from ..errors import DataError, StorageError
from ..io.files import atomic_write
from .sources import Source


def load_statistics(path: str | Path) -> Statistics:
    """``mu`` (D,) and ``sigma`` (D, D) of a ``.npz`` (and ``n``, ``features`` when it has them)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such reference statistics file")
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in ("mu", "sigma") if k not in z.files]
            if missing:
                raise DataError(f"{p}: reference statistics need the arrays mu and sigma; it has {list(z.files)}")
            mu, sigma = z["mu"].astype(np.float64), z["sigma"].astype(np.float64)
            n = int(z["n"]) if "n" in z.files else 0
            feats = z["features"] if "features" in z.files else None
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{p}: unreadable .npz ({' '.join(str(err).split())[:120]})") from None
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise DataError(f"{p}: mu of shape {mu.shape} and sigma of shape {sigma.shape}; expected (D,) and (D, D)")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise DataError(f"{p}: mu or sigma holds non-finite values")
    return Statistics(mu, sigma, n, feats)


def save_statistics(path: str | Path, st: Statistics, **identity: str) -> None:
    """``st`` as a ``.npz`` (``mu``, ``sigma``, ``n``, ``features``, and ``identity`` as strings), atomically."""
    arrays = {"mu": st.mu, "sigma": st.sigma, "n": np.array(st.n)}
    if st.features is not None:
        arrays["features"] = st.features
    arrays.update({k: np.array(v) for k, v in identity.items()})

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def cache_file(folder: Path, data_id: str, extractor: Extractor) -> Path:
    key = hashlib.sha256(f"{data_id}\n{extractor.identity}".encode()).hexdigest()[:16]
    return folder / f"{extractor.name}-{key}.npz"


def read_cache(path: Path, data_id: str, extractor: Extractor) -> Statistics:
    """Cached statistics, refused unless they were made from ``data_id`` with ``extractor``."""
    with np.load(path, allow_pickle=False) as z:
        made = {k: str(z[k]) if k in z.files else None for k in ("data", "extractor")}
    if made != {"data": data_id, "extractor": extractor.identity}:
        raise DataError(f"{path}: cached statistics of other data or another feature extractor than its name "
                        f"says (data {made['data']}, extractor {made['extractor']}); delete it to compute them again")
    return load_statistics(path)


def reference_statistics(source: Source, extractor: Extractor, folder: str | Path | None = None, batch: int = 500,
                         progress: bool = False) -> tuple[Statistics, bool]:
    """``(statistics, computed)``: the source's reference set through ``extractor``, from the cache in the
    store's ``stats/`` (a prepared store) or ``folder``, else computed in one pass and cached there (not cached
    without a folder; a folder that refuses the write is warned about, the statistics are still used)."""
    folder = source.stats_dir or folder
    data_id = source.reference_id()
    path = None if folder is None else cache_file(Path(folder), data_id, extractor)
    if path is not None and path.is_file():
        return read_cache(path, data_id, extractor), False
    acc = Accumulator(seed=0)
    for x in source.reference_batches(batch):
        acc.add(extractor(x)["features"])
    st = acc.statistics()
    if path is None:
        return st, True
    try:
        save_statistics(path, st, data=data_id, extractor=extractor.identity)
    except StorageError as err:
        print(f"flowmaps: warning: reference statistics not cached ({err})", file=sys.stderr)
    if progress:
        print(f"reference statistics of {st.n} images ({extractor.name}) -> {path}", file=sys.stderr)
    return st, True
