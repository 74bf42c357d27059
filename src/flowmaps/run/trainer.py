"""One trainer for every objective: :class:`TrainState`, :func:`train_step`, and the loop :func:`train`.

A step (:func:`train_step`): the objective's loss under autocast; backward of the model's loss into the model
(and the objective's extra parameters) and of each auxiliary loss into its network; one all-reduce that
averages every gradient and every loss over the processes (explicitly, because ``torch.func.jvp`` does not pass
through DistributedDataParallel); clipping; then, only if every loss and gradient is finite, the optimizer
steps of the model and of every auxiliary network and the EMA update. A non-finite step changes nothing: it
stops training (``train.nonfinite: stop``) or is skipped and counted (``skip``).

Determinism: all randomness (data draws, noise, times) comes from the global torch RNGs (CPU, and CUDA on a GPU)
seeded by ``cfg.seed``; their states are checkpointed with the model, EMA, optimizers and the objective's state,
so a run killed at any instant and resumed reproduces an uninterrupted run bit for bit on the CPU (see
docs/guarantees.md for what holds on a GPU).
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..core import distributed
from ..core.models import FlowMap, drop_labels
from ..core.objectives import Objective
from ..data import Source, build_source
from ..errors import CheckpointError, ConfigError, NonFiniteError
from ..io.checkpoint import load_state, save_state
from .build import CHECKPOINT_FILE, build_model, build_objective, ema_states, resolve_device
from .config import RunConfig, TrainConfig, decay_name, dump_config, parse_config, read_yaml, training_diff
from .monitor import Monitor
from .rundir import MetricsLog, check_run_dir, open_run_dir


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Warm-up then ``constant``, ``cosine`` to 0, or ``sqrt``: ``sqrt(decay_after / step)`` after decay_after."""
    if cfg.warmup and step < cfg.warmup:
        return (step + 1) / cfg.warmup
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(step / cfg.steps, 1.0)))
    if cfg.schedule == "sqrt" and cfg.decay_after and step > cfg.decay_after:
        return math.sqrt(cfg.decay_after / step)
    return 1.0


def make_optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "radam": torch.optim.RAdam}[cfg.optimizer]
    return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """``θ_ema ← d θ_ema + (1 - d) θ`` with the warm-up ``d = min(decay, (1 + step)/(10 + step))``."""
    d = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - d)


@dataclass
class TrainState:
    """Everything a training step reads and changes; :func:`build_state` makes it from a config."""

    cfg: RunConfig
    model: FlowMap
    emas: dict[str, FlowMap]  # one EMA copy per decay of train.ema, by name (decay_name)
    objective: Objective
    optimizer: torch.optim.Optimizer
    params: list[nn.Parameter]  # the model's and the objective's extra parameters (one optimizer)
    aux: dict[str, tuple[list[nn.Parameter], torch.optim.Optimizer]]  # auxiliary networks' parameters, optimizers
    device: torch.device
    teacher: dict[str, Any] = field(default_factory=dict)  # what pins the distillation teacher
    step: int = 0
    skipped: int = 0


def build_state(cfg: RunConfig, source: Source) -> TrainState:
    """Model, EMA, objective and optimizers for ``cfg`` on ``source``, on ``cfg.train.device``, at step 0."""
    tc = cfg.train
    device = resolve_device(tc.device)
    objective, teacher = build_objective(cfg, source)
    objective = objective.to(device)
    model = build_model(cfg, source, objective.form).to(device)
    if cfg.teacher is not None and cfg.teacher.kind == "run" and cfg.teacher.init:
        model.load_state_dict(teacher.model.state_dict())
    emas = {decay_name(d): copy.deepcopy(model).requires_grad_(False).eval() for d in tc.ema}
    if tc.compile:
        model.net = torch.compile(model.net)
    params = list(model.parameters()) + objective.extra_parameters()
    aux = {}
    for name, a in objective.auxiliaries().items():
        aux_params = list(a.net.parameters())
        aux[name] = (aux_params, a.optimizer(aux_params))
    return TrainState(cfg, model, emas, objective, make_optimizer(tc, params), params, aux, device, teacher.identity)


