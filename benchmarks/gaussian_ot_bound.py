"""Appendix A.2 of the lines-matching seed: minibatch OT between two standard Gaussians in dimension d.

Source and target are both ``N(0, I_d)``, so the optimal velocity is 0. BOT-CFM pairs each batch of B
noise samples x0 with B targets x1 by exact OT (a permutation, Hungarian algorithm) and regresses
``x1 − x0``; at t = 0 the regressed velocity is ``v(x0) = E[x1 | x0] − x0``. By isotropy
``E[x1 | x0] ≈ ρ x0`` with ``ρ = E⟨x0, x1⟩ / E|x0|²`` (least squares over all pairs), so the mean squared
regressed velocity per coordinate is ``E|v|²/d = (1 − ρ)² E|x0|²/d``.

The bound of *Generative Lines Matching Models (Matityahu and Fattal)* (its Eqs. 17–20): for unit Gaussians the
normalized dot product ``⟨x0, x1⟩/d`` is
``N(0, 1/d)``; even pairing x0 with the best of B candidates gives ``E⟨x0, x1⟩/d ≤ sqrt(2 ln B / d)``
(Jensen on the moment generating function), hence ``ρ ≤ sqrt(2 ln B / d)`` and
``E|v|²/d ≥ (1 − min(1, sqrt(2 ln B / d)))²``: v vanishes only when B grows like ``e^{d/2}``.

Grid: d = 2, 4, …, 256 and B = 64 … 4096 with ≥ 4,096 pairs per cell. B = 16,384 is left out (listed
with its bound only): one exact assignment (scipy's Hungarian solver) takes 1–2 s at B = 2048 and 10–30 s at
B = 4096 on a CPU core and grows about like B³, so one 16k batch costs tens of minutes and a 2 GB cost matrix.
CPU budget: about 8 minutes on one core.
    python benchmarks/gaussian_ot_bound.py   # writes docs/benchmarks/gaussian_ot_bound.{md,json,png}
    python benchmarks/gaussian_ot_bound.py --dims 2,16 --batches 64,256 --out /tmp/g   # a smoke test
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from matplotlib.figure import Figure

from flowmaps.app.evaluate import markdown_table, save_rows
from flowmaps.app.plots import save_figure
from flowmaps.core.couplings import ot_permutation

ROOT_DIR = Path(__file__).resolve().parents[1]
DIMS = [2, 4, 8, 16, 32, 64, 128, 256]
BATCHES = [64, 256, 1024, 2048, 4096, 16384]
MAX_B = 4096  # exact OT above this is too slow on a CPU (see the docstring)
PAIRS = 4096


def bound(d: int, b: int) -> float:
    """The paper's lower bound on ``E|v|²/d`` at t = 0: ``(1 − min(1, sqrt(2 ln B / d)))²``."""
    return (1 - min(1.0, math.sqrt(2 * math.log(b) / d))) ** 2


def measure(d: int, b: int, gen: torch.Generator) -> dict:
    dot = sq = cost = 0.0
    n = 0
    for _ in range(max(1, PAIRS // b)):
        x0 = torch.randn(b, d, generator=gen, dtype=torch.float64)
        x1 = torch.randn(b, d, generator=gen, dtype=torch.float64)
        x1 = x1[ot_permutation(x0, x1)]
        dot += float((x0 * x1).sum())
        sq += float((x0 * x0).sum())
        cost += float((x1 - x0).pow(2).sum())
        n += b
    rho = dot / sq
    return {"d": d, "B": b, "rho": rho, "rho_bound": math.sqrt(2 * math.log(b) / d),
            "v2_per_dim": (1 - rho) ** 2 * sq / (n * d), "v2_bound": bound(d, b), "pair_cost_per_dim": cost / (n * d)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", default=",".join(map(str, DIMS)), help="dimensions d")
    p.add_argument("--batches", default=",".join(map(str, BATCHES)), help="OT batch sizes B")
    p.add_argument("--out", default=str(ROOT_DIR / "docs" / "benchmarks" / "gaussian_ot_bound"), help="output stem")
    args = p.parse_args()
    dims, batches = [int(v) for v in args.dims.split(",")], [int(v) for v in args.batches.split(",")]
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for d in dims:
        for b in batches:
            if b > MAX_B:
                rows.append({"d": d, "B": b, "rho": None, "rho_bound": math.sqrt(2 * math.log(b) / d),
                             "v2_per_dim": None, "v2_bound": bound(d, b), "pair_cost_per_dim": None,
                             "note": "not run: exact OT too slow on CPU"})
                continue
            t = time.perf_counter()
            rows.append({**measure(d, b, gen), "note": f"{time.perf_counter() - t:.1f} s"})
            print(rows[-1], flush=True)
    out = Path(args.out)
    save_rows(out, rows)
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for i, b in enumerate(batches):
        r = [x for x in rows if x["B"] == b]
        meas = [(x["d"], x["v2_per_dim"]) for x in r if x["v2_per_dim"] is not None]
        if meas:
            axes[0].plot(*zip(*meas), "o-", color=f"C{i}", label=f"B={b} measured")
        axes[0].plot([x["d"] for x in r], [x["v2_bound"] for x in r], "--", color=f"C{i}", label=f"B={b} bound")
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("dimension d")
    axes[0].set_ylabel("E|v(x0)|²/d at t = 0 (optimum 0)")
    axes[0].legend(fontsize=6, ncol=2)
    for i, d in enumerate(dims):
        r = [x for x in rows if x["d"] == d and x["rho"] is not None]
        axes[1].plot([x["B"] for x in r], [x["rho"] for x in r], "o-", color=f"C{i % 10}", label=f"d={d}")
        axes[1].plot([x["B"] for x in r], [min(1, x["rho_bound"]) for x in r], ":", color=f"C{i % 10}")
    axes[1].set_xscale("log", base=2)
    axes[1].set_xlabel("OT batch size B")
    axes[1].set_ylabel("ρ = E⟨x0,x1⟩/E|x0|² (dotted: bound sqrt(2 ln B/d))")
    axes[1].legend(fontsize=6)
    save_figure(fig, out.with_suffix(".png"))
    print(markdown_table(rows, "Gaussian → Gaussian, minibatch OT: regressed velocity at t = 0"))


if __name__ == "__main__":
    main()
