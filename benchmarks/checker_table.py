"""Checkerboard table (as Table 1 of the self-distillation paper): KL(target ‖ model) at N = 1, 2, 4, 8, 16 steps for
every flow-map objective, beside its velocity teacher sampled with Euler and Heun at the same N and adaptively.

Each method trains from ``configs/checker_<method>.yaml`` (distillation methods from the teacher run given by
``--teacher``) into ``--runs/<method>`` (resumed if already there), at its recipe's steps and batch or, with
``--steps`` / ``--batch``, at one budget for all, then is sampled with the same noise draws at each N. KL on the
50×50 grid over [−1, 1]², like the paper.

    OMP_NUM_THREADS=1 python benchmarks/checker_table.py --teacher runs/checker_fm --n 64000 --runs runs/ct_recipe

Runs and their evaluations are kept under ``--runs``, so methods may be trained by several calls in parallel
(``--methods lsd,lmd …``) and the table assembled by a last call with all of them.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shlex
import time
from functools import partial
from pathlib import Path

import torch

from flowmaps.app.evaluate import evaluate
from flowmaps.core.metrics import kl_histogram
from flowmaps.io.files import write_report, write_text
from flowmaps.run.build import load_run
from flowmaps.run.config import load_config, overrides
from flowmaps.run.trainer import train

METHODS = ["lmd", "emd", "fmm", "pfmm", "lsd", "esd", "psdm", "psdu", "meanflow"]
NAMES = {"lmd": "LMD", "emd": "EMD", "fmm": "FMM", "pfmm": "PFMM", "lsd": "LSD", "esd": "ESD", "psdm": "PSD-M",
         "psdu": "PSD-U", "meanflow": "MeanFlow"}
PAPER_LSD = [0.086, 0.077, 0.071, 0.070, 0.071]


def train_method(method: str, args) -> tuple[Path, float]:
    cfg_path = Path(args.configs) / f"checker_{method}.yaml"
    over = [*([f"train.steps={args.steps}"] if args.steps else []),
            *([f"train.batch_size={args.batch}"] if args.batch else []), *args.set]
    if re.search(r"^teacher:", cfg_path.read_text(), re.M):
        over.append(f"teacher.path={args.teacher}")
    if method == "pfmm" and args.steps:
        over.append(f"objective.round_steps={max(1, args.steps // 4)}")
    cfg = load_config(cfg_path, over)
    run_dir = Path(args.runs) / method
    t0 = time.perf_counter()
    train(cfg, run_dir, resume=True, progress=False)
    wall = time.perf_counter() - t0
    with open(run_dir / "metrics.csv", newline="") as f:  # the training time of the run, even if resumed
        rows = list(csv.DictReader(f))
    return run_dir, float(rows[-1]["elapsed_s"]) if rows else wall


def cached(path: Path, compute) -> list[dict]:
    """Rows stored at ``path`` by an earlier call on the same (finished) run, else computed and stored."""
    if path.is_file():
        return json.loads(path.read_text())
    rows = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(rows))
    return rows


def net(cfg) -> str:
    """``depth×width, max_freq, lr`` of a run's MLP and optimizer, and what its recipe adds."""
    fourier = getattr(cfg.model, "fourier", 0)
    coupling = getattr(cfg.objective, "coupling", "independent")
    return (f"{cfg.model.depth}×{cfg.model.width}, {cfg.model.max_freq:g}, {cfg.train.lr:g}"
            + (f", {fourier} Fourier features" if fourier else "")
            + (f", {coupling} coupling" if coupling != "independent" else ""))


def fmt(v) -> str:
    return "" if v is None else f"{v:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="runs/checker_fm", help="flow-matching teacher run directory")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps for every method (default: each recipe's own)")
    p.add_argument("--batch", type=int, default=None, help="batch for every method (default: each recipe's own)")
    p.add_argument("--n", type=int, default=20_000, help="samples per KL (the paper: 64,000)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--configs", default="configs")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides for every method's config, e.g. model.depth=3 model.max_freq=1")
    p.add_argument("--runs", default="runs/checker_table")
    p.add_argument("--out", default="docs/benchmarks/checker_table")
    args = p.parse_args()
    steps = [1, 2, 4, 8, 16]
    teacher = load_run(args.teacher)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"args": vars(args), "threads": torch.get_num_threads(), "teacher": [], "methods": {}}
    src = teacher.source
    result["teacher_net"] = net(teacher.cfg)
    result["teacher_set"] = overrides(teacher.cfg, load_config(Path(args.configs) / "checker_fm.yaml"))
    result["floor"] = kl_histogram(src.reference(args.n, seed=1235), src.reference(args.n, seed=7), 50, src.bounds)
    result["teacher"] = cached(Path(args.runs) / f"teacher_eval_n{args.n}.json",
                               partial(evaluate, teacher.model, teacher.source, steps, args.n, seed=1234))
    for m in args.methods.split(","):
        print(f"[checker_table] {m}: training ({args.steps or 'recipe'} steps)", flush=True)
        run_dir, secs = train_method(m, args)
        run = load_run(run_dir)
        ev = cached(run_dir / f"table_eval_n{args.n}.json",
                    partial(evaluate, run.model, run.source, steps, args.n, seed=1234, solvers=("map",),
                            adaptive=False))
        result["methods"][m] = {"train_s": secs, "rows": ev, "net": net(run.cfg), "steps": run.cfg.train.steps,
                                "batch": run.cfg.train.batch_size}
        print(f"[checker_table] {m}: {secs:.0f} s, KL " + " ".join(fmt(r["kl"]) for r in ev), flush=True)
        write_report(out, result, render(result, args, steps))
    print(render(result, args, steps))