def _grads(params: list[nn.Parameter]) -> list[torch.Tensor]:
    return [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]


@dataclass
class StepResult:
    loss: float
    grad_norm: float
    lr: float
    logs: dict[str, float]
    nonfinite: str | None = None  # "loss" or "gradient" when the step was not applied


def _accumulate(state: TrainState, batch: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], dict, dict]:
    """Backward of the losses of the ``train.accumulate`` equal micro-batches of ``batch``, each divided by
    their number (so the gradients are those of the mean loss); ``(losses, aux losses, logs)``, each averaged."""
    tc = state.cfg.train
    parts = tc.accumulate
    amp = torch.autocast(state.device.type, dtype=torch.bfloat16, enabled=tc.precision == "bf16")
    state.optimizer.zero_grad(set_to_none=True)
    for _, opt in state.aux.values():
        opt.zero_grad(set_to_none=True)
    values: list[torch.Tensor] = []
    aux: dict[str, list[torch.Tensor]] = {}
    logs: dict[str, float] = {}
    for micro in zip(*(v.chunk(parts) for v in batch.values())):
        with amp:
            out = state.objective.loss(state.model, dict(zip(batch, micro)), state.step)
        (out.value / parts).backward(inputs=state.params)
        for name in state.aux:
            if name in out.aux:
                (out.aux[name] / parts).backward(inputs=state.aux[name][0])
                aux.setdefault(name, []).append(out.aux[name].detach().float())
        values.append(out.value.detach().float())
        for k, v in out.logs.items():
            logs[k] = logs.get(k, 0.0) + v / parts
    return values, aux, logs


def train_step(state: TrainState, batch: dict[str, torch.Tensor]) -> StepResult:
    """One optimization step on ``batch`` (see the module docstring), over ``train.accumulate`` micro-batches;
    ``state.step`` advances by one.

    With ``train.nonfinite: stop`` a non-finite loss or gradient raises :class:`NonFiniteError` (nothing was
    changed); with ``skip`` the step is counted in ``state.skipped`` and nothing else changes."""
    tc = state.cfg.train
    lr = tc.lr * lr_factor(tc, state.step)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    m = state.cfg.model
    if m.cond_drop and "label" in batch:  # classifier-free guidance: train the null class ∅ as well
        batch = {**batch, "label": drop_labels(batch["label"], m.cond_drop, m.num_classes)}
    values, aux_losses, logs = _accumulate(state, batch)
    groups = [state.params] + [state.aux[name][0] for name in aux_losses]
    losses = torch.stack([torch.stack(values).mean()] + [torch.stack(v).mean() for v in aux_losses.values()])
    flat = [g for params in groups for g in _grads(params)] + [losses]
    synced = distributed.average(flat)
    if synced is not flat:  # several processes: every rank takes the averaged gradients and losses
        k = 0
        for params in groups:
            for p in params:
                p.grad = synced[k]
                k += 1
        losses = synced[-1]
    grad_norm = torch.nn.utils.clip_grad_norm_(state.params, tc.grad_clip or float("inf"))
    aux_finite = all(bool(torch.isfinite(g).all()) for params in groups[1:] for g in _grads(params))
    state.step += 1
    result = StepResult(float(losses[0]), float(grad_norm), lr, logs)
    if not bool(torch.isfinite(losses).all()):
        result.nonfinite = "loss"
    elif not (torch.isfinite(grad_norm) and aux_finite):
        result.nonfinite = "gradient"
    if result.nonfinite is not None:
        if tc.nonfinite == "stop":
            raise NonFiniteError(f"non-finite {result.nonfinite} at step {state.step}")
        state.skipped += 1
        return result
    state.optimizer.step()
    for name in aux_losses:
        state.aux[name][1].step()
    for decay in tc.ema:
        ema_update(state.emas[decay_name(decay)], state.model, decay, state.step - 1)
    return result


# ----- checkpoints ---------------------------------------------------------------------------------------------


def _plain(state: dict) -> dict:
    """A state dict without ``torch.compile``'s ``_orig_mod.`` prefixes."""
    return {k.replace("_orig_mod.", ""): v for k, v in state.items()}


