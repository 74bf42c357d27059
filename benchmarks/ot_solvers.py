"""The two exact minibatch-OT solvers side by side: POT's network simplex (``ot.emd``) and scipy's Hungarian algorithm
(``linear_sum_assignment``), on the squared-distance cost of a batch of n data points against n noise points ``σ0 ε``
(σ0 the data's std, as the recipes draw them), per data set and batch size n; the two are timed alternately on the
same cost matrices (median of the repeats) and must agree on the optimal cost.
``flowmaps.core.couplings.ot_permutation`` uses the network simplex (the Hungarian algorithm only for the rare plan
that is not a permutation); this table says where the other would be faster.
CPU budget: about a minute on one core.

    OMP_NUM_THREADS=1 python benchmarks/ot_solvers.py     # writes docs/benchmarks/ot_solvers.{md,json}
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import ot
import torch
from scipy.optimize import linear_sum_assignment

from flowmaps.app.evaluate import markdown_table
from flowmaps.data import build_source
from flowmaps.io.files import write_report
from heldout import SETS as HELDOUT

ROOT_DIR = Path(__file__).resolve().parents[1]
SETS = {"checker": {"kind": "toy", "name": "checker"}, **HELDOUT}  # the recipes' own set and the held-out family


def timed(solve, cost: np.ndarray) -> tuple[float, float]:
    """Seconds to solve ``cost`` and the plan's total cost."""
    t = time.perf_counter()
    cols = solve(cost)
    return time.perf_counter() - t, float(cost[np.arange(len(cost)), cols].sum())


def simplex(cost: np.ndarray) -> np.ndarray:
    n = len(cost)
    return ot.emd(ot.unif(n), ot.unif(n), cost).argmax(1)


def hungarian(cost: np.ndarray) -> np.ndarray:
    return linear_sum_assignment(cost)[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="128,256,512,1024")
    p.add_argument("--sets", default="checker,rings,wave,clusters,gmm8d,gmm32d", help=f"of {', '.join(SETS)}")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(ROOT_DIR / "docs" / "benchmarks" / "ot_solvers"))
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    for name in args.sets.split(","):
        if name not in SETS:
            raise SystemExit(f"unknown set {name!r}; choose from {', '.join(SETS)}")
    rows = []
    for name in args.sets.split(","):
        source = build_source(SETS[name])
        for n in map(int, args.sizes.split(",")):
            times: dict = {"simplex": [], "hungarian": []}
            for _ in range(args.repeats):
                x1 = source.sample(n)["x1"]
                x0 = source.sigma_data * torch.randn(x1.shape, generator=g)
                cost = torch.cdist(x0.double(), x1.double()).pow(2).numpy()
                (ts, cs), (th, ch) = timed(simplex, cost), timed(hungarian, cost)
                if abs(cs - ch) > 1e-9 * abs(ch):
                    raise SystemExit(f"{name}, n={n}: the solvers disagree on the optimal cost ({cs} vs {ch})")
                times["simplex"].append(ts)
                times["hungarian"].append(th)
            s, h = statistics.median(times["simplex"]), statistics.median(times["hungarian"])
            rows.append({"data": name, "n": n, "simplex ms": 1e3 * s, "Hungarian ms": 1e3 * h,
                         "simplex / Hungarian": s / h})
            print(rows[-1], flush=True)
    text = "\n".join([
        "# Exact minibatch OT: network simplex against the Hungarian algorithm", "",
        f"Command: `OMP_NUM_THREADS=1 python benchmarks/ot_solvers.py --sizes {args.sizes} --sets {args.sets} "
        f"--repeats {args.repeats}`", "",
        "Median milliseconds per plan of n data points against n noise points of the data's std, the two solvers "
        "alternately on the same cost matrices, one thread; `ot_permutation` uses the simplex.", "",
        markdown_table(rows)])
    write_report(args.out, rows, text)


if __name__ == "__main__":
    main()
