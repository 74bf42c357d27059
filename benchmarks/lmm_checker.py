"""Lines matching on the checkerboard: the shared runs, the straightness table and the quality per NFE.

One script with three subcommands (the straightness table is Table 1 of *Generative Lines Matching Models*,
Matityahu and Fattal):

    python benchmarks/lmm_checker.py runs       # train (or resume) every run, cached under runs/bench_lmm/
    python benchmarks/lmm_checker.py table1     # writes docs/benchmarks/lmm_table1.{md,json,png}
    python benchmarks/lmm_checker.py quality    # writes docs/benchmarks/lmm_quality.{md,json}

``table1`` and ``quality`` first train (or resume) the runs they need, so either may be run alone. Options,
after the subcommand: ``--root`` (the run cache), ``--steps`` (training steps per run, default 2,000),
``--pairs`` (teacher pairs, default 50,000), ``--out`` (the folder of the tables, default docs/benchmarks);
smaller ``--steps``/``--pairs`` only to smoke-test the script.

**Runs.** Problem: the checkerboard (uniform on the 8 squares ``(ix + iy) % 2 == 0`` of a 4×4 grid on
[−1, 1]²), base ``N(0, σ0² I)`` with σ0 = the data's std. Teacher: EDM (``configs/checker_edm.yaml``), pairs from
its Heun sampler (18 steps, 35 NFE). Every model is an MLP 128×3 trained 2,000 steps of batch 512 (RAdam,
cosine, EMA; the recipes are the ``configs/checker_*.yaml`` files with ``train.steps`` shortened to fit a CPU
budget of about 10 minutes on one shared core). 1-RF is CFM on the data with the independent coupling and the
straight path (σ = 0, which is also I-CFM's path at σ = 0); 2-RF is reflow of 1-RF on 1-RF's *own* pairs (its
ODE solved by dopri5 from the same noise seeds); OT-CFM is minibatch exact OT with a Gaussian path of width
σ = 0.1 (``configs/checker_otcfm.yaml``, as Tong et al. train it) at the training batch of 512; BOT-CFM is batch
OT at σ = 0 (Pooladian et al.) at B = 64 and 256 (its OT batch is its training batch). Rerunning skips what is
finished (runs resume, the pair stores resume).

**table1.** Straightness of EDM, 1-RF, OT-CFM, BOT-CFM (two batch sizes), 2-RF, LMM. Straightness
``S = ∫₀¹ E‖(X_1 − X_0) − Ẋ_t‖² dt`` (``flowmaps.core.metrics.straightness``) of each model's own ODE in the t ∈ [0,
1] frame, from 2,000 noise samples, RK4 with 64 steps; an LMM's ODE follows its line direction ``v(x, t, 1) = (f(x,
t) − x)/(1 − t)``. Figure: per model, the velocity field at t = 0 ("initial flow"), at t = 0.5 ("mid-step flow") and
300 trajectories. CPU budget: the shared training, then 2 minutes.

**quality.** LMM at N = 1, 2 (deterministic line and consistency-style samplers) beside its EDM teacher at
35 NFE and the baselines (1-RF, BOT-CFM, 2-RF) at N = 1, 2, 4. KL(target ‖ model) on the 50×50 histogram over
[−1, 1]² with 64,000 samples (``--n``; noise floor: two independent target sets, reported as "target vs
target"), W2 (exact OT, first 4,000 samples) and the energy distance. LMM grids: subsets of EDM's 18-step σ
grid (indices 0 and 0,1, started from ``α_{t_0} z``) and the constant-speed grids (uniform in t from 0).
Baselines: Euler on uniform grids. Targets: LMM N = 2 within 1.1× and N = 1 within 1.2× of the
teacher's 35-NFE KL. CPU budget: the shared training, then 3 minutes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from matplotlib.figure import Figure

from flowmaps.app.evaluate import markdown_table, measure, run_sampler, save_rows
from flowmaps.app.plots import save_figure
from flowmaps.core.metrics import straightness, trajectories
from flowmaps.core.sampling import constant_speed_grid, noise
from flowmaps.pairs.generate import generate_pairs
from flowmaps.run.build import Run, load_run, pair_teacher
from flowmaps.run.config import load_config
from flowmaps.run.trainer import train

ROOT_DIR = Path(__file__).resolve().parents[1]
TEACHER = "EDM (teacher)"
RF1, RF2 = "1-RF (CFM)", "2-RF (reflow of 1-RF on its own pairs)"
PAIRS_OF = {RF2: (RF1, "adaptive", 1, "pairs_rf1")}  # a pair-trained run whose pairs are not the teacher's


# Table 1 at the paper's small scale: the EDM teacher and the lines matching models on the 128×3 MLP of the
# baselines (checker_rf1/otcfm/botcfm), where the shipped recipes use the flow-matching teacher's network
SMALL = ["model.width=128", "model.depth=3", "model.max_freq=1000", "model.fourier=0", "train.lr=2e-3",
         "train.batch_size=512"]


def recipes(steps: int) -> dict[str, tuple[str, list[str]]]:
    """name -> (config, overrides); pair-trained runs read the teacher's pair store."""
    return {
        TEACHER: ("checker_edm", SMALL),
        RF1: ("checker_rf1", []),
        "OT-CFM (σ = 0.1)": ("checker_otcfm", []),
        "BOT-CFM B=64": ("checker_botcfm", ["train.batch_size=64"]),
        "BOT-CFM B=256": ("checker_botcfm", ["train.batch_size=256"]),
        RF2: ("checker_rf2", []),
        "LMM": ("checker_lmm", SMALL + ["objective.time=karras"]),
        "LMM + adversarial": ("checker_lmm_adv", SMALL + [f"objective.adv_start={int(0.7 * steps)}"]),
        "LMM + SOT (idx 0,1)": ("checker_lmm", SMALL + ["objective.time=sot", "objective.sot_steps=[0,1]"]),
    }


