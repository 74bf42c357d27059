"""Table 1 of the lines-matching seed: straightness of EDM, CFM / 1-RF, BOT-CFM (two batch sizes), 2-RF, LMM.

Problem and runs: see ``lmm_runs.py`` (checkerboard, EDM teacher, 50k Heun pairs, MLP 128×3, 2000 steps).
OT-CFM in the seed is CFM with the linear ("OT") conditional path; in this library that is the same objective
as 1-RF (linear path, independent coupling), so one run stands for both.

Straightness ``S = ∫₀¹ E‖(X_1 − X_0) − Ẋ_t‖² dt`` (``metrics.straightness``) of each model's own ODE in the
t ∈ [0, 1] frame, from 2,000 noise samples, RK4 with 64 steps; an LMM's ODE follows its line direction
``v(x, t, 1) = (f(x, t) − x)/(1 − t)``. Figure: per model, the velocity field at t = 0 ("initial flow"), at
t = 0.5 ("mid-step flow") and 300 trajectories.

CPU budget: about 10 minutes on one core for the training (shared with ``lmm_quality.py``), 2 minutes here.
    python benchmarks/lmm_table1.py      # writes docs/benchmarks/lmm_table1.{md,json,png}
"""

from __future__ import annotations

import torch

from lmm_runs import ROOT_DIR, ensure, threads

from flowmaps.app.evaluate import markdown_table, noise, save_rows
from flowmaps.core.metrics import straightness, trajectories
from flowmaps.app.plots import plt, save_figure

NAMES = ["EDM (teacher)", "1-RF (CFM, linear path)", "BOT-CFM B=64", "BOT-CFM B=256", "2-RF (reflow on pairs)",
         "LMM"]
SEED_TABLE = {"EDM (teacher)": 0.0397, "1-RF (CFM, linear path)": "0.043 (1-RF) / 0.0417 (OT-CFM)",
              "BOT-CFM B=64": 0.030, "BOT-CFM B=256": 0.030, "2-RF (reflow on pairs)": 0.00135, "LMM": 0.00183}


def main() -> None:
    threads()
    runs = ensure(NAMES)
    out = ROOT_DIR / "docs" / "benchmarks"
    rows = []
    fig, axes = plt.subplots(len(NAMES), 3, figsize=(9, 3 * len(NAMES)), squeeze=False)
    lim = 2.0
    g = torch.linspace(-lim, lim, 21)
    gx, gy = torch.meshgrid(g, g, indexing="xy")
    grid_pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    for r, name in enumerate(NAMES):
        model = runs[name].model

        def vel(x, t, m=model):
            with torch.no_grad():
                return m.velocity(x, t)

        x0 = noise(model, 2000, (2,), seed=7)
        s = straightness(vel, x0, steps=64)
        rows.append({"model": name, "straightness": s, "seed (Table 1)": SEED_TABLE[name]})
        print(f"{name}: S = {s:.5f}", flush=True)
        for c, t in enumerate((0.0, 0.5)):
            v = vel(grid_pts, torch.full((len(grid_pts),), t))
            ax = axes[r, c]
            ax.quiver(grid_pts[:, 0], grid_pts[:, 1], v[:, 0], v[:, 1], angles="xy", color="C0", width=0.004)
            ax.set_title(f"{name}\n{'initial' if t == 0 else 'mid-step'} flow (t = {t})", fontsize=8)
        traj = trajectories(vel, x0[:300], steps=50)
        ax = axes[r, 2]
        ax.plot(traj[:, :, 0], traj[:, :, 1], color="C1", lw=0.4, alpha=0.6)
        ax.scatter(traj[0, :, 0], traj[0, :, 1], s=2, color="C0")
        ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=2, color="C3")
        ax.set_title(f"trajectories, S = {s:.4f}", fontsize=8)
        for ax in axes[r]:
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    save_figure(fig, out / "lmm_table1.png")
    save_rows(out / "lmm_table1", rows)
    edm = rows[0]["straightness"]
    lmm = rows[-1]["straightness"]
    print(markdown_table(rows, "Straightness on the checkerboard (t-frame, lower is straighter)"))
    print(f"EDM / LMM straightness ratio: {edm / lmm:.1f}x")


if __name__ == "__main__":
    main()
