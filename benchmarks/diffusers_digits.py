"""Distill a diffusers model: a class-conditional digits teacher trained with diffusers' own idiom (UNet2DModel +
DDPMScheduler, ε-prediction, label dropout), then 1- and 2-step students of it made with flowmaps, guided and
unguided. One command (needs the diffusers extra):

    OMP_NUM_THREADS=1 python benchmarks/diffusers_digits.py                 # every stage, then the table
    OMP_NUM_THREADS=1 python benchmarks/diffusers_digits.py --stage teacher # or one stage (two at once on 2 cores):
    OMP_NUM_THREADS=1 python benchmarks/diffusers_digits.py --stage 0 & OMP_NUM_THREADS=1 python … --stage 1

Teacher: ``UNet2DModel`` (8×8, channels 32/64, 11 class embeddings: 10 digits and the null class ∅ at index 10,
used for 10% of the training labels) under a 1,000-step linear-β ``DDPMScheduler``, trained on the digits'
training split with diffusers' loop (``add_noise``, MSE on ε, AdamW, ``EMAModel``) and written with
``DDPMPipeline.save_pretrained``. flowmaps reads the folder as a t-frame teacher (``b = x̂1 − ε̂``, σ0 = 1;
its largest timestep gives the first time t0 of every solve) and, for each guidance scale w ∈ {0, ``--w``}:

- ``flowmaps pairs FOLDER --null-class --guidance w`` (EDM Heun from σ(t0), 18 steps = 35 NFE per velocity; a
  guided velocity costs two network passes) → lines matching, L2 (``configs/digits_lmm.yaml``, class-conditional);
- flow-map distillation LMD (``configs/digits_fm.yaml`` with ``objective: lmd``, ``teacher: {kind: diffusers,
  null_class: true, guidance: w}``, times on [t0, 1]).

Metric: Fréchet distance of the digits classifier's features against the 359 held-out digits, ``--n`` samples
(every class equally often) per row, mean ± std over ``--seeds`` noise seeds; the teacher at 35 NFE is the
reference of each w. Writes ``docs/benchmarks/diffusers_digits.{md,json}``; runs are cached under
``runs/bench_diffusers_digits`` (rerunning resumes and skips finished stages).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from flowmaps.app.evaluate import markdown_table, run_sampler
from flowmaps.core.metrics.frechet import feature_extractor, frechet_distance
from flowmaps.core.sampling import class_labels, noise
from flowmaps.data.images import load_digits, split
from flowmaps.io.files import write_report, write_text
from flowmaps.pairs.generate import generate_pairs
from flowmaps.run.build import load_run, open_teacher, pair_teacher
from flowmaps.run.config import load_config
from flowmaps.run.trainer import train

ROOT_DIR = Path(__file__).resolve().parents[1]
CLASSES, NULL = 10, 10
TARGETS = {1: 1.3, 2: 1.15}  # student FD / teacher FD at N steps


def train_teacher(folder: Path, steps: int, batch: int = 128, p_uncond: float = 0.1, seed: int = 0) -> None:
    """diffusers' training idiom on the digits' training split (the held-out 20% never seen)."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    torch.manual_seed(seed)
    x, labels = load_digits()
    train_idx, _ = split(len(x), 0.2, 0)
    x, labels = x[train_idx], labels[train_idx]
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(32, 64), layers_per_block=1,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8, num_class_embeds=CLASSES + 1)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon")
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3, weight_decay=0.0)
    lr = get_cosine_schedule_with_warmup(opt, num_warmup_steps=min(100, steps // 10), num_training_steps=steps)
    ema = EMAModel(unet.parameters(), decay=0.999)
    for step in range(steps):
        idx = torch.randint(len(x), (batch,))
        clean, y = x[idx], labels[idx]
        y = torch.where(torch.rand(batch) < p_uncond, torch.full_like(y, NULL), y)  # label dropout
        eps = torch.randn_like(clean)
        tau = torch.randint(0, scheduler.config.num_train_timesteps, (batch,))
        pred = unet(scheduler.add_noise(clean, eps, tau), tau, class_labels=y).sample
        loss = torch.nn.functional.mse_loss(pred, eps)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        lr.step()
        ema.step(unet.parameters())
        if step % 500 == 0:
            print(f"[teacher] step {step} loss {loss.item():.4f}", flush=True)
    ema.copy_to(unet.parameters())
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)  # safetensors


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", default="all", help="all | teacher | 0 | W (pairs and students of one guidance "
                   "scale) | eval")
    p.add_argument("--w", type=float, default=1.0, help="the guided scale (default 1)")
    p.add_argument("--teacher-steps", type=int, default=3000)
    p.add_argument("--scale", type=float, default=1.0, help="multiply the students' training steps")
    p.add_argument("--lmd-steps", type=int, help="LMD's training steps (default: digits_fm.yaml's times --scale)")
    p.add_argument("--pairs", type=int, default=8000)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--root", default=str(ROOT_DIR / "runs" / "bench_diffusers_digits"))
    p.add_argument("--out", default=str(ROOT_DIR / "docs" / "benchmarks" / "diffusers_digits"))
    args = p.parse_args()
    torch.set_num_threads(1)
    root, folder = Path(args.root), Path(args.root) / "teacher"
    scales = [0.0, args.w]
    clock_path = root / "seconds.json"
    clock = json.loads(clock_path.read_text()) if clock_path.is_file() else {}

    def timed(name: str, fn) -> None:
        start = time.time()
        fn()
        if time.time() - start > 10:  # a stage found finished keeps the time it took when it ran
            clock[name] = round(time.time() - start)
            latest = json.loads(clock_path.read_text()) if clock_path.is_file() else {}
            write_text(clock_path, json.dumps({**latest, name: clock[name]}, indent=1))

    def steps(cfg_name: str) -> int:
        return max(1, round(load_config(ROOT_DIR / "configs" / f"{cfg_name}.yaml").train.steps * args.scale))

    def fit(name: str, cfg_name: str, over: list[str], n_steps: int | None = None) -> None:
        cfg = load_config(ROOT_DIR / "configs" / f"{cfg_name}.yaml",
                          over + [f"train.steps={n_steps or steps(cfg_name)}"])
        print(f"[students] {name}: {cfg.objective.method}, {cfg.train.steps} steps", flush=True)
        timed(name, lambda: train(cfg, root / name, resume=True, progress=False))

    root.mkdir(parents=True, exist_ok=True)
    if args.stage in ("all", "teacher") and not (folder / "model_index.json").is_file():
        timed("teacher", lambda: train_teacher(folder, args.teacher_steps))
    for w in scales:
        if args.stage not in ("all", f"{w:g}"):
            continue
        pairs = root / f"pairs_w{w:g}"
        timed(f"pairs_w{w:g}", lambda w=w, pairs=pairs: generate_pairs(
            pair_teacher(folder, "edm", 18, guidance=w, diffusers={"null_class": True}), args.pairs, pairs,
            solver="edm", steps=18, shard_size=4096, batch_size=1024, progress=False))
        fit(f"lmm_w{w:g}", "digits_lmm", [f"data.path={pairs}", f"model.num_classes={CLASSES}"])
        fit(f"lmd_w{w:g}", "digits_fm", ["objective={method: lmd}", "model.max_freq=1", f"model.num_classes={CLASSES}",
                                         "path.sigma0=1.0", f"teacher={{kind: diffusers, path: {folder}, "
                                         f"null_class: true, guidance: {w:g}}}"], args.lmd_steps)
    if args.stage in ("all", "eval"):
        evaluate(args, root, folder, scales, clock)


def evaluate(args, root: Path, folder: Path, scales: list[float], clock: dict) -> None:
    start = time.time()
    x, _ = load_digits()
    _, held_idx = split(len(x), 0.2, 0)
    held = x[held_idx]
    ext = feature_extractor("digits")
    ref = ext(held)["features"]
    fds: dict[tuple, list[float]] = {}
    for k in range(args.seeds):
        torch.manual_seed(k)
        x0 = noise(args.n, (1, 8, 8), 1.0, seed=1234 + k)
        label = class_labels(CLASSES, args.n)
        for w in scales:
            model, teacher, _ = open_teacher(folder, w, {"null_class": True})
            rows = [(("diffusers teacher (ε-pred.)", w, "EDM Heun from σ(t0), 18 steps"),
                     run_sampler(model, x0, "edm", 18, label=label, t0=teacher.t0))]
            rows += [(("diffusers teacher (ε-pred.)", w, f"Euler, {n} steps"),
                      run_sampler(model, x0, "euler", n, label=label, t0=teacher.t0)) for n in (1, 2)]
            lmm = load_run(root / f"lmm_w{w:g}").model
            rows += [(("LMM (L2)", w, f"line, EDM σ idx {','.join(map(str, idx))}"),
                      run_sampler(lmm, x0, "map", edm_grid=list(idx), label=label)) for idx in ((0,), (0, 1))]
            lmd = load_run(root / f"lmd_w{w:g}")
            rows += [(("LMD", w, f"map, uniform {n} from t0"), run_sampler(lmd.model, x0, "map", n, label=label,
                                                                           t0=lmd.t0)) for n in (1, 2)]
            for key, s in rows:
                fds.setdefault((*key, s.nfe), []).append(frechet_distance(ext(s.x)["features"], ref))
                print(key, s.nfe, f"FD {fds[(*key, s.nfe)][-1]:.3f}", flush=True)
    clock["eval"] = round(time.time() - start)
    teacher_fd = {w: float(np.mean(fds[("diffusers teacher (ε-pred.)", w, "EDM Heun from σ(t0), 18 steps", 35)]))
                  for w in scales}
    table = [{"model": key[0], "guidance": key[1], "sampler": key[2], "nfe": key[3], "fd_digits": float(np.mean(v)),
              "fd_std": float(np.std(v, ddof=1)) if len(v) > 1 else None,
              "fd / teacher": float(np.mean(v)) / teacher_fd[key[1]]} for key, v in fds.items()]
    verdicts = []
    for r in table:
        n_steps = r["nfe"]
        if r["model"] in ("LMM (L2)", "LMD") and n_steps in TARGETS:
            ok = r["fd / teacher"] <= TARGETS[n_steps]
            verdicts.append(f"{r['model']} w={r['guidance']:g} N={n_steps}: {r['fd / teacher']:.3f}× the teacher "
                            f"(target ≤ {TARGETS[n_steps]}×): {'met' if ok else 'NOT met'}")
    meta = {"pairs": args.pairs, "n": args.n, "seeds": args.seeds, "w": args.w, "teacher_steps": args.teacher_steps,
            "scale": args.scale, "lmd_steps": args.lmd_steps, "seconds": clock,
            "total_minutes": round(sum(clock.values()) / 60, 1),
            "verdicts": verdicts, "rows": table}
    title = (f"Digits 8×8, diffusers teacher distilled, {args.n} samples × {args.seeds} noise seeds, "
             "FD (digits classifier)")
    text = markdown_table(table, title)
    write_report(args.out, meta, f"{text}\n" + "\n".join(f"- {v}" for v in verdicts)
                 + f"\n\nWall clock per stage (s): {clock}\n")
    print(text)
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