def _load_plain(module: nn.Module, state: dict) -> None:
    """Load a state dict saved by :func:`_plain` into ``module``, compiled or not."""
    names = {k.replace("_orig_mod.", ""): k for k in module.state_dict()}
    module.load_state_dict({names.get(k, k): v for k, v in state.items()})


def _rng_states(device: torch.device) -> dict[str, list[torch.Tensor]]:
    """The global RNG states of all ranks: ``rng`` (CPU) and, on a GPU, ``cuda_rng``."""
    out = {"rng": distributed.gather(torch.get_rng_state(), str(device))}
    if device.type == "cuda":
        out["cuda_rng"] = distributed.gather(torch.cuda.get_rng_state(device), str(device))
    return out


def _set_rng_states(state: dict, device: torch.device, rank: int) -> None:
    torch.set_rng_state(state["rng"][rank % len(state["rng"])].cpu())
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"][rank % len(state["cuda_rng"])].cpu(), device)


def _finite(state: TrainState) -> bool:
    nets = [state.params] + [params for params, _ in state.aux.values()]
    return all(bool(torch.isfinite(p).all()) for params in nets for p in params)


def checkpoint_state(state: TrainState) -> dict[str, Any]:
    """What a checkpoint holds (the RNG states are added by :func:`save_checkpoint`)."""
    return {"step": state.step, "skipped": state.skipped, "model": _plain(state.model.state_dict()),
            "ema": {name: ema.state_dict() for name, ema in state.emas.items()},
            "optim": state.optimizer.state_dict(),
            "aux_optim": {name: opt.state_dict() for name, (_, opt) in state.aux.items()},
            "objective": state.objective.state_dict(), "teacher": state.teacher, "config": dump_config(state.cfg)}


PINNED = ("kind", "config_sha256", "checkpoint_sha256", "files", "target", "options", "file_sha256",
          "guidance")  # what of a teacher's identity a resume must find again
UNPINNED = {"guidance": 0.0}  # the value of a key that a checkpoint from before it was recorded lacks


