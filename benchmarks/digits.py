"""Digits benchmark: few-step models against their 35-NFE teacher on scikit-learn's 8×8 digits, one command.

    OMP_NUM_THREADS=1 python benchmarks/digits.py            # full scale, ≤ 45 min on one CPU core
    OMP_NUM_THREADS=1 python benchmarks/digits.py --scale 0.5 --pairs 4000   # a shorter run

Teacher: EDM (``configs/digits_edm.yaml``), sampled with EDM's Heun sampler, 18 steps = 35 NFE; its pairs
(``flowmaps pairs``, same sampler) train lines matching with the L2 loss (``digits_lmm.yaml``) and with the
adversarial loss switched on for the last 30% of the steps (``digits_lmm_adv.yaml``). Self-distillation (LSD)
runs when the objective ``lsd`` is registered (``configs/digits_fm.yaml`` with ``objective.method=lsd``) and is
skipped with a message otherwise. Every model samples the same 2,000 noise draws; LMM at N = 1, 2, 4 on EDM's
σ-grid subsets (indices 0 | 0,1 | 0,1,3,5), along the line (deterministic) and consistency-style (fresh noise).

Metric: Fréchet distance of the digits classifier's 64-d features (``flowmaps.digits_classifier``) against the
held-out split (360 images never trained on). Noise floor: the training split against the held-out split.
Writes ``docs/benchmarks/digits.{md,json,png}``; runs are cached under ``runs/bench_digits`` (rerunning resumes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT_DIR / "src"))

from flowmaps.config import load_config  # noqa: E402
from flowmaps.evaluate import markdown_table, noise, save_rows  # noqa: E402
from flowmaps.metrics.frechet import feature_extractor, frechet_distance  # noqa: E402
from flowmaps.objectives import registry  # noqa: E402
from flowmaps.pairs import generate_pairs, run_teacher  # noqa: E402
from flowmaps.plots import image_panels  # noqa: E402
from flowmaps.runs import load_run  # noqa: E402
from flowmaps.sampling import edm_subset_grid, sample, solve_edm, start_state, uniform_grid  # noqa: E402
from flowmaps.train import train  # noqa: E402

GRIDS = {1: (0,), 2: (0, 1), 4: (0, 1, 3, 5)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0, help="multiply every run's training steps (default 1)")
    p.add_argument("--pairs", type=int, default=8000, help="teacher pairs for lines matching (default 8000)")
    p.add_argument("--n", type=int, default=2000, help="samples per model for the Fréchet distance")
    p.add_argument("--root", default=str(ROOT_DIR / "runs" / "bench_digits"), help="run cache")
    p.add_argument("--out", default=str(ROOT_DIR / "docs" / "benchmarks" / "digits"), help="output stem")
    args = p.parse_args()
    torch.set_num_threads(1)
    root, clock = Path(args.root), {}

    def steps(cfg_name: str) -> int:
        return max(1, int(round(load_config(ROOT_DIR / "configs" / f"{cfg_name}.yaml").train.steps * args.scale)))

    def fit(name: str, cfg_name: str, over: list[str]) -> None:
        start = time.time()
        cfg = load_config(ROOT_DIR / "configs" / f"{cfg_name}.yaml", over + [f"train.steps={steps(cfg_name)}"])
        print(f"[digits] {name}: {cfg.objective}, {cfg.train.steps} steps", flush=True)
        train(cfg, root / name, resume=True, progress=False)
        clock[name] = time.time() - start

    fit("teacher", "digits_edm", [])
    start = time.time()
    pairs = root / "pairs"
    generate_pairs(run_teacher(root / "teacher", "edm", 18), args.pairs, pairs, seed=0, shard_size=4096,
                   batch_size=1024, progress=False)
    clock["pairs"] = time.time() - start
    fit("lmm", "digits_lmm", [f"data.path={pairs}"])
    adv_start = int(0.7 * steps("digits_lmm_adv"))
    fit("lmm_adv", "digits_lmm_adv", [f"data.path={pairs}", f"objective.adv_start={adv_start}"])
    has_lsd = "lsd" in registry()
    if has_lsd:
        fit("lsd", "digits_fm", ["objective={method: lsd}"])
    else:
        print("[digits] LSD skipped: the objective 'lsd' is not registered in this version", flush=True)

    start = time.time()
    teacher = load_run(root / "teacher")
    held = teacher.source.heldout
    ext = feature_extractor("digits")
    ref_feats = ext(held)["features"]
    x0 = noise(teacher.model, args.n, teacher.source.shape, seed=1234)
    rows, panels = [], [("held-out data", held)]

    def add(model: str, sampler: str, grid: str, x: torch.Tensor, nfe: int, panel: bool = False) -> None:
        rows.append({"model": model, "sampler": sampler, "grid": grid, "nfe": nfe,
                     "fd_digits": frechet_distance(ext(x)["features"], ref_feats)})
        print(rows[-1], flush=True)
        if panel:
            panels.append((f"{model}\n{sampler}, NFE {nfe}", x))

    train_x = teacher.source.sample(len(teacher.source.heldout) * 4)["x1"]  # draws of the training split
    add("data: training split", "-", "-", train_x, 0)
    add("EDM (teacher)", "EDM Heun", "18 steps", solve_edm(teacher.velocity(), x0, teacher.model.sigma0, 18).x, 35,
        panel=True)
    teacher_fd = rows[-1]["fd_digits"]
    for k in (1, 2, 4):
        s = sample(teacher.model, x0, uniform_grid(k), solver="euler")
        add("EDM (teacher)", "euler", f"uniform {k}", s.x, s.nfe)
    for name, title in (("lmm", "LMM (L2)"), ("lmm_adv", "LMM + adversarial")):
        m = load_run(root / name).model
        for solver, label in (("map", "line"), ("renoise", "fresh noise")):
            for k, idx in GRIDS.items():
                grid = edm_subset_grid(idx, m.sigma0)
                torch.manual_seed(0)
                s = sample(m, start_state(m, x0, grid), grid, solver=solver)
                add(title, label, f"EDM σ idx {','.join(map(str, idx))}", s.x, s.nfe, panel=solver == "map" and k < 4)
    if has_lsd:
        m = load_run(root / "lsd").model
        for k in (1, 2, 4):
            s = sample(m, x0, uniform_grid(k), solver="map")
            add("LSD", "map", f"uniform {k}", s.x, s.nfe, panel=k < 4)
    for r in rows:
        r["fd / teacher"] = r["fd_digits"] / teacher_fd
    clock["eval"] = time.time() - start

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_rows(out, rows)
    image_panels(panels, out.with_suffix(".png"))
    verdicts = []
    for name in ("LMM (L2)", "LMM + adversarial"):
        best2 = min((r for r in rows if r["model"] == name and r["nfe"] == 2), key=lambda r: r["fd_digits"])
        verdicts.append(f"{name} N=2: best FD {best2['fd_digits']:.3f} = {best2['fd / teacher']:.2f}x the teacher's "
                        f"{teacher_fd:.3f} ({best2['sampler']}); target <= 1.1x: "
                        f"{'met' if best2['fd / teacher'] <= 1.1 else 'NOT met'}")
    best_adv = min((r for r in rows if r["model"] == "LMM + adversarial"), key=lambda r: r["fd_digits"])
    verdicts.append(f"LMM + adversarial below the teacher: best FD {best_adv['fd_digits']:.3f} "
                    f"(NFE {best_adv['nfe']}, {best_adv['sampler']}) vs {teacher_fd:.3f}: "
                    f"{'met' if best_adv['fd_digits'] < teacher_fd else 'NOT met'}")
    if not has_lsd:
        verdicts.append("LSD: skipped (objective 'lsd' not registered)")
    meta = {"scale": args.scale, "pairs": args.pairs, "n": args.n, "seconds": {k: round(v) for k, v in clock.items()},
            "total_minutes": round(sum(clock.values()) / 60, 1), "verdicts": verdicts}
    (out.parent / f"{out.name}_meta.json").write_text(json.dumps(meta, indent=1))
    print(markdown_table(rows, f"Digits 8×8, {args.n} samples, FD (digits classifier) vs held-out"))
    print("\n".join(verdicts))
    print(f"wall clock per stage (s): {meta['seconds']}, total {meta['total_minutes']} min")


if __name__ == "__main__":
    main()
