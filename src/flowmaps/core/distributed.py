"""Several processes (``torchrun``, or ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` set by hand): the
process group, this process's rank, and its GPU.

Training averages gradients explicitly (:func:`average`, called by the trainer for the model and every
auxiliary network alike, because ``torch.func.jvp`` does not pass through DistributedDataParallel); pair
generation splits the store's shards over the ranks. One process is the default and needs none of this.
"""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init(device: str) -> None:
    """Join the process group when ``WORLD_SIZE`` > 1 (NCCL on GPUs, gloo on CPUs). On GPUs each process takes
    the GPU ``LOCAL_RANK`` of its machine first (modulo the GPUs there are, so several processes may share one
    where NCCL allows it), and ``device="cuda"`` means that GPU for every later call."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    if device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")


def close(wait: bool = False) -> None:
    """Leave the process group, if any, before the interpreter exits: a group left to the interpreter's teardown
    can abort the process (its communication threads outlive Python), turning a clean error exit into SIGABRT.
    ``wait`` (a clean exit): on gloo every rank first waits for the others, at most a minute, so that none tears
    down its connections while a peer still uses them (that, too, aborted a rank now and then)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if wait and dist.get_backend() == "gloo":
        with contextlib.suppress(RuntimeError):  # a peer that is gone or late: leave anyway, its exit says why
            dist.monitored_barrier(timeout=timedelta(seconds=60))
    dist.destroy_process_group()


def average(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The mean of each tensor over the processes, in one flat all-reduce (unchanged with one process)."""
    _, size = world()
    if size == 1 or not tensors:
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= size
    out, offset = [], 0
    for t in tensors:
        out.append(flat[offset: offset + t.numel()].view_as(t).clone())
        offset += t.numel()
    return out


def gather(state: torch.Tensor, device: str) -> list[torch.Tensor]:
    """Every process's copy of ``state`` (e.g. an RNG state), gathered through ``device``, on the CPU."""
    _, size = world()
    if size == 1:
        return [state]
    t = state.to(device)
    out = [torch.empty_like(t) for _ in range(size)]
    dist.all_gather(out, t)
    return [o.cpu() for o in out]


def collect(obj: Any) -> list[Any]:
    """Every process's ``obj`` (plain values and CPU tensors), in rank order; ``[obj]`` with one process."""
    _, size = world()
    if size == 1:
        return [obj]
    out: list[Any] = [None] * size
    dist.all_gather_object(out, obj)
    return out
