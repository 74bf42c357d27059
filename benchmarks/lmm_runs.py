"""The runs shared by the lines-matching benchmarks, trained once and cached under ``runs/bench_lmm/``.

Problem: the checkerboard (uniform on the 8 squares ``(ix + iy) % 2 == 0`` of a 4×4 grid on [−1, 1]²),
base ``N(0, σ0² I)`` with σ0 = the data's std. Teacher: EDM (``configs/checker_edm.yaml``), pairs from its
Heun sampler (18 steps, 35 NFE). Every model is an MLP 128×3 trained ``STEPS`` = 2,000 steps of batch 512
(RAdam, cosine, EMA; the recipes are the ``configs/checker_*.yaml`` files with ``train.steps`` shortened to fit
a CPU budget of about 10 minutes on one shared core). BOT-CFM uses B = 64 and 256 (its OT batch is its
training batch; an exact 1024×1024 assignment costs about 2 s per step on this CPU).
Rerunning skips what is finished (runs resume, the pair store resumes).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

ROOT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT_DIR / "src"))

from flowmaps.run.config import load_config  # noqa: E402
from flowmaps.pairs import generate_pairs, run_teacher  # noqa: E402
from flowmaps.run.build import Run, load_run  # noqa: E402
from flowmaps.run.trainer import train  # noqa: E402

ROOT = Path(os.environ.get("LMM_BENCH_ROOT", ROOT_DIR / "runs" / "bench_lmm"))
STEPS = int(os.environ.get("LMM_BENCH_STEPS", 2000))  # smaller values only to smoke-test the scripts
N_PAIRS = int(os.environ.get("LMM_BENCH_PAIRS", 50_000))
PAIRS = ROOT / "pairs"

# name -> (config, overrides); pair-trained runs read PAIRS
RUNS = {
    "EDM (teacher)": ("checker_edm", []),
    "1-RF (CFM, linear path)": ("checker_rf1", []),
    "BOT-CFM B=64": ("checker_botcfm", ["train.batch_size=64"]),
    "BOT-CFM B=256": ("checker_botcfm", ["train.batch_size=256"]),
    "2-RF (reflow on pairs)": ("checker_rf2", []),
    "LMM": ("checker_lmm", []),
    "LMM + adversarial": ("checker_lmm_adv", [f"objective.adv_start={int(0.7 * STEPS)}"]),
    "LMM + SOT (idx 0,1)": ("checker_lmm", ["objective.time=sot", "objective.sot_steps=[0,1]"]),
}


def _dir(name: str) -> Path:
    return ROOT / "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def ensure(names: list[str], progress: bool = False) -> dict[str, Run]:
    """Train (or resume) the named runs, making the teacher's pair store first when a run needs it."""
    out = {}
    teacher_dir = _dir("EDM (teacher)")
    for name in ["EDM (teacher)"] + [n for n in names if n != "EDM (teacher)"]:
        cfg_name, over = RUNS[name]
        over = over + [f"train.steps={STEPS}"]
        cfg = load_config(ROOT_DIR / "configs" / f"{cfg_name}.yaml", over)
        if cfg.data.kind == "pairs":
            generate_pairs(run_teacher(teacher_dir, "edm", 18), N_PAIRS, PAIRS, seed=0, shard_size=16_384,
                           batch_size=8192, progress=progress)
            cfg = load_config(ROOT_DIR / "configs" / f"{cfg_name}.yaml", over + [f"data.path={PAIRS}"])
        print(f"[bench] {name}: {cfg.objective}, {cfg.train.steps} steps", flush=True)
        train(cfg, _dir(name), resume=True, progress=progress)
        if name in names:
            out[name] = load_run(_dir(name))
    return out


def threads() -> None:
    torch.set_num_threads(1)
