"""Quality per NFE on the checkerboard: LMM at N = 1, 2 (deterministic line and consistency-style samplers)
beside its EDM teacher at 35 NFE and the baselines (1-RF, BOT-CFM, 2-RF) at N = 1, 2, 4.

KL(target ‖ model) on the 50×50 histogram over [−1, 1]² with 64,000 samples (noise floor: two independent
target sets, reported as "target vs target"), W2 (exact OT, first 4,000 samples) and the energy distance.
LMM grids: subsets of EDM's 18-step σ grid (indices 0 and 0,1, started from ``α_{t_0} z``) and the
constant-speed grids (uniform in t from 0). Baselines: Euler on uniform grids. Runs: ``lmm_runs.py``.
Targets (the issue's): LMM N = 2 within 1.1× and N = 1 within 1.2× of the teacher's 35-NFE KL.

CPU budget: the shared training (about 10 minutes on one core, see ``lmm_runs.py``), then 3 minutes here.
    python benchmarks/lmm_quality.py     # writes docs/benchmarks/lmm_quality.{md,json}
"""

from __future__ import annotations

import torch

from lmm_runs import ROOT_DIR, ensure, threads

from flowmaps.app.evaluate import markdown_table, measure, noise, save_rows
from flowmaps.core.sampling import constant_speed_grid, edm_subset_grid, sample, solve_edm, start_state, uniform_grid

N = 64_000
BASELINES = ["1-RF (CFM, linear path)", "BOT-CFM B=64", "BOT-CFM B=256", "2-RF (reflow on pairs)"]
LMMS = ["LMM", "LMM + adversarial", "LMM + SOT (idx 0,1)"]  # SOT: trained only at the 2-step sampler's times


def main() -> None:
    threads()
    runs = ensure(["EDM (teacher)"] + BASELINES + LMMS)
    teacher = runs["EDM (teacher)"]
    src = teacher.source
    ref = src.reference(N, seed=1235)
    x0 = noise(teacher.model, N, (2,), seed=1234)
    rows = []

    def add(model: str, sampler: str, grid: str, x: torch.Tensor, nfe: int) -> None:
        rows.append({"model": model, "sampler": sampler, "grid": grid, "nfe": nfe, **measure(x, ref, src.bounds)})
        print(rows[-1], flush=True)

    add("target vs target (noise floor)", "-", "-", src.reference(N, seed=999), 0)
    s = solve_edm(teacher.velocity(), x0, teacher.model.sigma0, 18)
    add("EDM (teacher)", "EDM Heun", "18 steps", s.x, s.nfe)
    teacher_kl = rows[-1]["kl"]
    for name in BASELINES:
        for k in (1, 2, 4):
            s = sample(runs[name].model, x0, uniform_grid(k), solver="euler")
            add(name, "euler", f"uniform {k}", s.x, s.nfe)
    for name in LMMS:
        m = runs[name].model
        for solver, label in (("map", "line (deterministic)"), ("renoise", "consistency (fresh noise)")):
            for idx in ((0,), (0, 1)):
                grid = edm_subset_grid(idx, m.sigma0)
                torch.manual_seed(0)
                s = sample(m, start_state(m, x0, grid), grid, solver=solver)
                add(name, label, f"EDM σ idx {','.join(map(str, idx))}", s.x, s.nfe)
            for k in (1, 2):
                torch.manual_seed(0)
                s = sample(m, x0, constant_speed_grid(k), solver=solver)
                add(name, label, f"constant speed {k}", s.x, s.nfe)
    for r in rows:
        r["kl / teacher"] = r["kl"] / teacher_kl
    out = ROOT_DIR / "docs" / "benchmarks"
    save_rows(out / "lmm_quality", rows)
    print(markdown_table(rows, "Checkerboard, 64k samples: KL(target ‖ model), W2, energy"))
    for name in LMMS:
        for nfe, bound in ((1, 1.2), (2, 1.1)):
            best = min((r for r in rows if r["model"] == name and r["nfe"] == nfe and r["grid"].startswith("EDM")),
                       key=lambda r: r["kl"])
            print(f"{name} N={nfe}: best EDM-grid KL {best['kl']:.4f} = {best['kl / teacher']:.2f}x teacher "
                  f"(target <= {bound}x, {best['sampler']})")


if __name__ == "__main__":
    main()
