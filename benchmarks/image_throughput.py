"""Training throughput of a CIFAR-10-size UNet step: images/s and peak GPU memory per method, bf16 autocast.

    python benchmarks/image_throughput.py --device cuda --batch 128          # on a GPU
    python benchmarks/image_throughput.py --device cpu --small --steps 2     # smoke test on a CPU

One training step is exactly the loop's: objective loss under ``torch.autocast(bfloat16)``, backward, gradient
clipping, optimizer step, EMA update. Networks and objectives come from the recipes (``configs/cifar10_fm.yaml``
for FM and LSD, ``configs/cifar10_lmm.yaml`` for LMM with the L2 distance, with and without the adversarial
loss; LPIPS would add a VGG-16 forward/backward and needs its weights). Data are random tensors of CIFAR-10's
shape (3, 32, 32): the step's cost does not depend on the pixels. LSD runs when the objective is registered.
Writes ``docs/benchmarks/image_throughput.{md,json}`` (``--out``).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

ROOT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT_DIR / "src"))

from flowmaps.run.config import load_config  # noqa: E402
from flowmaps.data.sources import Source  # noqa: E402
from flowmaps.app.evaluate import markdown_table, save_rows  # noqa: E402
from flowmaps.core.objectives import registry  # noqa: E402
from flowmaps.run.build import build_model, build_objective  # noqa: E402
from flowmaps.run.trainer import ema_update, make_optimizer  # noqa: E402

SHAPE = (3, 32, 32)


def source(pairs: bool) -> Source:
    def draw(n: int, g=None) -> dict:
        out = {"x1": torch.rand(n, *SHAPE, generator=g) * 2 - 1}
        if pairs:
            out["x0"] = torch.randn(n, *SHAPE, generator=g)
        return out

    return Source(shape=SHAPE, sigma_data=0.5, name="random", sigma0=1.0 if pairs else None,
                  _sampler=draw, _reference=lambda n, g: draw(n, g)["x1"])


def measure(name: str, cfg_name: str, over: list[str], args) -> dict:
    small = ["model.options={channels: 16, mult: [1, 2], num_res_blocks: 1, attn_resolutions: [16]}"] if args.small else []
    cfg = load_config(ROOT_DIR / "configs" / f"{cfg_name}.yaml",
                      over + small + [f"train.device={args.device}", "train.precision=bf16"])
    pairs = cfg.objective["method"] == "lmm"
    src = source(pairs)
    objective = build_objective(cfg, src).to(args.device)
    model = build_model(cfg, src, objective.kind).to(args.device)
    ema = copy.deepcopy(model).requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(cfg.train, params)
    amp = torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16)
    cuda = args.device.startswith("cuda")

    def step(i: int) -> None:
        batch = {k: v.to(args.device) for k, v in src.sample(args.batch).items()}
        with amp:
            loss, _ = objective.loss(model, batch, i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip or float("inf"))
        opt.step()
        ema_update(ema, model, cfg.train.ema, i)

    for i in range(args.warmup):
        step(i)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for i in range(args.steps):
        step(args.warmup + i)
    if cuda:
        torch.cuda.synchronize()
    sec = time.perf_counter() - start
    row = {"method": name, "params_M": sum(p.numel() for p in model.parameters()) / 1e6, "batch": args.batch,
           "images_per_s": args.batch * args.steps / sec, "s_per_step": sec / args.steps,
           "peak_mem_GiB": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}
    print(row, flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--small", action="store_true", help="a tiny UNet (smoke test)")
    p.add_argument("--out", default=str(ROOT_DIR / "docs" / "benchmarks" / "image_throughput"))
    args = p.parse_args()
    runs = [("FM", "cifar10_fm", []),
            ("LMM (L2)", "cifar10_lmm", ["objective.distance=l2", "objective.adversarial=false"]),
            ("LMM (L2 + adversarial)", "cifar10_lmm", ["objective.distance=l2", "objective.adv_start=0"])]
    if "lsd" in registry():
        runs.append(("LSD", "cifar10_fm", ["objective={method: lsd}"]))
    else:
        print("LSD skipped: the objective 'lsd' is not registered in this version", flush=True)
    rows = [measure(*r, args) for r in runs]
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    for r in rows:
        r["device"] = device
    save_rows(args.out, rows)
    print(markdown_table(rows, f"CIFAR-10-size UNet training step, bf16 autocast, {device}"))


if __name__ == "__main__":
    main()
