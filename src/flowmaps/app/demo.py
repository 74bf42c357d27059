"""``flowmaps demo``: the embedded default on the CPU, end to end, in a few minutes.

A flow-matching teacher learns the checkerboard; two few-step models learn its sampler: a flow map distilled
from it (Lagrangian map distillation, 30 % of its training times on the steps of the 1-, 2- and 4-step samplers)
and a lines matching model trained on 150,000 of its EDM-Heun pairs at the noise levels those samplers
visit (sampling-optimized training). Every stage uses the same network, an MLP 4×256 with 32 random Fourier
features of its input. Each stage trains one run under ``OUT/<stage>`` from the recipe written below (much
shorter with ``--fast``, a smoke run) and resumes if it is there already; the students train at once, in two
processes; the whole demo takes about 4.5 minutes on 2 CPU cores. The demo then draws the same noise through
every model and writes one figure, ``OUT/samples.png`` (the target; the teacher at its full adaptive solve and at
1 and 2 Euler steps; each few-step model at N = 1, 2, 4 steps, NFE and KL in every title), the metrics table
``OUT/metrics.{md,json}`` (KL and energy distance), and prints the table with a paragraph that reads it.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from ..core.sampling import noise
from ..errors import ConfigError
from ..pairs.generate import generate_pairs
from ..run.build import Run, load_run, pair_teacher
from ..run.config import parse_config
from ..run.trainer import train
from .evaluate import markdown_table, measure, run_sampler, save_rows
from .plots import scatter_panels

CHECKER = {"kind": "toy", "name": "checker"}
NET = {"net": "mlp", "width": 256, "depth": 4, "max_freq": 16.0, "fourier": 32}  # every stage's network


def _recipe(objective: dict, steps: int, batch: int, lr: float, **sections) -> dict:
    """A demo stage's config: the shared network, RAdam with cosine decay after 100 warm-up steps."""
    return {"seed": 0, "model": NET, "objective": objective, **sections,
            "train": {"steps": steps, "batch_size": batch, "lr": lr, "schedule": "cosine", "warmup": 100,
                      "log_every": 100, "ckpt_every": 1000}}


TEACHER = _recipe({"method": "fm"}, 3500, 1024, 3e-3, data=CHECKER)
# 30 % of the times on the samplers' steps; each residual weighted as the pseudo-Huber loss (the 2-D recipe's)
LMD = _recipe({"method": "lmd", "grid_frac": 0.3, "adaptive_p": 0.5}, 3000, 512, 3e-3, data=CHECKER)
LMM = _recipe({"method": "lmm", "time": "sot", "sot_steps": [0, 1, 3, 5]}, 3300, 1024, 3e-3)  # the samplers' levels
PAIRS = 150_000
FAST = ["train.steps=150", "train.batch_size=256"]  # the smoke run
STEPS = (1, 2, 4)
EDM_GRIDS = {1: [0], 2: [0, 1], 4: [0, 1, 3, 5]}  # lines matching's samplers on EDM's σ levels
OUTPUTS = {"teacher", "lmd", "pairs", "lmm", "samples.png", "metrics.md", "metrics.json"}


def _stage(name: str, tree: dict, out: Path, fast: bool, progress: bool, device: str,
           threads: int | None = None) -> Path:
    """Train (or resume) the stage ``name`` from ``tree`` under ``out/name``; ``threads``: torch's CPU threads."""
    overrides = (FAST if fast else []) + [f"train.device={device}"] + ([f"train.threads={threads}"] if threads else [])
    cfg = parse_config(tree, overrides)
    print(f"[demo] {name}: {cfg.objective.method}, {cfg.train.steps} steps -> {out / name}", flush=True)
    return train(cfg, out / name, resume=True, progress=progress)


def _lines_matching(out: Path, fast: bool, device: str, threads: int) -> Path:
    """The teacher's EDM-Heun pairs, then the lines matching model on them."""
    torch.set_num_threads(threads)
    pairs, count = out / "pairs", 2000 if fast else PAIRS
    print(f"[demo] pairs: {count} teacher pairs (EDM Heun, 35 NFE) -> {pairs}", flush=True)
    generate_pairs(pair_teacher(out / "teacher", "edm", 18, device), count, pairs, shard_size=8192, progress=False)
    return _stage("lmm", {**LMM, "data": {"kind": "pairs", "path": str(pairs)}}, out, fast, False, device, threads)


