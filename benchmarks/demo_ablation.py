"""How the demo's students got to their 1-step KL: each change to their recipes, one at a time, on the demo's
teacher, measured exactly as ``flowmaps demo`` measures (the same 20,000 noise draws and target samples).

Rows (``flowmaps.app.demo``'s recipes with overrides; single training runs, or mean ± std over ``--seeds``):

- LMD: the earlier recipe (2,600 steps, (s, t) uniform on the triangle, the plain square); + 30 % of the times
  starting on the 1-, 2- and 4-step samplers' grid points (``objective.grid_frac=0.3``); + 3,000 steps; that LMD
  with the 2-D recipe's trajectory term drawn from a bank of 32,768 teacher trajectories (not the demo's); + the
  2-D recipe's pseudo-Huber weight on the Lagrangian residual (``objective.adaptive_p: 0.5``: the demo's);
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
import statistics
from pathlib import Path

import torch

from flowmaps.app import demo as D
from flowmaps.app.evaluate import markdown_table, measure, run_sampler
from flowmaps.core.sampling import noise
from flowmaps.io.files import write_report
from flowmaps.pairs.generate import generate_pairs
from flowmaps.run.build import load_run, pair_teacher
from flowmaps.run.config import parse_config
from flowmaps.run.trainer import train

ROOT_DIR = Path(__file__).resolve().parents[1]
OUT = ROOT_DIR / "docs" / "benchmarks" / "demo_ablation"
SOT = ["objective.time=sot", "objective.sot_steps=[0, 1, 3, 5]"]
PLAIN = ["objective.adaptive_p=0"]  # the plain square: the demo's LMD before its pseudo-Huber weight
ROWS = {  # run name: (stage, row, pairs, overrides of the demo's recipe, the pairs' solver)
    "lmd_earlier": ("lmd", "earlier recipe (2,600 steps)", 0, ["objective.grid_frac=0", "train.steps=2600", *PLAIN],
                    ""),
    "lmd_grid": ("lmd", "+ grid_frac 0.3", 0, ["train.steps=2600", *PLAIN], ""),
    "lmd_demo": ("lmd", "+ 3,000 steps", 0, PLAIN, ""),
    "lmd_traj": ("lmd", "+ the trajectory term from a bank of 32,768 (not the demo's)", 0,
                 ["objective.traj_frac=0.125", "objective.traj_substeps=2", "objective.traj_bank=32768", *PLAIN], ""),
    "lmd_huber": ("lmd", "+ the pseudo-Huber weight on the Lagrangian residual (the demo)", 0, [], ""),
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
    p.add_argument("--seeds", default="0", help="the students' training seeds (the demo's: 0); with several, each "
                   "row is mean ± std over them")
    p.add_argument("--smoke", action="store_true", help="the demo's --fast sizes (a test of this script)")
    p.add_argument("--root", default="runs/demo_ablation")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    teacher_dir, root = Path(args.demo) / "teacher", Path(args.root)
    teacher = load_run(teacher_dir)
    args.n = 2000 if args.smoke else args.n
    x0 = noise(args.n, teacher.source.shape, teacher.model.sigma0, seed=1)
    target = teacher.source.reference(args.n, seed=1235)
    full = run_sampler(teacher.model, x0, "adaptive", None, seed=1)
    rows = [{"model": "teacher", "recipe": "adaptive solve", "nfe": full.nfe,
             "kl": measure(full.x, target, teacher.source.bounds, w2=False)["kl"]}]
    seeds = [int(v) for v in args.seeds.split(",")]
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
        secs, kl = [], {k: [] for k in D.STEPS}
        for seed in seeds:
            run_dir = root / (name if seed == 0 else f"{name}_s{seed}")  # seed 0: the demo's
            cfg = parse_config(copy.deepcopy(tree), overrides + [f"seed={seed}"])
            run = load_run(train(cfg, run_dir, resume=True, progress=False))
            with open(run_dir / "metrics.csv", newline="") as f:  # the run's training time, even if resumed
                secs.append(float(list(csv.DictReader(f))[-1]["elapsed_s"]))
            for k in D.STEPS:
                spec = {"edm_grid": D.EDM_GRIDS[k]} if stage == "lmm" else {}
                s = run_sampler(run.model, x0, "map", None if spec else k, seed=1, **spec)
                kl[k].append(measure(s.x, target, teacher.source.bounds, w2=False)["kl"])
        row = {"model": stage, "recipe": label, "train_s (1 thread)": round(statistics.mean(secs))}
        for k, v in kl.items():
            row[f"N={k}"] = v[0] if len(v) == 1 else f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}"
        rows.append(row | ({"seeds": {f"N={k}": v for k, v in kl.items()}} if len(seeds) > 1 else {}))
        print(json.dumps(rows[-1]), flush=True)
    command = (f"OMP_NUM_THREADS=1 python benchmarks/demo_ablation.py --demo {args.demo}"
               + (f" --rows {args.rows}" if args.rows != ",".join(ROWS) else "")
               + (f" --seeds {args.seeds}" if args.seeds != "0" else "")
               + (f" --out {args.out}" if Path(args.out) != Path(OUT) else ""))
    table = markdown_table([{k: v for k, v in r.items() if k != "seeds"} for r in rows],
                           f"The demo's students, one change at a time: KL(target ‖ model), {args.n} samples "
                           f"(`{command}`)")
    write_report(args.out, {"args": vars(args), "threads": torch.get_num_threads(), "rows": rows}, table + "\n")
    print(table)


if __name__ == "__main__":
    main()
