"""Digits benchmark: few-step models against their 35-NFE teacher on scikit-learn's 8×8 digits, one command.

    OMP_NUM_THREADS=1 python benchmarks/digits.py            # full scale, ≤ 45 min on one CPU core
    OMP_NUM_THREADS=1 python benchmarks/digits.py --scale 0.5 --pairs 4000   # a shorter run

Teacher: EDM (``configs/digits_edm.yaml``), sampled with EDM's Heun sampler, 18 steps = 35 NFE; its pairs
(``flowmaps pairs``, same sampler) train lines matching with the L2 loss (``digits_lmm.yaml``) and with the
adversarial loss switched on for the last 30% of the steps (``digits_lmm_adv.yaml``), and self-distillation
(LSD: ``configs/digits_fm.yaml`` with ``objective={method: lsd}``). Every model samples the same 2,000 noise
draws per seed (3 seeds: mean and std); LMM at N = 1, 2, 4 on EDM's σ-grid subsets (indices 0 | 0,1 | 0,1,3,5),
along the line (deterministic) and consistency-style (fresh noise).

Metric: Fréchet distance of the digits classifier's 64-d features (``flowmaps.core.metrics.digits``) against the
held-out split (359 images never trained on). Noise floor: the training split against the held-out split.
Writes ``docs/benchmarks/digits.{md,json,png}``; runs are cached under ``runs/bench_digits`` (rerunning resumes).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from flowmaps.app.evaluate import markdown_table, run_sampler, save_rows
from flowmaps.app.plots import image_panels
from flowmaps.core.metrics.frechet import feature_extractor, frechet_distance
from flowmaps.core.sampling import noise
from flowmaps.io.files import write_text
from flowmaps.pairs.generate import generate_pairs
from flowmaps.run.build import load_run, pair_teacher
from flowmaps.run.config import load_config
from flowmaps.run.trainer import train

ROOT_DIR = Path(__file__).resolve().parents[1]
GRIDS = {1: (0,), 2: (0, 1), 4: (0, 1, 3, 5)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0, help="multiply every run's training steps (default 1)")
    p.add_argument("--pairs", type=int, default=8000, help="teacher pairs for lines matching (default 8000)")
    p.add_argument("--n", type=int, default=2000, help="samples per model for the Fréchet distance")
    p.add_argument("--seeds", type=int, default=3, help="independent noise seeds per model (mean and std)")
    p.add_argument("--root", default=str(ROOT_DIR / "runs" / "bench_digits"), help="run cache")
    p.add_argument("--out", default=str(ROOT_DIR / "docs" / "benchmarks" / "digits"), help="output stem")
    args = p.parse_args()
    torch.set_num_threads(1)
    root, clock = Path(args.root), {}

    def steps(cfg_name: str) -> int:
        return max(1, round(load_config(ROOT_DIR / "configs" / f"{cfg_name}.yaml").train.steps * args.scale))

    def fit(name: str, cfg_name: str, over: list[str]) -> None:
        start = time.time()
        cfg = load_config(ROOT_DIR / "configs" / f"{cfg_name}.yaml", over + [f"train.steps={steps(cfg_name)}"])
        print(f"[digits] {name}: {cfg.objective}, {cfg.train.steps} steps", flush=True)
        train(cfg, root / name, resume=True, progress=False)
        clock[name] = time.time() - start

    fit("teacher", "digits_edm", [])
    start = time.time()
    pairs = root / "pairs"
    generate_pairs(pair_teacher(root / "teacher", "edm", 18), args.pairs, pairs, seed=0, solver="edm", steps=18,
                   shard_size=4096, batch_size=1024, progress=False)
    clock["pairs"] = time.time() - start
    fit("lmm", "digits_lmm", [f"data.path={pairs}"])
    adv_start = int(0.7 * steps("digits_lmm_adv"))
    fit("lmm_adv", "digits_lmm_adv", [f"data.path={pairs}", f"objective.adv_start={adv_start}"])
    fit("lsd", "digits_fm", ["objective={method: lsd}", "model.max_freq=1"])  # JVP losses need a smooth embedding

    start = time.time()
    teacher = load_run(root / "teacher")
    held = teacher.source.heldout
    ext = feature_extractor("digits")
    ref_feats = ext(held)["features"]
    models = {name: load_run(root / name).model for name in ("lmm", "lmm_adv", "lsd")}
    fds: dict[tuple, list[float]] = {}
    panels = [("held-out data", held)]

    def add(key: tuple, x: torch.Tensor, first: bool, panel: bool = False) -> None:
        fds.setdefault(key, []).append(frechet_distance(ext(x)["features"], ref_feats))
        print(key, f"FD {fds[key][-1]:.3f}", flush=True)
        if panel and first:
            panels.append((f"{key[0]}\n{key[1]}, NFE {key[3]}", x))

    for k in range(args.seeds):  # independent noise (and training-split draws) per seed
        first = k == 0
        torch.manual_seed(k)
        x0 = noise(args.n, teacher.source.shape, teacher.model.sigma0, seed=1234 + k)
        add(("data: training split", "-", "-", 0), teacher.source.sample(4 * len(held))["x1"], first)
        x = run_sampler(teacher.model, x0, "edm", 18).x
        add(("EDM (teacher)", "EDM Heun", "18 steps", 35), x, first, panel=True)
        for n_steps in (1, 2, 4):
            s = run_sampler(teacher.model, x0, "euler", n_steps)
            add(("EDM (teacher)", "euler", f"uniform {n_steps}", s.nfe), s.x, first)
        for name, title in (("lmm", "LMM (L2)"), ("lmm_adv", "LMM + adversarial")):
            m = models[name]
            for solver, label in (("map", "line"), ("renoise", "fresh noise")):
                for n_steps, idx in GRIDS.items():
                    s = run_sampler(m, x0, solver, seed=1234 + k, edm_grid=list(idx))
                    add((title, label, f"EDM σ idx {','.join(map(str, idx))}", s.nfe), s.x, first,
                        panel=solver == "map" and n_steps < 4)
        for n_steps in (1, 2, 4):
            s = run_sampler(models["lsd"], x0, "map", n_steps)
            add(("LSD", "map", f"uniform {n_steps}", s.nfe), s.x, first, panel=n_steps < 4)
    teacher_fd = float(np.mean(fds[("EDM (teacher)", "EDM Heun", "18 steps", 35)]))
    rows = [{"model": key[0], "sampler": key[1], "grid": key[2], "nfe": key[3], "fd_digits": float(np.mean(v)),
             "fd_std": float(np.std(v, ddof=1)) if len(v) > 1 else None, "fd / teacher": float(np.mean(v)) / teacher_fd}
            for key, v in fds.items()]
    clock["eval"] = time.time() - start

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_rows(out, rows)
    image_panels(panels, out.with_suffix(".png"))
    verdicts = []
    for name in ("LMM (L2)", "LMM + adversarial"):
        best2 = min((r for r in rows if r["model"] == name and r["nfe"] == 2), key=lambda r: r["fd_digits"])
        line2 = next(r for r in rows if r["model"] == name and r["nfe"] == 2 and r["sampler"] == "line")
        verdicts.append(f"{name} N=2: best FD {best2['fd_digits']:.3f} = {best2['fd / teacher']:.2f}x the teacher's "
                        f"{teacher_fd:.3f} ({best2['sampler']}; line sampler {line2['fd / teacher']:.2f}x); "
                        f"target <= 1.1x: {'met' if best2['fd / teacher'] <= 1.1 else 'NOT met'}")
    best_adv = min((r for r in rows if r["model"] == "LMM + adversarial"), key=lambda r: r["fd_digits"])
    verdicts.append(f"LMM + adversarial below the teacher: best FD {best_adv['fd_digits']:.3f} "
                    f"(NFE {best_adv['nfe']}, {best_adv['sampler']}) vs {teacher_fd:.3f}: "
                    f"{'met' if best_adv['fd_digits'] < teacher_fd else 'NOT met'}")
    meta_path = out.parent / f"{out.name}_meta.json"
    prev = json.loads(meta_path.read_text()).get("seconds", {}) if meta_path.is_file() else {}
    for k in clock:  # a stage found finished in the cache keeps the time it took when it ran
        if clock[k] < 10 and k != "eval" and k in prev:
            clock[k] = prev[k]
    meta = {"scale": args.scale, "pairs": args.pairs, "n": args.n, "seeds": args.seeds,
            "seconds": {k: round(v) for k, v in clock.items()}, "total_minutes": round(sum(clock.values()) / 60, 1),
            "verdicts": verdicts}
    write_text(meta_path, json.dumps(meta, indent=1))
    print(markdown_table(rows, f"Digits 8×8, {args.n} samples × {args.seeds} noise seeds, FD (digits classifier)"))
    print("\n".join(verdicts))
    print(f"wall clock per stage (s): {meta['seconds']}, total {meta['total_minutes']} min")


if __name__ == "__main__":
    main()