def render(result: dict, args, steps: list[int]) -> str:
    kl = {(r["solver"], r["steps"]): r for r in result["teacher"]}
    head = ("| model | MLP (depth×width, max_freq, lr) | train steps × batch | train time (s) | "
            + " | ".join(f"N={k}" for k in steps) + " |")
    lines = [head, "|" + "---|" * (len(steps) + 4)]
    for solver, label in (("euler", "teacher, Euler (NFE N)"), ("heun", "teacher, Heun (NFE 2N)")):
        lines.append(f"| {label} | {result.get('teacher_net', '')} | | | "
                     + " | ".join(fmt(kl[(solver, k)]["kl"]) for k in steps) + " |")
    ad = kl.get(("adaptive", None))
    beats = []
    for m, res in sorted(result["methods"].items(), key=lambda kv: METHODS.index(kv[0])):
        vals = [r["kl"] for r in res["rows"]]
        lines.append(f"| {NAMES[m]} | {res['net']} | {res['steps']} × {res['batch']} | {res['train_s']:.0f} | "
                     + " | ".join(fmt(v) for v in vals) + " |")
        ok = all(v < kl[("euler", k)]["kl"] for v, k in zip(vals, steps) if k <= 4)
        beats.append(f"{NAMES[m]}: {'yes' if ok else 'no'}")
    lines.append("| paper's LSD (150k steps, batch 100k) | | | | " + " | ".join(f"{v:.3f}" for v in PAPER_LSD) + " |")
    best = min(((r["kl"], m) for m, res in result["methods"].items() for r in res["rows"] if r["steps"] == 1),
               default=None)
    cmd = (f"OMP_NUM_THREADS={result['threads']} python benchmarks/checker_table.py --teacher {args.teacher}"
           + (f" --steps {args.steps}" if args.steps else "") + (f" --batch {args.batch}" if args.batch else "")
           + f" --n {args.n} --runs {args.runs} --out {args.out}"
           + (f" --methods {args.methods}" if args.methods != ",".join(METHODS) else "")
           + (f" --set {' '.join(shlex.quote(o) for o in args.set)}" if args.set else ""))
    text = ["# Checkerboard: KL(target ‖ model) of flow maps and their teacher", "",
            f"Command: `{cmd}` (teacher: `flowmaps train configs/checker_fm.yaml "
            + "".join(f"{shlex.quote(o)} " for o in result.get("teacher_set", [])) + f"--out {args.teacher}`).", "",
            f"KL(target ‖ model) on the 50×50 grid over [−1, 1]², {args.n} samples, same noise for every row. "
            "Flow maps: configs/checker_<method>.yaml"
            + (f" at {args.steps or 'its'} steps of {f'batch {args.batch}' if args.batch else 'its batch'}"
               if args.steps or args.batch
               else ", each recipe as shipped")
            + f", trained on {result['threads']} CPU thread(s) (train time measured on a shared, loaded machine). "
            "Teacher: flow matching (configs/checker_fm.yaml"
            + (", overridden as in its command" if result.get("teacher_set") else "") + ").", "",
            *lines, ""]
    if "floor" in result:
        text.append(f"Sampling noise alone: two independent {args.n}-sample target sets differ by KL "
                    f"{result['floor']:.3f} on this grid.")
    if ad is not None:
        text.append(f"Teacher, adaptive dopri5 (rtol = atol = 1e-5): KL {ad['kl']:.3f} at NFE {ad['nfe']}.")
    if best is not None:
        text.append(f"Best flow map at N = 1: {NAMES[best[1]]}, KL {best[0]:.3f} (target ≤ 0.086, the paper's LSD).")
    text.append("Beats the teacher's Euler sampler at every N ≤ 4: " + ", ".join(beats) + ".")
    return "\n".join(text) + "\n"


if __name__ == "__main__":
    main()
