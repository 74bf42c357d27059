"""Short training runs of every method on the CIFAR-10-size UNet (a finite, falling loss) and sampling throughput
at 1, 2 and 35 NFE: part of ``benchmarks/gpu_check.sh``.

    python benchmarks/gpu_runs.py --device cuda --work /tmp/gpu_runs          # on a GPU
    python benchmarks/gpu_runs.py --device cpu --small --steps 6 --work /tmp/gpu_runs_smoke

Data: scikit-learn's digits at 32×32 (bundled, nothing to download), the recipes' networks and optimizers at bf16
(``configs/cifar10_{fm,edm,lmm}.yaml``; LSD and MeanFlow from the FM recipe, LMD distilling the FM run, LMM on
pairs of the EDM run made by ``flowmaps pairs``' code with 4 Euler steps; MeanFlow as its paper trains it). Loss
"falls" when the mean of the last fifth of the logged losses is below that of the first fifth (MeanFlow: its
unweighted diagonal term, since the adaptive weight normalises the loss it optimises). Sampling: images/s of
batches of ``--sample-batch``.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import torch

from flowmaps.app.evaluate import markdown_table
from flowmaps.core.sampling import sample_batches
from flowmaps.pairs.generate import generate_pairs
from flowmaps.run.build import load_run, pair_teacher
from flowmaps.run.config import load_config
from flowmaps.run.trainer import train

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["model.channels=16", "model.mult=[1, 2]", "model.num_res_blocks=1", "model.attn_resolutions=[16]"]
DIGITS = "data={kind: images, name: digits, size: 32}"
RUNS = {  # name: (recipe, overrides); in order (LMD needs FM, LMM needs EDM's pairs)
    "FM": ("cifar10_fm", [DIGITS]),
    "EDM": ("cifar10_edm", [DIGITS]),
    "LSD": ("cifar10_fm", [DIGITS, "objective={method: lsd}", "model.max_freq=1"]),
    "MeanFlow": ("cifar10_fm", [DIGITS, "objective={method: meanflow, adaptive_p: 1, time: logit_normal}",
                                "model.max_freq=1"]),
    "LMD": ("cifar10_fm", [DIGITS, "objective={method: lmd}", "model.max_freq=1", "teacher={kind: run, path: <FM>}"]),
    "LMM": ("cifar10_lmm", ["data={kind: pairs, path: <PAIRS>}", "objective.distance=l2",
                            "objective.adversarial=false"]),
}


def short_run(name: str, work: Path, args) -> dict:
    recipe, over = RUNS[name]
    over = [o.replace("<FM>", str(work / "FM")).replace("<PAIRS>", str(work / "pairs")) for o in over]
    over += [f"train.steps={args.steps}", f"train.batch_size={args.batch}", f"train.device={args.device}",
             "train.precision=bf16", f"train.log_every={max(1, args.steps // 20)}", f"train.ckpt_every={args.steps}",
             "train.warmup=0", "eval.every=0"] + (SMALL if args.small else [])
    if name == "LMM":
        teacher = pair_teacher(work / "EDM", "euler", 4, device=args.device)
        generate_pairs(teacher, 4 * args.batch, work / "pairs", solver="euler", steps=4, progress=False)
    t0 = time.perf_counter()
    train(load_config(ROOT / "configs" / f"{recipe}.yaml", over), work / name, progress=False)
    with open(work / name / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    key = "diag" if name == "MeanFlow" else "loss"
    vals = [float(r[key]) for r in rows]
    k = max(1, len(vals) // 5)
    first, last = sum(vals[:k]) / k, sum(vals[-k:]) / k
    return {"method": name, "steps": args.steps, "seconds": time.perf_counter() - t0, "logged": key,
            "first_fifth": first, "last_fifth": last, "finite": all(math.isfinite(v) for v in vals),
            "falls": last < first}


def sampling(work: Path, args) -> list[dict]:
    rows = []
    for name, solver, steps in (("FM", "euler", 1), ("FM", "euler", 2), ("FM", "edm", 18), ("LSD", "map", 1),
                                ("LSD", "map", 2), ("MeanFlow", "map", 1)):
        run = load_run(work / name, device=args.device)
        n = args.sample_batch * args.sample_batches

        def go(run=run, solver=solver, steps=steps, n=n):
            return [nfe for _, _, nfe in sample_batches(run.model, run.source.shape, n, 0, args.sample_batch,
                                                        solver, steps)]

        go()  # warm-up
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        nfe = go()[0]
        sec = time.perf_counter() - t0
        rows.append({"model": name, "solver": solver, "steps": steps, "nfe": nfe, "images_per_s": n / sec})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--sample-batch", type=int, default=500)
    p.add_argument("--sample-batches", type=int, default=4)
    p.add_argument("--small", action="store_true", help="a tiny UNet (smoke test)")
    p.add_argument("--work", default="/tmp/gpu_runs")
    args = p.parse_args()
    work = Path(args.work)
    runs = []
    for name in RUNS:
        runs.append(short_run(name, work, args))
        print(runs[-1], flush=True)
    print(markdown_table(runs, f"short runs at bf16 ({args.device})"))
    print(markdown_table(sampling(work, args), f"sampling throughput ({args.device})"))
    bad = [r["method"] for r in runs if not (r["finite"] and r["falls"])]
    print(f"finite, falling loss: {'all' if not bad else 'not ' + ', '.join(bad)}")


if __name__ == "__main__":
    main()
