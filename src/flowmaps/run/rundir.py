"""A run directory: refused or created before training, locked while training, and its ``metrics.csv`` log.

``RUN/config.yaml`` (the validated recipe), ``RUN/checkpoint.safetensors``, ``RUN/metrics.csv``, ``RUN/tb/``
(TensorBoard) and ``RUN/.lock`` (held by the training process; the kernel drops it when the process ends).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..io.files import atomic_write, holds_only_leftovers, lock_folder, remove_stale_temp, storage_error, write_text
from .build import CHECKPOINT_FILE, CONFIG_FILE
from .config import RunConfig, config_diff, dump_config, load_config, training_diff


class MetricsLog:
    """``metrics.csv`` (appended, cut back to the resumed step) and TensorBoard scalars. ``elapsed``: the training
    wall time of the rows kept (their last ``elapsed_s``), from which a resumed run's clock continues."""

    def __init__(self, run_dir: Path, start_step: int, enabled: bool) -> None:
        self.path, self.enabled, self.writer, self.fields = run_dir / "metrics.csv", enabled, None, None
        self.elapsed = 0.0
        if not enabled:
            return
        if self.path.exists():
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                self.fields = list(reader.fieldnames or []) or None
                rows = list(reader)
            if self.fields:
                keep = [r for r in rows if _complete(r) and int(r["step"]) <= start_step]
                atomic_write(self.path, lambda tmp: self._write_rows(tmp, keep))
                self.elapsed = float(keep[-1].get("elapsed_s") or 0.0) if keep else 0.0
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1)
        except ImportError:
            self.writer = None

    def _write_rows(self, path: str, rows: list[dict]) -> None:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, self.fields, restval="")
            w.writeheader()
            w.writerows(rows)

    def log(self, step: int, row: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **row}
        new = self.fields is None
        if new:
            self.fields = list(row.keys())
        elif any(k not in self.fields for k in row):  # a column that starts later (e.g. the adversarial terms)
            with open(self.path, newline="") as f:
                old = list(csv.DictReader(f))
            self.fields += [k for k in row if k not in self.fields]
            atomic_write(self.path, lambda tmp: self._write_rows(tmp, old))
        try:
            with open(self.path, "a", newline="") as f:
                w = csv.DictWriter(f, self.fields, extrasaction="ignore")
                if new:
                    w.writeheader()
                w.writerow(row)
        except OSError as err:
            raise storage_error(self.path, err) from None
        if self.writer is not None:
            for k, v in row.items():
                if k != "step":
                    self.writer.add_scalar(k, v, step)

    def image(self, tag: str, chw: np.ndarray, step: int) -> None:
        """A uint8 image (C, H, W) to TensorBoard."""
        if self.enabled and self.writer is not None:
            self.writer.add_image(tag, chw, step, dataformats="CHW")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _complete(row: dict) -> bool:
    """A CSV row with every field present and an integer step (a torn last line is dropped)."""
    if None in row or any(v is None for v in row.values()):
        return False
    try:
        int(row["step"])
    except (KeyError, ValueError):
        return False
    return True


def check_run_dir(cfg: RunConfig, run_dir: Path, resume: bool) -> None:
    """Refuse, before any work, a run directory that is foreign, or that holds a run (with a checkpoint)
    without ``resume``, or another config. A run that was started and never checkpointed (a failed first
    start) is started again by the same command."""
    saved = run_dir / CONFIG_FILE
    if saved.exists():
        started = (run_dir / CHECKPOINT_FILE).exists()
        if started and not resume:
            raise ConfigError(f"{run_dir}: run directory exists; pass --resume to continue it or choose another --out")
        diff = training_diff(load_config(saved), cfg)
        if diff:
            more = "; ..." if len(diff) > 3 else ""
            raise ConfigError(f"{run_dir}: the config differs from the run's saved {CONFIG_FILE} "
                              f"({'; '.join(diff[:3])}{more}); resume with the same config or choose another --out")
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: exists and is not a directory; choose another --out")
    if run_dir.exists() and not holds_only_leftovers(run_dir):
        raise ConfigError(f"{run_dir}: exists and is not a flowmaps run; choose another --out")


def open_run_dir(cfg: RunConfig, run_dir: Path, resume: bool):
    """Create and lock the run directory, check it again under the lock, clear temp files of killed writes,
    save ``config.yaml``; returns the lock (None where the system has no locks)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise storage_error(run_dir, err) from None
    lock = lock_folder(run_dir, "another process is training into this run directory")
    try:
        check_run_dir(cfg, run_dir, resume)  # another process may have started a run here since the first check
        remove_stale_temp(run_dir)
        saved = run_dir / CONFIG_FILE
        if not saved.exists() or config_diff(load_config(saved), cfg):  # new, or resumed with new eval/device keys
            write_text(saved, dump_config(cfg))
    except BaseException:
        if lock is not None:
            lock.close()
        raise
    return lock