def demo(out: Path, fast: bool = False, progress: bool = True, n: int = 20_000, device: str = "cpu") -> list[dict]:
    """Train the demo's models into ``out`` (resuming any already there) on ``device``, draw and measure them, and
    write the figure and the table. The two students train at once, in two processes sharing the teacher's
    threads (on 2 CPU cores two one-thread jobs get more done than one two-thread job after the other)."""
    if out.exists() and (not out.is_dir() or any(p.name not in OUTPUTS for p in out.iterdir())):
        raise ConfigError(f"{out}: exists and is not a demo folder (it holds other files); choose another --out")
    teacher = load_run(_stage("teacher", TEACHER, out, fast, progress, device), device=device)
    threads = max(1, torch.get_num_threads() // 2)
    print(f"[demo] the two students train at once, {threads} thread(s) each (a few minutes, no progress bars)",
          flush=True)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(_stage, "lmd", {**LMD, "teacher": {"kind": "run", "path": str(out / "teacher")}}, out,
                            fast, False, device, threads),
                pool.submit(_lines_matching, out, fast, device, threads)]
        lmd, lmm = (load_run(job.result(), device=device) for job in jobs)

    n = 4000 if fast else n
    x0 = noise(n, teacher.source.shape, teacher.model.sigma0, seed=1).to(device)
    target = teacher.source.reference(n, seed=1235)
    rows: list[dict] = []
    panels = [("target", target)]

    def draw(model: str, label: str, run: Run, solver: str, steps: int | None = None, edm_grid=None) -> None:
        s = run_sampler(run.model, x0, solver, steps, seed=1, edm_grid=edm_grid)
        s.x = s.x.cpu()
        row = {"model": model, "solver": solver, "steps": steps or len(edm_grid or []) or None, "nfe": s.nfe,
               **measure(s.x, target, teacher.source.bounds, w2=False)}
        rows.append(row)
        panels.append((f"{label}, NFE {s.nfe}\nKL {row['kl']:.3f}", s.x))

    floor = measure(teacher.source.reference(n, seed=999), target, teacher.source.bounds, w2=False)["kl"]
    draw("teacher", "teacher, adaptive solve", teacher, "adaptive")
    for k in (1, 2):
        draw("teacher", f"teacher, {k} Euler step{'s' * (k > 1)}", teacher, "euler", k)
    for k in STEPS:
        draw("lmd", f"flow map (LMD), N = {k}", lmd, "map", k)
    panels.append(("", None))
    for k in STEPS:
        draw("lmm", f"lines matching, N = {k}", lmm, "map", edm_grid=EDM_GRIDS[k])
    panels.append(("", None))
    scatter_panels(panels, out / "samples.png", teacher.source.bounds, cols=4)
    save_rows(out / "metrics", rows)
    print(markdown_table(rows, f"demo: KL(target ‖ model) on the 50×50 grid and the energy distance, {n} samples "
                               f"(two target sets differ by KL {floor:.3f})"))
    print(reading(rows, floor))
    print(f"[demo] wrote {out / 'samples.png'} and {out / 'metrics.md'}")
    return rows


def reading(rows: list[dict], floor: float) -> str:
    """One paragraph that reads the table: the teacher's cost and quality, and each few-step model's against it
    (``floor``: the KL of two target sets, the sampling noise of the metric)."""
    full = next(r for r in rows if r["model"] == "teacher" and r["solver"] == "adaptive")
    one = next(r for r in rows if r["model"] == "teacher" and r["steps"] == 1)

    def model(name: str, title: str) -> str:
        by_n = {r["steps"]: r for r in rows if r["model"] == name}
        kl = ", ".join(f"{r['kl']:.3f} with {r['nfe']} NFE" for r in by_n.values())
        return (f"The {title} reaches KL {kl}: {by_n[1]['kl'] / full['kl']:.2f}× the teacher's full solve with "
                f"{full['nfe'] / by_n[1]['nfe']:.0f}× fewer network evaluations.")

    return (f"[demo] Reading: the teacher's adaptive solve costs {full['nfe']} NFE for KL {full['kl']:.3f} "
            f"(KL compares 50×50 histograms; two target sets of this size differ by {floor:.3f}); a single "
            f"Euler step of the same teacher gives KL {one['kl']:.2f}, a blob. " + model("lmd", "flow map (LMD)") +
            " " + model("lmm", "lines matching model") + " Both learned the teacher's whole sampler, so they inherit "
            "its errors; their figure panels are drawn from the same noise as the teacher's.")