def run_dir(root: Path, name: str) -> Path:
    return root / "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def ensure(names: list[str], args, progress: bool = False) -> dict[str, Run]:
    """Train (or resume) the named runs (and the runs whose pairs they train on), making each pair store first."""
    root, runs = Path(args.root), recipes(args.steps)
    order = [TEACHER] + [PAIRS_OF[n][0] for n in names if n in PAIRS_OF] + names
    out = {}
    for name in dict.fromkeys(order):
        cfg_name, over = runs[name]
        over = over + [f"train.steps={args.steps}"]
        cfg = load_config(ROOT_DIR / "configs" / f"{cfg_name}.yaml", over)
        if cfg.data.kind == "pairs":
            source, solver, steps, folder = PAIRS_OF.get(name, (TEACHER, "edm", 18, "pairs"))
            pairs = root / folder
            generate_pairs(pair_teacher(run_dir(root, source), solver, steps), args.pairs, pairs, seed=0,
                           solver=solver, steps=steps, shard_size=16_384, batch_size=8192, progress=progress)
            cfg = load_config(ROOT_DIR / "configs" / f"{cfg_name}.yaml", over + [f"data.path={pairs}"])
        print(f"[bench] {name}: {cfg.objective}, {cfg.train.steps} steps", flush=True)
        train(cfg, run_dir(root, name), resume=True, progress=progress)
        if name in names:
            out[name] = load_run(run_dir(root, name))
    return out


# ----- runs ----------------------------------------------------------------------------------------------------


def cmd_runs(args) -> None:
    ensure(list(recipes(args.steps)), args, progress=True)


# ----- table1: straightness --------------------------------------------------------------------------------------

TABLE1 = [TEACHER, RF1, "OT-CFM (σ = 0.1)", "BOT-CFM B=64", "BOT-CFM B=256", RF2, "LMM"]
PAPER_TABLE = {TEACHER: 0.0397, RF1: 0.043, "OT-CFM (σ = 0.1)": 0.0417, "BOT-CFM B=64": 0.030, "BOT-CFM B=256": 0.030,
               RF2: 0.00135, "LMM": 0.00183}


