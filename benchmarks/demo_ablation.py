"""How the demo's students got to their 1-step KL: each change to their recipes, one at a time, on the demo's
teacher, measured exactly as ``flowmaps demo`` measures (the same 20,000 noise draws and target samples).

Rows (``flowmaps.app.demo``'s recipes with overrides; single training runs):

- LMD: the earlier recipe (2,600 steps, (s, t) uniform on the triangle); + 30 % of the times starting on the 1-,
  2- and 4-step samplers' grid points (``objective.grid_frac=0.3``); + 3,000 steps (the demo's); and the demo's
  LMD with the 2-D recipe's trajectory term drawn from a bank of 32,768 teacher trajectories (not the demo's);
- LMM: the earlier recipe (3,000 steps, karras σ, 50,000 pairs); + sampling-optimized training on the samplers'
  levels (``objective.time=sot``, EDM σ indices 0, 1, 3, 5); on 150,000 pairs; + 3,300 steps (the demo's); and
  the demo's LMM on pairs from the teacher's adaptive solve instead of EDM Heun at 35 NFE (the 2-D recipe's
  pairs; at the demo's 3,300 steps they do not help N = 1, so the demo keeps EDM Heun).

    flowmaps demo --out runs/demo          # the teacher (or: bash scripts/demo.sh)
    OMP_NUM_THREADS=1 python benchmarks/demo_ablation.py --demo runs/demo   # writes docs/benchmarks/demo_ablation.*
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
from pathlib import Path

import torch

from flowmaps.app import demo as D
from flowmaps.app.evaluate import markdown_table, measure, run_sampler
from flowmaps.core.sampling import noise
from flowmaps.pairs.generate import generate_pairs
from flowmaps.run.build import load_run, pair_teacher
from flowmaps.run.config import parse_config
from flowmaps.run.trainer import train

ROOT_DIR = Path(__file__).resolve().parents[1]
SOT = ["objective.time=sot", "objective.sot_steps=[0, 1, 3, 5]"]
ROWS = {  # run name: (stage, row, pairs, overrides of the demo's recipe, the pairs' solver)
    "lmd_earlier": ("lmd", "earlier recipe (2,600 steps)", 0, ["objective.grid_frac=0", "train.steps=2600"], ""),
    "lmd_grid": ("lmd", "+ grid_frac 0.3", 0, ["train.steps=2600"], ""),
    "lmd_demo": ("lmd", "+ 3,000 steps (the demo)", 0, [], ""),
    "lmd_traj": ("lmd", "+ the trajectory term from a bank of 32,768 (not the demo's)", 0,
                 ["objective.traj_frac=0.125", "objective.traj_substeps=2", "objective.traj_bank=32768"], ""),
    "lmm_earlier": ("lmm", "earlier recipe (karras σ, 50,000 EDM-Heun pairs, 3,000 steps)", 50_000,
                    ["objective.time=karras", "train.steps=3000"], "edm"),
    "lmm_sot": ("lmm", "+ SOT", 50_000, ["train.steps=3000"], "edm"),
    "lmm_sot_150k": ("lmm", "+ 150,000 pairs", 150_000, ["train.steps=3000"], "edm"),
    "lmm_demo": ("lmm", "+ 3,300 steps (the demo)", 150_000, [], "edm"),
    "lmm_adaptive": ("lmm", "pairs from the adaptive solve (not the demo's)", 150_000, [], "adaptive"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo", default="runs/demo", help="a demo folder whose teacher is trained")
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--n", type=int, default=20_000, help="samples per KL (the demo's)")
    p.add_argument("--smoke", action="store_true", help="the demo's --fast sizes (a test of this script)")
    p.add_argument("--root", default="runs/demo_ablation")
    p.add_argument("--out", default=str(ROOT_DIR / "docs" / "benchmarks" / "demo_ablation"))
    args = p.parse_args()
    teacher_dir, root = Path(args.demo) / "teacher", Path(args.root)
    teacher = load_run(teacher_dir)
    args.n = 2000 if args.smoke else args.n
    x0 = noise(args.n, teacher.source.shape, teacher.model.sigma0, seed=1)
    target = teacher.source.reference(args.n, seed=1235)
    full = run_sampler(teacher.model, x0, "adaptive", None, seed=1)
    rows = [{"model": "teacher", "recipe": "adaptive solve", "nfe": full.nfe,
             "kl": measure(full.x, target, teacher.source.bounds, w2=False)["kl"]}]
    for name in args.rows.split(","):
        stage, label, n_pairs, overrides, solver = ROWS[name]
        if args.smoke:
            n_pairs, overrides = n_pairs // 75, overrides + D.FAST
        if stage == "lmd":
            tree = {**D.LMD, "teacher": {"kind": "run", "path": str(teacher_dir)}}
        else:
            pairs = root / ("pairs_" + ("" if solver == "edm" else f"{solver}_") + str(n_pairs))
            generate_pairs(pair_teacher(teacher_dir, solver, 18), n_pairs, pairs, shard_size=8192, progress=False)
            tree = {**D.LMM, "data": {"kind": "pairs", "path": str(pairs)}}
        cfg = parse_config(copy.deepcopy(tree), overrides)
        run = load_run(train(cfg, root / name, resume=True, progress=False))
        with open(root / name / "metrics.csv", newline="") as f:  # the run's training time, even if resumed
            secs = float(list(csv.DictReader(f))[-1]["elapsed_s"])
        row = {"model": stage, "recipe": label, "train_s (1 thread)": round(secs)}
        for k in D.STEPS:
            spec = {"edm_grid": D.EDM_GRIDS[k]} if stage == "lmm" else {}
            s = run_sampler(run.model, x0, "map", None if spec else k, seed=1, **spec)
            row[f"N={k}"] = measure(s.x, target, teacher.source.bounds, w2=False)["kl"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "threads": torch.get_num_threads(),
                                                    "rows": rows}, indent=1))
    table = markdown_table(rows, f"The demo's students, one change at a time: KL(target ‖ model), {args.n} samples "
                                 f"(`OMP_NUM_THREADS=1 python benchmarks/demo_ablation.py --demo {args.demo}`)")
    out.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
