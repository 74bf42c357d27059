"""One training loop for every objective: EMA, clipping, LR schedule, AMP, checkpoints, exact resume, DDP.

Determinism: all randomness (data draws, noise, times) comes from the global torch RNGs (CPU, and CUDA on
a GPU) seeded by ``cfg.seed``; their states are checkpointed with the model, EMA, optimizer and the
objective's own state, so a run killed at any instant and resumed reproduces an uninterrupted run bit for
bit on the CPU (see docs/guarantees.md for what holds on a GPU). Multi-process runs (``torchrun``) average
gradients with an explicit all-reduce instead of wrapping the model in DistributedDataParallel, because
``torch.func.jvp`` does not pass through it.
"""

from __future__ import annotations

import copy
import csv
import math
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from tqdm import tqdm

from .checkpoint import (LOCK_FILE, CheckpointError, atomic_write, is_temp_file, load_state, lock_folder,
                         remove_stale_temp, save_state)
from .config import ConfigError, RunConfig, config_diff, dump_config, load_config, parse_config
from .data.sources import build_source
from . import distributed
from .runs import CHECKPOINT_FILE, CONFIG_FILE, build_model, build_objective




class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss, gradient or weight (``train.nonfinite: stop``)."""


def lr_factor(cfg, step: int) -> float:
    """Warm-up then ``constant``, ``cosine`` to 0, or ``sqrt``: ``sqrt(decay_after / step)`` after decay_after."""
    if cfg.warmup and step < cfg.warmup:
        return (step + 1) / cfg.warmup
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(step / cfg.steps, 1.0)))
    if cfg.schedule == "sqrt" and cfg.decay_after and step > cfg.decay_after:
        return math.sqrt(cfg.decay_after / step)
    return 1.0


def make_optimizer(cfg, params) -> torch.optim.Optimizer:
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "radam": torch.optim.RAdam}[cfg.optimizer]
    return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """``θ_ema ← d θ_ema + (1 - d) θ`` with the warm-up ``d = min(decay, (1 + step)/(10 + step))``."""
    d = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - d)


def all_reduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Average gradients over processes (one flat all-reduce)."""
    rank, world = distributed.world()
    if world == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset: offset + g.numel()].view_as(g).clone()
        offset += g.numel()


def _gather(state: torch.Tensor, device: str) -> list[torch.Tensor]:
    """Every rank's copy of ``state`` (an RNG state), gathered on ``device`` and returned on the CPU."""
    rank, world = distributed.world()
    if world == 1:
        return [state]
    t = state.to(device)
    out = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(out, t)
    return [o.cpu() for o in out]


def _rng_states(device: str) -> dict[str, list[torch.Tensor]]:
    """The global RNG states of all ranks: ``rng`` (CPU) and, on a GPU, ``cuda_rng``."""
    out = {"rng": _gather(torch.get_rng_state(), device)}
    if device.startswith("cuda"):
        out["cuda_rng"] = _gather(torch.cuda.get_rng_state(device), device)
    return out


def _set_rng_states(state: dict, device: str, rank: int) -> None:
    torch.set_rng_state(state["rng"][rank % len(state["rng"])].cpu())
    if device.startswith("cuda") and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"][rank % len(state["cuda_rng"])].cpu(), device)


class MetricsLog:
    """``metrics.csv`` (appended, cut back to the resumed step) and TensorBoard scalars."""

    def __init__(self, run_dir: Path, start_step: int, enabled: bool) -> None:
        self.path, self.enabled, self.writer, self.fields = run_dir / "metrics.csv", enabled, None, None
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
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
        if self.writer is not None:
            for k, v in row.items():
                if k != "step":
                    self.writer.add_scalar(k, v, step)

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
    """Refuse, before any work, a run directory that exists (unless resuming the same config) or is foreign."""
    saved = run_dir / CONFIG_FILE
    if saved.exists():
        if not resume:
            raise ConfigError(f"{run_dir}: run directory exists; pass --resume to continue it or choose another --out")
        diff = config_diff(load_config(saved), cfg)
        if diff:
            more = "; ..." if len(diff) > 3 else ""
            raise ConfigError(f"{run_dir}: the config differs from the run's saved {CONFIG_FILE} "
                              f"({'; '.join(diff[:3])}{more}); resume with the same config or choose another --out")
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: exists and is not a directory; choose another --out")
    if run_dir.exists() and any(p.name != LOCK_FILE and not is_temp_file(p) for p in run_dir.iterdir()):
        raise ConfigError(f"{run_dir}: exists and is not a flowmaps run; choose another --out")


