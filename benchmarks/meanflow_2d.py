"""MeanFlow as its paper trains it (adaptive loss weight p = 1, c = 10⁻³; logit-normal times) against the earlier
MeanFlow (no weight, (s, t) uniform on the triangle), and each change alone, on the 2-D benchmarks at N = 1, 2.

Every variant trains ``configs/checker_meanflow.yaml`` (MLP 3×256, batch 512, the same steps) on the checkerboard
and on the 8-component Gaussian mixture (``data={kind: gmm}``), for each seed; KL(target ‖ model) on the 50×50
grid and W2 are measured with the same noise for every row.

    OMP_NUM_THREADS=1 python benchmarks/meanflow_2d.py --steps 4000 --seeds 0,1 --ablation-seeds 0

Runs and their evaluations are kept under ``--runs`` (a rerun resumes them), so variants may be trained by
several calls in parallel (``--variants``) and the table written by a last call with all of them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from flowmaps.app.evaluate import evaluate
from flowmaps.io.files import write_report, write_text
from flowmaps.run.build import load_run
from flowmaps.run.config import load_config
from flowmaps.run.trainer import train

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "earlier": ["objective.adaptive_p=0", "objective.time=uniform"],
    "adaptive": ["objective.adaptive_p=1", "objective.time=uniform"],
    "logitnormal": ["objective.adaptive_p=0", "objective.time=logit_normal"],
    "paper": ["objective.adaptive_p=1", "objective.time=logit_normal"],
}
LABELS = {"earlier": "earlier (no weight, uniform times; the default)", "adaptive": "adaptive weight only",
          "logitnormal": "logit-normal times only", "paper": "the paper's (adaptive weight and logit-normal times)"}
DATA = {"checker": [], "gmm": ["data={kind: gmm}"]}
STEPS = [1, 2]


def run_one(data: str, variant: str, seed: int, args) -> dict:
    name = f"{data}-{variant}-s{seed}"
    run_dir = Path(args.runs) / name
    over = DATA[data] + VARIANTS[variant] + [f"seed={seed}", f"train.steps={args.steps}", "train.device=cpu"]
    cfg = load_config(ROOT / "configs" / "checker_meanflow.yaml", over)
    t0 = time.perf_counter()
    train(cfg, run_dir, resume=True, progress=False)
    cache = run_dir / f"eval_n{args.n}.json"
    if cache.is_file():
        rows = json.loads(cache.read_text())
    else:
        run = load_run(run_dir)
        rows = evaluate(run.model, run.source, STEPS, args.n, seed=1234, solvers=("map",), adaptive=False)
        write_text(cache, json.dumps(rows))
    print(f"[meanflow_2d] {name}: {time.perf_counter() - t0:.0f} s, KL "
          + " ".join(f"{r['kl']:.3f}" for r in rows), flush=True)
    return {"data": data, "variant": variant, "seed": seed, "rows": rows}


def render(results: list[dict], args) -> str:
    cmd = (f"OMP_NUM_THREADS=1 python benchmarks/meanflow_2d.py --steps {args.steps} --seeds {args.seeds} "
           f"--ablation-seeds {args.ablation_seeds} --n {args.n} --runs {args.runs}")
    lines = ["# MeanFlow on the 2-D benchmarks: the paper's training against the earlier one", "",
             f"Command: `{cmd}`.", "",
             f"`configs/checker_meanflow.yaml` (MLP 3×256, max_freq 1, batch 512, 75% of each batch on the diagonal) "
             f"trained {args.steps} steps per run, one CPU thread; KL(target ‖ model) on the 50×50 grid and W2 "
             f"(4,000 samples) of {args.n} samples of the EMA at N = 1 and 2 steps of its own map, the same noise "
             "for every row; mean over the seeds (each seed's values in brackets).", ""]
    for data in DATA:
        lines += [f"**{data}**", "", "| variant | KL N=1 | KL N=2 | W2 N=1 | W2 N=2 |", "|---|---|---|---|---|"]
        for variant in VARIANTS:
            runs = [r for r in results if r["data"] == data and r["variant"] == variant]
            if not runs:
                continue
            cells = []
            for metric in ("kl", "w2"):
                for k in STEPS:
                    vals = [next(x[metric] for x in r["rows"] if x["steps"] == k) for r in runs]
                    each = ", ".join(f"{v:.3f}" for v in vals)
                    cells.append(f"{statistics.mean(vals):.3f} ({each})" if len(vals) > 1 else f"{vals[0]:.3f}")
            lines.append(f"| {LABELS[variant]} | " + " | ".join(cells) + " |")
        lines.append("")
        kl = {v: {k: statistics.mean(next(x["kl"] for x in r["rows"] if x["steps"] == k) for r in results
                                     if r["data"] == data and r["variant"] == v) for k in STEPS}
              for v in ("earlier", "paper") if any(r["variant"] == v and r["data"] == data for r in results)}
        if len(kl) == 2:
            ok = all(kl["paper"][k] <= kl["earlier"][k] for k in STEPS)
            lines += [f"The paper's training no worse than the earlier one at N = 1 and 2 (mean KL): "
                      f"{'yes' if ok else 'no'} ("
                      + ", ".join(f"N={k}: {kl['paper'][k]:.3f} vs {kl['earlier'][k]:.3f}" for k in STEPS) + ").",
                      ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--seeds", default="0,1", help="seeds of the earlier and the paper's variant")
    p.add_argument("--ablation-seeds", default="0", help="seeds of the variants with one change")
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    p.add_argument("--data", default=",".join(DATA))
    p.add_argument("--runs", default="runs/meanflow_2d")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "meanflow_2d"))
    args = p.parse_args()
    results = [run_one(d, v, int(s), args) for d in args.data.split(",") for v in args.variants.split(",")
               for s in (args.seeds if v in ("earlier", "paper") else args.ablation_seeds).split(",")]
    out = Path(args.out)
    write_report(out, {"args": vars(args), "results": results}, render(results, args))
    print(render(results, args))


if __name__ == "__main__":
    main()