def cmd_table1(args) -> None:
    runs = ensure(TABLE1, args)
    out = Path(args.out)
    rows = []
    fig = Figure(figsize=(9, 3 * len(TABLE1)))
    axes = fig.subplots(len(TABLE1), 3, squeeze=False)
    lim = 2.0
    g = torch.linspace(-lim, lim, 21)
    gx, gy = torch.meshgrid(g, g, indexing="xy")
    grid_pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    for r, name in enumerate(TABLE1):
        model = runs[name].model
        vel = torch.no_grad()(model.velocity)  # the ODE velocity b(x, t), no gradients
        x0 = noise(2000, (2,), model.sigma0, seed=7)
        s = straightness(vel, x0, steps=64)
        rows.append({"model": name, "straightness": s, "paper (Table 1)": PAPER_TABLE[name]})
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


# ----- quality: KL per NFE ---------------------------------------------------------------------------------------

BASELINES = [RF1, "OT-CFM (σ = 0.1)", "BOT-CFM B=64", "BOT-CFM B=256", RF2]
LMMS = ["LMM", "LMM + adversarial", "LMM + SOT (idx 0,1)"]  # SOT: trained only at the 2-step sampler's times


def cmd_quality(args) -> None:
    runs = ensure([TEACHER] + BASELINES + LMMS, args)
    teacher = runs[TEACHER]
    src = teacher.source
    ref = src.reference(args.n, seed=1235)
    x0 = noise(args.n, (2,), teacher.model.sigma0, seed=1234)
    rows = []

    def add(model: str, sampler: str, grid: str, x: torch.Tensor, nfe: int) -> None:
        rows.append({"model": model, "sampler": sampler, "grid": grid, "nfe": nfe, **measure(x, ref, src.bounds)})
        print(rows[-1], flush=True)

    add("target vs target (noise floor)", "-", "-", src.reference(args.n, seed=999), 0)
    s = run_sampler(teacher.model, x0, "edm", 18)
    add(TEACHER, "EDM Heun", "18 steps", s.x, s.nfe)
    teacher_kl = rows[-1]["kl"]
    for name in BASELINES:
        for k in (1, 2, 4):
            s = run_sampler(runs[name].model, x0, "euler", k)
            add(name, "euler", f"uniform {k}", s.x, s.nfe)
    for name in LMMS:
        m = runs[name].model
        for solver, label in (("map", "line (deterministic)"), ("renoise", "consistency (fresh noise)")):
            for idx in ((0,), (0, 1)):
                s = run_sampler(m, x0, solver, edm_grid=list(idx))
                add(name, label, f"EDM σ idx {','.join(map(str, idx))}", s.x, s.nfe)
            for k in (1, 2):
                s = run_sampler(m, x0, solver, grid=constant_speed_grid(k))
                add(name, label, f"constant speed {k}", s.x, s.nfe)
    for r in rows:
        r["kl / teacher"] = r["kl"] / teacher_kl
    save_rows(Path(args.out) / "lmm_quality", rows)
    print(markdown_table(rows, f"Checkerboard, {args.n // 1000}k samples: KL(target ‖ model), W2, energy"))
    for name in LMMS:
        for nfe, bound in ((1, 1.2), (2, 1.1)):
            best = min((r for r in rows if r["model"] == name and r["nfe"] == nfe and r["grid"].startswith("EDM")),
                       key=lambda r: r["kl"])
            print(f"{name} N={nfe}: best EDM-grid KL {best['kl']:.4f} = {best['kl / teacher']:.2f}x teacher "
                  f"(target <= {bound}x, {best['sampler']})")


COMMANDS = {"runs": cmd_runs, "table1": cmd_table1, "quality": cmd_quality}


def main() -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=str(ROOT_DIR / "runs" / "bench_lmm"), help="run cache")
    common.add_argument("--steps", type=int, default=2000, help="training steps per run")
    common.add_argument("--pairs", type=int, default=50_000, help="teacher pairs for the pair-trained runs")
    common.add_argument("--out", default=str(ROOT_DIR / "docs" / "benchmarks"), help="folder of the tables")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("runs", parents=[common], help="train (or resume) every run")
    sub.add_parser("table1", parents=[common], help="straightness table and figure")
    q = sub.add_parser("quality", parents=[common], help="KL, W2 and energy per NFE")
    q.add_argument("--n", type=int, default=64_000, help="samples per row")
    args = p.parse_args()
    torch.set_num_threads(1)
    COMMANDS[args.command](args)


if __name__ == "__main__":
    main()
