"""Training throughput of the CIFAR-10-size UNet: images/s and peak GPU memory per method at bf16 autocast, with
``torch.compile`` off and on.

    python benchmarks/image_throughput.py --device cuda --batch 128 --compile off,on    # on a GPU
    python benchmarks/image_throughput.py --device cpu --small --steps 2 --compile off   # smoke test on a CPU

One training step is exactly the loop's, :func:`flowmaps.run.trainer.train_step` on the state
:func:`~flowmaps.run.trainer.build_state` makes (``train.precision=bf16``: loss under ``torch.autocast(bfloat16)``,
backward, gradient clipping, update of the model and of the discriminator when there is one, EMA). Networks and
objectives come from the recipes: ``configs/cifar10_fm.yaml`` for FM, LSD, MeanFlow (as its paper trains it) and
LMD (distilling a teacher of the same network, made here by one training step), ``configs/cifar10_edm.yaml`` for EDM,
``configs/cifar10_lmm.yaml`` for LMM with the L2 distance, with and without the adversarial loss (LPIPS would add a
VGG-16 forward/backward and needs its weights). Data are random tensors of CIFAR-10's shape (3, 32, 32): the
step's cost does not depend on the pixels. Compilation stops once ``--budget`` seconds have passed (the rows left
say so). Writes ``docs/benchmarks/image_throughput.{md,json}`` (``--out``).
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flowmaps.app.evaluate import markdown_table, save_rows
from flowmaps.data.sources import Source
from flowmaps.run.config import load_config
from flowmaps.run.trainer import build_state, train, train_step

ROOT_DIR = Path(__file__).resolve().parents[1]
SHAPE = (3, 32, 32)
SMALL = ["model.channels=16", "model.mult=[1, 2]", "model.num_res_blocks=1", "model.attn_resolutions=[16]"]
METHODS = {
    "FM": ("cifar10_fm", []),
    "EDM": ("cifar10_edm", []),
    "LSD": ("cifar10_fm", ["objective={method: lsd}", "model.max_freq=1"]),
    "MeanFlow": ("cifar10_fm", ["objective={method: meanflow, adaptive_p: 1, time: logit_normal}",
                                "model.max_freq=1"]),
    "LMD": ("cifar10_fm", ["objective={method: lmd}", "model.max_freq=1", "teacher={kind: run, path: TEACHER}"]),
    "LMM (L2)": ("cifar10_lmm", ["objective.distance=l2", "objective.adversarial=false"]),
    "LMM (L2 + adversarial)": ("cifar10_lmm", ["objective.distance=l2", "objective.adv_start=0"]),
}


class RandomImages(Source):
    """Uniform pixels in [−1, 1] of CIFAR-10's shape; with ``pairs``, batches also carry the noise ``x0``."""

    def __init__(self, pairs: bool) -> None:
        self.pairs, self.shape, self.sigma_data, self.name = pairs, SHAPE, 0.5, "random"
        self.sigma0 = 1.0 if pairs else None

    def _draw(self, n: int, g: torch.Generator | None = None) -> dict[str, Tensor]:
        out = {"x1": torch.rand(n, *SHAPE, generator=g) * 2 - 1}
        if self.pairs:
            out["x0"] = torch.randn(n, *SHAPE, generator=g)
        return out

    def sample(self, n: int) -> dict[str, Tensor]:
        return self._draw(n)

    def reference(self, n: int, seed: int = 1234) -> Tensor:
        return self._draw(n, torch.Generator().manual_seed(seed))["x1"]


def make_teacher(work: Path, args) -> Path:
    """A velocity run of the FM recipe (one step on random images): the LMD teacher."""
    np.save(work / "random.npy", np.random.default_rng(0).uniform(-1, 1, (64, *SHAPE)).astype(np.float32))
    over = [f"data={{kind: array, path: {work / 'random.npy'}}}", "train.steps=1", "train.ckpt_every=1",
            f"train.device={args.device}", "train.batch_size=8", "eval.every=0"] + (SMALL if args.small else [])
    return train(load_config(ROOT_DIR / "configs" / "cifar10_fm.yaml", over), work / "teacher", progress=False)


def measure(name: str, compiled: bool, teacher: Path, args) -> dict:
    cfg_name, over = METHODS[name]
    over = [o.replace("TEACHER", str(teacher)) for o in over]
    cfg = load_config(ROOT_DIR / "configs" / f"{cfg_name}.yaml",
                      over + (SMALL if args.small else []) + [f"train.device={args.device}", "train.precision=bf16",
                                                               f"train.compile={str(compiled).lower()}"])
    src = RandomImages(pairs=cfg.objective.method == "lmm")
    torch.manual_seed(0)
    state = build_state(cfg, src)
    cuda = state.device.type == "cuda"

    def step() -> float:
        return train_step(state, {k: v.to(state.device) for k, v in src.sample(args.batch).items()}).loss

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    warm = time.perf_counter() - t0
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    losses = [step() for _ in range(args.steps)]
    if cuda:
        torch.cuda.synchronize()
    sec = time.perf_counter() - start
    row = {"method": name, "compile": compiled, "params_M": sum(p.numel() for p in state.model.parameters()) / 1e6,
           "batch": args.batch, "images_per_s": args.batch * args.steps / sec, "s_per_step": sec / args.steps,
           "warmup_s": warm, "peak_mem_GiB": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
           "finite": all(np.isfinite(losses))}
    print(row, flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--compile", default="off", help="off, on or off,on")
    p.add_argument("--budget", type=float, default=1e9, help="seconds after which no more compiled rows start")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile's backend (eager: a smoke test)")
    p.add_argument("--small", action="store_true", help="a tiny UNet (smoke test)")
    p.add_argument("--out", default=str(ROOT_DIR / "docs" / "benchmarks" / "image_throughput"))
    args = p.parse_args()
    if args.compile_backend != "inductor":
        torch.compile = functools.partial(torch.compile, backend=args.compile_backend)
    t_start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        teacher = make_teacher(Path(tmp), args)
        for flag in args.compile.split(","):
            for name in args.methods.split(","):
                if flag == "on" and time.perf_counter() - t_start > args.budget:
                    rows.append({"method": name, "compile": True, "note": f"skipped: past {args.budget:g} s"})
                    continue
                rows.append(measure(name, flag == "on", teacher, args))
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    for r in rows:
        r["device"] = device
    save_rows(args.out, rows)
    print(markdown_table(rows, f"CIFAR-10-size UNet training step, bf16 autocast, {device}"))


if __name__ == "__main__":
    main()
