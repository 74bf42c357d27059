"""How heavy-tailed a distilled flow map's Lagrangian residuals are, and where in (s, t) the tail sits.

For a flow-map run and its teacher b: ``s < t`` uniform on the triangle, ``x_s`` on the run's interpolant between
noise and the run's data, and per sample ``L = mean |∂_t X_{s,t}(x_s) − b(X_{s,t}(x_s), t)|²`` (the LMD loss of
one sample). Reported: mean and median of L, the share of the summed loss carried by the largest 1 % and 0.1 %
of the samples, and the deciles of s and t over that 1 %. A loss whose few largest terms carry much of the sum
has a gradient made by those few samples: the case for a robust weight (``adaptive_p``, docs/flowmaps.md).

    OMP_NUM_THREADS=1 python benchmarks/residual_tails.py --run runs/h2_wave/wave/lmd \
        --out docs/benchmarks/residual_tails_wave
"""

from __future__ import annotations

import argparse
import shlex
import sys

import torch

from flowmaps.app.evaluate import markdown_table
from flowmaps.core.objectives.mapbase import lagrangian_loss
from flowmaps.io.files import write_report
from flowmaps.run.build import load_run


def deciles(v: torch.Tensor) -> list[float]:
    return [round(float(v.quantile(p)), 3) for p in (0.1, 0.5, 0.9)]


def tails(run_dir: str, teacher_dir: str, n: int, seed: int) -> dict:
    run, trun = load_run(run_dir), load_run(teacher_dir)
    m, b = run.model, trun.model.velocity
    gen = torch.Generator().manual_seed(seed)
    x1 = run.source.reference(n, seed=seed)
    x0 = m.sigma0 * torch.randn(x1.shape, generator=gen)
    s, t = torch.rand(n, generator=gen, dtype=torch.float64), torch.rand(n, generator=gen, dtype=torch.float64)
    s, t = torch.minimum(s, t).to(x1.dtype), torch.maximum(s, t).to(x1.dtype)
    with torch.no_grad():
        loss = lagrangian_loss(m, m.interp(x0, x1, s), s, t, b)
    ranked = loss.sort(descending=True).values
    top = loss >= ranked[n // 100 - 1]
    return {"run": run_dir, "n": n, "mean": float(loss.mean()), "median": float(loss.median()),
            "top 1 % share": float(ranked[: n // 100].sum() / ranked.sum()),
            "top 0.1 % share": float(ranked[: n // 1000].sum() / ranked.sum()),
            "top 1 %: s deciles 1/5/9": deciles(s[top]), "top 1 %: t deciles 1/5/9": deciles(t[top])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", nargs="+", required=True, help="flow-map runs (each against its config's teacher)")
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", required=True, help="path stem of the .md / .json table")
    args = ap.parse_args()
    rows = []
    for r in args.run:
        teacher = getattr(load_run(r).cfg.teacher, "path", None)
        if not teacher:
            raise SystemExit(f"{r} names no teacher run")
        rows.append(tails(r, teacher, args.n, args.seed))
    cmd = "OMP_NUM_THREADS=1 python " + shlex.join(["benchmarks/residual_tails.py", *sys.argv[1:]])
    text = (f"# Lagrangian residuals of distilled flow maps: how heavy the tail\n\nCommand: `{cmd}`\n\n"
            f"{args.n} samples per run, s < t uniform on the triangle, x_s on the run's interpolant; per sample the "
            "mean square of ∂_t X_{s,t}(x_s) − b(X_{s,t}(x_s), t) against the run's teacher b.\n\n"
            + markdown_table(rows))
    write_report(args.out, rows, text)
    print(text)


if __name__ == "__main__":
    main()
