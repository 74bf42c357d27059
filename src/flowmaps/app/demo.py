"""``flowmaps demo``: the embedded default on the CPU, end to end, in a few minutes.

Each stage trains one run under ``OUT/<stage>`` from the recipe written below (made shorter with ``--fast``),
evaluates it, and the demo writes ``OUT/samples.png`` (the same noise through every model at N = 1, 2, 4)
and ``OUT/metrics.md``. Stages: a flow-matching teacher; a flow map distilled from it (LMD), sampled by
composing its own steps, with the NFE it saves against the teacher's adaptive solve; then lines matching:
teacher pairs in ``OUT/pairs`` (EDM Heun, 35 NFE) and an LMM on them, sampled along its lines and
consistency-style.
"""

from __future__ import annotations

from pathlib import Path

from ..core.sampling import noise
from ..errors import ConfigError
from ..pairs.generate import generate_pairs
from ..run.build import load_run, pair_teacher
from ..run.config import parse_config
from ..run.trainer import train
from .evaluate import evaluate, markdown_table, run_sampler, save_rows
from .plots import scatter_panels

CHECKER = {"kind": "toy", "name": "checker"}


def _recipe(objective: dict, model: dict, steps: int, batch: int, lr: float, **sections) -> dict:
    """A demo stage's config: an MLP, RAdam with cosine decay after 100 warm-up steps."""
    return {"seed": 0, "model": {"net": "mlp", **model}, "objective": objective, **sections,
            "train": {"steps": steps, "batch_size": batch, "lr": lr, "schedule": "cosine", "warmup": 100,
                      "log_every": 100, "ckpt_every": 1000}}


TEACHER = _recipe({"method": "fm"}, {"width": 256, "depth": 4, "max_freq": 16.0}, 8000, 1024, 3e-3, data=CHECKER)
LMM = _recipe({"method": "lmm", "time": "uniform"}, {"width": 256, "depth": 3}, 3000, 1024, 2e-3)
LMD = _recipe({"method": "lmd"}, {"width": 256, "depth": 3, "max_freq": 1.0}, 2000, 512, 2e-3, data=CHECKER)
PAIRS = 20_000
STEPS = [1, 2, 4]


def _stage(name: str, tree: dict, out: Path, fast: bool, progress: bool, device: str = "cpu") -> Path:
    cfg = parse_config(tree, (["train.steps=150", "train.batch_size=512"] if fast else []) + [f"train.device={device}"])
    run_dir = out / name
    print(f"[demo] {name}: {cfg.objective.method}, {cfg.train.steps} steps -> {run_dir}")
    return train(cfg, run_dir, resume=True, progress=progress)


OUTPUTS = {"teacher", "lmd", "pairs", "lmm", "samples.png", "metrics.md", "metrics.json"}


def demo(out: Path, fast: bool = False, progress: bool = True, n: int = 20_000, device: str = "cpu") -> list[dict]:
    """Train the demo's models into ``out`` (resuming any already there) on ``device`` and write the comparison."""
    if out.exists() and (not out.is_dir() or any(p.name not in OUTPUTS for p in out.iterdir())):
        raise ConfigError(f"{out}: exists and is not a demo folder (it holds other files); choose another --out")
    stages = {"teacher": TEACHER}
    runs = {name: load_run(_stage(name, tree, out, fast, progress, device), device=device)
            for name, tree in stages.items()}
    teacher = runs["teacher"]
    lmd = {**LMD, "teacher": {"kind": "run", "path": str(out / "teacher")}}
    runs["lmd"] = load_run(_stage("lmd", lmd, out, fast, progress, device), device=device)
    pairs = out / "pairs"  # lines matching: teacher -> pairs (EDM Heun, 35 NFE) -> LMM
    print(f"[demo] pairs: {PAIRS if not fast else 2000} teacher pairs -> {pairs}")
    generate_pairs(pair_teacher(out / "teacher", "edm", 18, device), 2000 if fast else PAIRS, pairs, shard_size=8192,
                   progress=progress)
    lmm = {**LMM, "data": {"kind": "pairs", "path": str(pairs)}}
    runs["lmm"] = load_run(_stage("lmm", lmm, out, fast, progress, device), device=device)
    n = 4000 if fast else n
    x0 = noise(n, teacher.source.shape, teacher.model.sigma0, seed=1).to(device)
    target = teacher.source.reference(n)
    panels, rows = [], []
    for name, run in runs.items():
        solver = "euler" if run.model.form == "velocity" else "map"
        panels.append(("target", target))
        for k in STEPS:
            s = run_sampler(run.model, x0, solver, k)
            panels.append((f"{name} ({solver}), NFE {s.nfe}", s.x.cpu()))
        rows += [{"model": name, **r} for r in evaluate(run.model, run.source, STEPS, n, seed=1234, device=device)]
    scatter_panels(panels, out / "samples.png", teacher.source.bounds, cols=len(STEPS) + 1)
    save_rows(out / "metrics", rows)
    print(markdown_table(rows, "demo: KL(target ‖ model) on the 50×50 grid, W2, energy distance"))
    print(nfe_saved(rows, "teacher", "lmd"))
    print(f"[demo] wrote {out / 'samples.png'} and {out / 'metrics.md'}")
    return rows


def nfe_saved(rows: list[dict], teacher: str, flowmap: str) -> str:
    """One line per step count: the flow map's KL at N steps (N NFE) beside the teacher's adaptive solve."""
    ref = next((r for r in rows if r["model"] == teacher and r["solver"] == "adaptive"), None)
    if ref is None:
        return ""
    lines = [f"[demo] teacher, adaptive solver: NFE {ref['nfe']}, KL {ref.get('kl', float('nan')):.3f}"]
    for r in rows:
        if r["model"] == flowmap:
            lines.append(f"[demo] {flowmap} flow map, N = {r['steps']}: NFE {r['nfe']} "
                         f"({ref['nfe'] / r['nfe']:.0f}x fewer), KL {r.get('kl', float('nan')):.3f}")
    return "\n".join(lines)