def restore(state: TrainState, ckpt: Path) -> dict[str, Any]:
    """Load ``ckpt`` into ``state``; a checkpoint from another config or another teacher is refused."""
    saved_state = load_state(ckpt, device=str(state.device))
    try:
        saved = parse_config(read_yaml(saved_state["config"]))
    except (KeyError, ConfigError) as err:
        raise CheckpointError(f"{ckpt}: holds no readable config ({err}); it is not this run's checkpoint") from None
    diff = training_diff(saved, state.cfg)
    if diff:
        raise CheckpointError(f"{ckpt}: written by another config ({'; '.join(diff[:3])}); it does not match this run")
    was, now = saved_state.get("teacher") or {}, state.teacher
    changed = [k for k in PINNED if was.get(k, UNPINNED.get(k)) != now.get(k, UNPINNED.get(k))]
    if changed:
        raise CheckpointError(f"{ckpt}: the teacher changed since this run started ({', '.join(changed)} differ: "
                              f"{now.get('path', now.get('kind'))}); resume against the original teacher or "
                              "train into another --out")
    try:
        _load_plain(state.model, saved_state["model"])
        saved_emas = ema_states(saved_state, state.cfg)
        for name, ema in state.emas.items():
            ema.load_state_dict(saved_emas[name])
        state.optimizer.load_state_dict(saved_state["optim"])
        state.objective.load_state_dict(saved_state["objective"])
        for name, (_, opt) in state.aux.items():
            opt.load_state_dict(saved_state["aux_optim"][name])
    except (KeyError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{ckpt}: does not match the run's model ({str(err).splitlines()[0]})") from None
    state.step, state.skipped = int(saved_state["step"]), int(saved_state["skipped"])
    return saved_state


def _kept(ckpt: Path) -> str:
    return f"the last good checkpoint is kept in {ckpt}" if ckpt.exists() else "no checkpoint was written yet"


def save_checkpoint(state: TrainState, ckpt: Path, rank: int) -> None:
    """Write the checkpoint (rank 0); never with non-finite weights."""
    if not _finite(state):
        raise NonFiniteError(f"non-finite weights after step {state.step}; {_kept(ckpt)}")
    rngs = _rng_states(state.device)
    if rank == 0:
        save_state(ckpt, {**checkpoint_state(state), **rngs})


# ----- the loop ------------------------------------------------------------------------------------------------


def train(cfg: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
          stop_after: int | None = None) -> Path:
    """Train ``cfg`` into ``run_dir`` (``stop_after``: leave, checkpointed, after that many steps of this call).

    Everything is validated (config, device, run directory, data, teacher, checkpoint) before anything is written.
    """
    tc, run_dir = cfg.train, Path(run_dir)
    distributed.init(str(resolve_device(tc.device)))
    rank, _ = distributed.world()
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if rank == 0:
        check_run_dir(cfg, run_dir, resume)
    torch.manual_seed(cfg.seed)
    source = build_source(cfg.data)
    state = build_state(cfg, source)
    monitor = Monitor(cfg, source, str(state.device), state.objective.ctx.t0)
    ckpt = run_dir / CHECKPOINT_FILE
    if resume and ckpt.exists():
        _set_rng_states(restore(state, ckpt), state.device, rank)
    else:
        torch.manual_seed(cfg.seed + rank)
    lock = open_run_dir(cfg, run_dir, resume) if rank == 0 else None
    if rank == 0 and state.step:
        print(f"flowmaps: resuming {run_dir} from step {state.step}", file=sys.stderr)
    try:
        if state.step < tc.steps:
            monitor.start(run_dir)
            fit(state, source, run_dir, stop_after, progress, rank, monitor)
    finally:
        if lock is not None:
            lock.close()
    return run_dir


def fit(state: TrainState, source: Source, run_dir: Path, stop_after: int | None, progress: bool, rank: int,
        monitor: Monitor | None = None) -> None:
    """Steps ``state.step + 1 …`` until ``train.steps`` (or ``stop_after`` more), logging, evaluating
    (``eval.every``) and checkpointing."""
    tc = state.cfg.train
    ckpt = run_dir / CHECKPOINT_FILE
    log = MetricsLog(run_dir, state.step, enabled=rank == 0)
    first_ema = state.emas[decay_name(tc.ema[0])]
    batches = source.batches(tc.batch_size, step=state.step, seed=state.cfg.seed)
    bar = tqdm(total=tc.steps, initial=state.step, disable=not progress or rank != 0, unit="step", dynamic_ncols=True)
    t_start = time.perf_counter() - log.elapsed  # elapsed_s: the wall time of all sessions up to the row
    stop_at = tc.steps if stop_after is None else min(tc.steps, state.step + stop_after)
    try:
        while state.step < stop_at:
            batch = {k: v.to(state.device) for k, v in next(batches).items()}
            try:
                r = train_step(state, batch)
            except NonFiniteError as err:
                raise NonFiniteError(f"{err}; {_kept(ckpt)} (train.nonfinite=skip skips such steps)") from None
            if r.nonfinite is not None:
                if rank == 0:
                    tqdm.write(f"flowmaps: warning: non-finite {r.nonfinite} at step {state.step}; step skipped "
                               f"({state.skipped} so far)", file=sys.stderr)
                if state.skipped > max(10, tc.max_skipped * state.step):
                    save_checkpoint(state, ckpt, rank)
                    raise NonFiniteError(f"{state.skipped} of {state.step} steps skipped for non-finite losses or "
                                         f"gradients (more than train.max_skipped={tc.max_skipped:g}); training "
                                         f"stopped, the weights of the last good step are kept in {ckpt}")
            bar.update(1)
            scores = monitor(first_ema, state.step, log, rank) if monitor is not None else {}
            if state.step % tc.log_every == 0 or state.step == tc.steps or scores:
                bar.set_postfix(loss=f"{r.loss:.4g}")
                log.log(state.step, {"loss": r.loss, "grad_norm": r.grad_norm, "lr": r.lr, "skipped": state.skipped,
                                     "elapsed_s": time.perf_counter() - t_start, **r.logs, **scores})
            if state.step % tc.ckpt_every == 0 or state.step == stop_at:
                save_checkpoint(state, ckpt, rank)
    finally:
        bar.close()
        log.close()
