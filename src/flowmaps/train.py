"""One training loop for every objective: EMA, clipping, LR schedule, AMP, checkpoints, exact resume, DDP.

Determinism: all randomness (data draws, noise, times) comes from the global torch RNG seeded by
``cfg.seed``; its state is checkpointed, so stopping and resuming reproduces an uninterrupted run
bit for bit on the CPU. Multi-process runs (``torchrun``) average gradients with an explicit all-reduce
instead of wrapping the model in DistributedDataParallel, because ``torch.func.jvp`` does not pass through it.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from .checkpoint import atomic_write, load_state, save_state
from .config import ConfigError, RunConfig, dump_config, load_config
from .data.sources import build_source
from .runs import CHECKPOINT_FILE, CONFIG_FILE, build_model, build_objective


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss or gradient."""


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


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _init_distributed(device: str) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")


def all_reduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Average gradients over processes (one flat all-reduce)."""
    rank, world = _world()
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


def _gather_rng() -> list[torch.Tensor]:
    rank, world = _world()
    state = torch.get_rng_state()
    if world == 1:
        return [state]
    out = [torch.empty_like(state) for _ in range(world)]
    dist.all_gather(out, state)
    return out


class MetricsLog:
    """``metrics.csv`` (appended, cut back to the resumed step) and TensorBoard scalars."""

    def __init__(self, run_dir: Path, start_step: int, enabled: bool) -> None:
        self.path, self.enabled, self.writer, self.fields = run_dir / "metrics.csv", enabled, None, None
        if not enabled:
            return
        if self.path.exists():
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
            keep = [r for r in rows if int(r["step"]) <= start_step]
            self.fields = list(rows[0].keys()) if rows else None
            if self.fields:
                atomic_write(self.path, lambda tmp: self._write_rows(tmp, keep))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1)
        except ImportError:
            self.writer = None

    def _write_rows(self, path: str, rows: list[dict]) -> None:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, self.fields)
            w.writeheader()
            w.writerows(rows)

    def log(self, step: int, row: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **row}
        new = self.fields is None
        if new:
            self.fields = list(row.keys())
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


def prepare_run_dir(cfg: RunConfig, run_dir: Path, resume: bool) -> None:
    """Create the run directory; an existing one is an error unless resuming with the same config."""
    saved = run_dir / CONFIG_FILE
    if saved.exists():
        if not resume:
            raise ConfigError(f"{run_dir}: run directory exists; pass --resume to continue it or choose another --out")
        if load_config(saved) != cfg:
            raise ConfigError(f"{run_dir}: the config differs from the run's saved {CONFIG_FILE}; "
                              "resume with the same config or choose another --out")
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"{run_dir}: exists and is not a flowmaps run; choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(saved, lambda tmp: Path(tmp).write_text(dump_config(cfg)))


def train(cfg: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
          stop_after: int | None = None) -> Path:
    """Train ``cfg`` into ``run_dir`` (``stop_after``: leave after that many steps of this call, for tests)."""
    tc = cfg.train
    run_dir = Path(run_dir)
    _init_distributed(tc.device)
    rank, world = _world()
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if rank == 0:
        prepare_run_dir(cfg, run_dir, resume)
    torch.manual_seed(cfg.seed)
    source = build_source(cfg.data)
    objective = build_objective(cfg, source).to(tc.device)
    model = build_model(cfg, source, objective.kind).to(tc.device)
    ema = copy.deepcopy(model).requires_grad_(False)
    params = list(model.parameters())
    opt = make_optimizer(tc, params)
    step, skipped = 0, 0
    ckpt = run_dir / CHECKPOINT_FILE
    if resume and ckpt.exists():
        state = load_state(ckpt, device=tc.device)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optim"])
        objective.load_state_dict(state["objective"])
        objective.load_train_state(state.get("objective_train", {}))
        step, skipped = int(state["step"]), int(state["skipped"])
        torch.set_rng_state(state["rng"][rank % len(state["rng"])].cpu())
    else:
        torch.manual_seed(cfg.seed + rank)
    if step >= tc.steps:
        return run_dir
    if tc.compile:
        model.net = torch.compile(model.net)
    log = MetricsLog(run_dir, step, enabled=rank == 0)
    amp = torch.autocast(tc.device.split(":")[0], dtype=torch.bfloat16, enabled=tc.precision == "bf16")

    def checkpoint(at: int) -> None:
        rngs = _gather_rng()
        if rank == 0:
            save_state(ckpt, {"step": at, "skipped": skipped, "model": _plain(model.state_dict()),
                              "ema": ema.state_dict(), "optim": opt.state_dict(),
                              "objective": objective.state_dict(), "objective_train": objective.train_state(),
                              "rng": rngs, "config": dump_config(cfg)})

    bar = tqdm(total=tc.steps, initial=step, disable=not progress or rank != 0, unit="step", dynamic_ncols=True)
    t_start, stop_at = time.perf_counter(), tc.steps if stop_after is None else min(tc.steps, step + stop_after)
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
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
            if tc.nonfinite == "stop":
                bar.close()
                log.close()
                raise NonFiniteError(f"non-finite {'loss' if not torch.isfinite(loss) else 'gradient'} at step "
                                     f"{step + 1}; the last good checkpoint is kept in {ckpt}")
            skipped += 1
            step += 1
            continue
        opt.step()
        ema_update(ema, model, tc.ema, step)
        step += 1
        bar.update(1)
        if step % tc.log_every == 0 or step == tc.steps:
            loss = loss.detach()
            row = {"loss": float(loss), "grad_norm": float(grad_norm), "lr": opt.param_groups[0]["lr"],
                   "skipped": skipped, "elapsed_s": time.perf_counter() - t_start, **logs}
            bar.set_postfix(loss=f"{float(loss):.4g}")
            log.log(step, row)
        if step % tc.ckpt_every == 0 or step == tc.steps:
            checkpoint(step)
    bar.close()
    log.close()
    return run_dir


def _plain(state: dict) -> dict:
    """A state dict without ``torch.compile``'s ``_orig_mod.`` prefixes."""
    return {k.replace("_orig_mod.", ""): v for k, v in state.items()}