def open_run_dir(cfg: RunConfig, run_dir: Path, resume: bool):
    """Create and lock the run directory, clear temp files of killed writes, save ``config.yaml``; returns the lock."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = lock_folder(run_dir, "another process is training into this run directory")
    saved = run_dir / CONFIG_FILE
    if saved.exists() and not resume:  # another process created the run since check_run_dir
        if lock is not None:
            lock.close()
        raise ConfigError(f"{run_dir}: run directory exists; pass --resume to continue it or choose another --out")
    remove_stale_temp(run_dir)
    if not saved.exists():
        atomic_write(saved, lambda tmp: Path(tmp).write_text(dump_config(cfg)))
    return lock


def _restore(ckpt: Path, cfg: RunConfig, model, ema, opt, objective) -> dict:
    """Load ``ckpt`` into the run's pieces; a checkpoint from another config is a :class:`CheckpointError`."""
    state = load_state(ckpt, device=cfg.train.device)
    try:
        saved = parse_config(yaml.safe_load(state["config"]))
    except (KeyError, ConfigError, yaml.YAMLError) as err:
        raise CheckpointError(f"{ckpt}: holds no readable config ({err}); it is not this run's checkpoint") from None
    diff = config_diff(saved, cfg)
    if diff:
        raise CheckpointError(f"{ckpt}: written by another config ({'; '.join(diff[:3])}); "
                              "it does not match this run")
    try:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optim"])
        objective.load_state_dict(state["objective"])
        objective.load_train_state(state.get("objective_train", {}))
    except (KeyError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{ckpt}: does not match the run's model ({str(err).splitlines()[0]})") from None
    return state


def _finite(params: list[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in params)


def train(cfg: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
          stop_after: int | None = None) -> Path:
    """Train ``cfg`` into ``run_dir`` (``stop_after``: leave, checkpointed, after that many steps of this call).

    Everything is validated (config, run directory, data, teacher, checkpoint) before anything is written.
    """
    tc = cfg.train
    run_dir = Path(run_dir)
    distributed.init(tc.device)
    rank, world = distributed.world()
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if rank == 0:
        check_run_dir(cfg, run_dir, resume)
    torch.manual_seed(cfg.seed)
    source = build_source(cfg.data)
    objective = build_objective(cfg, source).to(tc.device)
    model = build_model(cfg, source, objective.kind).to(tc.device)
    ema = copy.deepcopy(model).requires_grad_(False)
    params = list(model.parameters()) + objective.extra_parameters()
    opt = make_optimizer(tc, params)
    step, skipped = 0, 0
    ckpt = run_dir / CHECKPOINT_FILE
    if resume and ckpt.exists():
        state = _restore(ckpt, cfg, model, ema, opt, objective)
        step, skipped = int(state["step"]), int(state["skipped"])
        _set_rng_states(state, tc.device, rank)
    else:
        torch.manual_seed(cfg.seed + rank)
    lock = open_run_dir(cfg, run_dir, resume) if rank == 0 else None
    if rank == 0 and step:
        print(f"flowmaps: resuming {run_dir} from step {step}", file=sys.stderr)
    try:
        if step < tc.steps:
            _loop(cfg, run_dir, model, ema, opt, objective, source, params, step, skipped, stop_after, progress, rank)
    finally:
        if lock is not None:
            lock.close()
    return run_dir


def _loop(cfg, run_dir, model, ema, opt, objective, source, params, step, skipped, stop_after, progress,
          rank) -> None:
    """Steps ``step + 1 …`` until ``train.steps`` (or ``stop_after`` more), logging and checkpointing."""
    tc = cfg.train
    ckpt = run_dir / CHECKPOINT_FILE
    if tc.compile:
        model.net = torch.compile(model.net)
    log = MetricsLog(run_dir, step, enabled=rank == 0)
    amp = torch.autocast(tc.device.split(":")[0], dtype=torch.bfloat16, enabled=tc.precision == "bf16")

    def kept() -> str:
        return f"the last good checkpoint is kept in {ckpt}" if ckpt.exists() else "no checkpoint was written yet"

    def checkpoint(at: int) -> None:
        if not _finite(params):
            raise NonFiniteError(f"non-finite weights after step {at}; {kept()}")
        rngs = _rng_states(tc.device)
        if rank == 0:
            save_state(ckpt, {"step": at, "skipped": skipped, "model": _plain(model.state_dict()),
                              "ema": ema.state_dict(), "optim": opt.state_dict(),
                              "objective": objective.state_dict(), "objective_train": objective.train_state(),
                              **rngs, "config": dump_config(cfg)})

    bar = tqdm(total=tc.steps, initial=step, disable=not progress or rank != 0, unit="step", dynamic_ncols=True)
    t_start, stop_at = time.perf_counter(), tc.steps if stop_after is None else min(tc.steps, step + stop_after)
    try:
        while step < stop_at:
            for group in opt.param_groups:
                group["lr"] = tc.lr * lr_factor(tc, step)
            batch = {k: v.to(tc.device) for k, v in source.sample(tc.batch_size).items()}
            with amp:
                loss, logs = objective.loss(model, batch, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            all_reduce_grads(params)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip or float("inf"))
            step += 1
            if torch.isfinite(loss) and torch.isfinite(grad_norm):
                opt.step()
                ema_update(ema, model, tc.ema, step - 1)
            else:
                what = "loss" if not torch.isfinite(loss) else "gradient"
                if tc.nonfinite == "stop":
                    raise NonFiniteError(f"non-finite {what} at step {step}; {kept()} "
                                         "(train.nonfinite=skip skips such steps)")
                skipped += 1
                if rank == 0:
                    tqdm.write(f"flowmaps: warning: non-finite {what} at step {step}; step skipped "
                               f"({skipped} so far)", file=sys.stderr)
            bar.update(1)
            if step % tc.log_every == 0 or step == tc.steps:
                row = {"loss": float(loss.detach()), "grad_norm": float(grad_norm), "lr": opt.param_groups[0]["lr"],
                       "skipped": skipped, "elapsed_s": time.perf_counter() - t_start, **logs}
                bar.set_postfix(loss=f"{float(loss.detach()):.4g}")
                log.log(step, row)
            if step % tc.ckpt_every == 0 or step == stop_at:
                checkpoint(step)
    finally:
        bar.close()
        log.close()


def _plain(state: dict) -> dict:
    """A state dict without ``torch.compile``'s ``_orig_mod.`` prefixes."""
    return {k.replace("_orig_mod.", ""): v for k, v in state.items()}
