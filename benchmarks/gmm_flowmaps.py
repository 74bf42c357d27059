"""Ground truth for flow maps: LMD and LSD on Gaussian mixtures (2-D and 16-D) against the exact flow map.

The analytic mixture teacher has an exact velocity; its flow map ``X_{0,1}`` is a float64 dopri5 solve. Each
method trains from the mixture (LMD distills the exact velocity, LSD only sees samples), then its N-step samples
are compared with the exact map of the same noise (RMS and mean error, relative to the data scale
``sqrt(E|x1 − E x1|²)``) and with fresh target samples (W2, beside the teacher's adaptive-solver W2).

    OMP_NUM_THREADS=1 python benchmarks/gmm_flowmaps.py --steps 3000     # docs/benchmarks/gmm_flowmaps.{md,json}
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

from flowmaps.app.evaluate import markdown_table
from flowmaps.core.metrics import wasserstein2
from flowmaps.core.sampling import sample, solve_adaptive, uniform_grid
from flowmaps.io.files import write_report
from flowmaps.run.build import load_run
from flowmaps.run.config import parse_config
from flowmaps.run.trainer import train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", default="2,16")
    p.add_argument("--methods", default="lmd,lsd")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--max-freq", type=float, default=1.0, help="model.max_freq (time-embedding frequencies)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--n", type=int, default=4000, help="test samples (W2 uses all of them, exact OT)")
    p.add_argument("--runs", default="runs/gmm_flowmaps")
    p.add_argument("--out", default="docs/benchmarks/gmm_flowmaps")
    args = p.parse_args()
    rows = []
    for dim in [int(d) for d in args.dims.split(",")]:
        data = {"kind": "gmm", "dim": dim, "components": 8, "std": 0.1, "radius": 1.0, "seed": 0}
        for method in args.methods.split(","):
            tree = {"seed": 0, "data": data, "model": {"width": args.width, "depth": args.depth,
                                                     "max_freq": args.max_freq},
                    "objective": {"method": method},
                    "train": {"steps": args.steps, "batch_size": args.batch, "lr": args.lr, "schedule": "cosine",
                              "warmup": 100, "ema": 0.999, "log_every": 500, "ckpt_every": 1000}}
            if method == "lmd":
                tree["teacher"] = {"kind": "analytic"}
            run_dir = Path(args.runs) / f"{method}_{dim}d"
            t0 = time.perf_counter()
            train(parse_config(tree), run_dir, resume=True, progress=False)
            secs = time.perf_counter() - t0
            with open(run_dir / "metrics.csv", newline="") as f:  # the run's own training time, even if resumed
                rows_csv = list(csv.DictReader(f))
            secs = float(rows_csv[-1]["elapsed_s"]) if rows_csv else secs
            run = load_run(run_dir)
            model, mix = run.model, run.source.mixture
            z = model.sigma0 * torch.randn(args.n, dim, generator=torch.Generator().manual_seed(99))
            exact = mix.flow_map(z, torch.zeros(args.n), torch.ones(args.n), sigma0=model.sigma0, rtol=1e-7, atol=1e-8)
            scale = float((exact - exact.mean(0)).pow(2).sum(1).mean().sqrt())
            ref = mix.sample(args.n, torch.Generator().manual_seed(5))
            adaptive = solve_adaptive(mix.teacher(model.interp, model.sigma0), z)
            w_teacher = wasserstein2(ref, adaptive.x, max_n=args.n)
            for k in (1, 2, 4):
                x = sample(model, z, uniform_grid(k)).x
                err = (x - exact).pow(2).sum(1).sqrt()
                w = wasserstein2(ref, x, max_n=args.n)
                rms = float(err.pow(2).mean().sqrt())
                rows.append({"dim": dim, "method": method, "N": k, "rms_err/scale": rms / scale,
                             "mean_err/scale": float(err.mean()) / scale, "scale": scale, "w2": w,
                             "w2_teacher_adaptive": w_teacher, "w2_ratio": w / w_teacher,
                             "teacher_nfe": adaptive.nfe, "train_s": secs})
            print(markdown_table(rows[-3:]), flush=True)
    cmd = (f"OMP_NUM_THREADS=1 python benchmarks/gmm_flowmaps.py --dims {args.dims} --methods {args.methods} "
           f"--steps {args.steps} --batch {args.batch} --width {args.width} --depth {args.depth} "
           f"--max-freq {args.max_freq:g} --lr {args.lr:g} --runs {args.runs} --out {args.out}")
    text = (
        "# Flow maps against the exact flow map of a Gaussian mixture\n\n"
        f"Command: `{cmd}`\n\n"
        f"8-component mixture (std 0.1, means on the unit sphere) in each dimension; MLP {args.depth}×{args.width} "
        f"(time-embedding max_freq {args.max_freq:g}), lr {args.lr:g}, batch {args.batch}, {args.steps} steps, "
        "one CPU thread (`train_s`: wall time on a shared machine). Errors of the "
        f"N-step samples against the exact `X_{{0,1}}` of the same noise ({args.n} samples), relative to the data "
        "scale; W2 (exact OT) to fresh target samples beside the analytic teacher's adaptive (dopri5) solve.\n\n"
        + markdown_table(rows))
    write_report(args.out, {"args": vars(args), "rows": rows}, text)


if __name__ == "__main__":
    main()
