"""Lines matching's training-time law: where the 1-step endpoint error comes from, per law.

Exact EDM-Heun pairs of a 2-D Gaussian mixture (the analytic velocity through EDM's 18-level Heun sampler,
35 NFE), an LMM (MLP 128×3) trained on them with each time law at the same budget, then the endpoint error
``|f(I_t, t) − x1|`` (RMS over 4,000 fresh pairs, relative to the data's scale) at the samplers' start σ = 80
(where every EDM-grid sampler begins), at σ = 1 (mid-line) and σ = 0.1, and the samplers' W2 at 1 and 2 steps
(EDM σ indices 0 | 0,1) against the mixture.

    OMP_NUM_THREADS=1 python benchmarks/lmm_time_law.py          # writes docs/benchmarks/lmm_time_law.{md,json}
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

import flowmaps
from flowmaps.app.evaluate import markdown_table, run_sampler, save_rows
from flowmaps.core.metrics import wasserstein2
from flowmaps.core.paths import sigma_to_t
from flowmaps.core.sampling import noise, solve_edm
from flowmaps.core.teachers import GaussianMixture
from flowmaps.pairs.generate import PairTeacher, generate_pairs

ROOT = Path(__file__).resolve().parents[1]
DATA = {"kind": "gmm", "dim": 2, "components": 8, "std": 0.1, "radius": 1.0, "seed": 0}
LAWS = ["lognormal", "uniform", "karras"]


def pairs(root: Path, n: int) -> Path:
    mix = GaussianMixture.random(2, 8, 0.1, 1.0, 0)
    sigma0 = mix.std()
    teacher = mix.teacher(sigma0=sigma0)

    def phi(z, label=None):
        s = solve_edm(lambda x, t: teacher(x, t), z, sigma0, 18)
        return s.x, s.nfe

    store = root / "pairs"
    generate_pairs(PairTeacher(phi, {"kind": "analytic", "data": DATA}, sigma0, (2,)), n, store, solver="edm",
                   steps=18, shard_size=16384, progress=False)
    return store


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--pairs", type=int, default=50_000)
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "lmm_time_law"))
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lmm_time_law_"))
    try:
        store = pairs(work, args.pairs)
        rows = []
        for law in LAWS:
            cfg = flowmaps.config({"seed": 0, "data": {"kind": "pairs", "path": str(store)},
                                   "model": {"net": "mlp", "width": 128, "depth": 3},
                                   "objective": {"method": "lmm", "time": law},
                                   "train": {"steps": args.steps, "batch_size": 512, "lr": 2e-3, "schedule": "cosine",
                                             "warmup": 100, "log_every": 500, "ckpt_every": args.steps}})
            t0 = time.perf_counter()
            run = flowmaps.train(cfg, work / law, progress=False)
            seconds = time.perf_counter() - t0
            model, src = run.model, run.source
            z, x1 = src.store.pairs(torch.randint(len(src.store), (4000,), generator=torch.Generator().manual_seed(7)))
            scale = float((x1 - x1.mean(0)).pow(2).sum(1).mean().sqrt())
            row = {"time law": law, "train_s": seconds}
            for sigma in (80.0, 1.0, 0.1):
                t = torch.full((len(z),), float(sigma_to_t(sigma, model.sigma0)))
                x_t = model.interp(z, x1, t)
                with torch.no_grad():
                    err = (model.endpoint(x_t, t) - x1).pow(2).sum(1).mean().sqrt()
                row[f"err σ={sigma:g}"] = float(err) / scale
            ref = src.reference(4000, seed=11)
            x0 = noise(4000, (2,), model.sigma0, 3)
            for idx in ([0], [0, 1]):
                s = run_sampler(model, x0, "map", edm_grid=idx)
                row[f"W2 NFE {s.nfe}"] = wasserstein2(ref, s.x)
            rows.append(row)
            print(row, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    save_rows(args.out, rows)
    print(markdown_table(rows, f"LMM time laws, {args.steps} steps, {args.pairs} exact EDM-Heun pairs"))


if __name__ == "__main__":
    main()
