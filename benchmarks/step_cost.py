"""Training-step cost of each flow-map objective as a ratio to one flow-matching step (same network, same batch).

Methods run side by side: every round times a few training steps of each method in turn, and the table reports
the median time per step over the rounds, so drifts of machine load hit all methods alike. A step is the
trainer's own (:func:`flowmaps.run.trainer.train_step`: loss, backward, clipping, RAdam, EMA). Distillation
methods use a velocity teacher of the same architecture (a run trained for one step: a network evaluation,
as with a trained teacher).

    OMP_NUM_THREADS=1 python benchmarks/step_cost.py            # writes docs/benchmarks/step_cost.{md,json}
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from flowmaps.app.evaluate import markdown_table
from flowmaps.core.objectives import objective_class, register
from flowmaps.core.objectives.fm import FM
from flowmaps.data import build_source
from flowmaps.io.files import write_report
from flowmaps.run.config import parse_config, read_yaml
from flowmaps.run.trainer import TrainState, build_state, train, train_step

METHODS = ["fm", "fm+teacher", "fm+ot", "fm+ot25", "fm+ot50", "fm+otb256", "fm+otb512", "lmd", "lmd+traj",
           "lmd+bank", "emd", "emd+bank", "fmm", "fmm+ot", "pfmm", "pfmm+recipe", "lsd", "lsd+ot", "esd", "psdm",
           "psdm+ot", "psdu", "meanflow"]
JVPS = {"fm": 0, "fm+teacher": 0, "fm+ot": 0, "fm+ot25": 0, "fm+ot50": 0, "fm+otb256": 0, "fm+otb512": 0, "lmd": 1,
        "lmd+traj": 1, "lmd+bank": 1, "emd": 1, "emd+bank": 1, "fmm": 1, "fmm+ot": 1, "pfmm": 0, "pfmm+recipe": 0,
        "lsd": 1, "lsd+ot": 1, "esd": 1, "psdm": 0, "psdm+ot": 0, "psdu": 0, "meanflow": 1}


class FMPlusTeacher(FM):
    """Flow matching plus one no-grad teacher evaluation on the batch: the non-JVP work of a distillation step."""

    needs_teacher = True

    def loss(self, model, batch, step):
        x1 = batch["x1"]
        with torch.no_grad():
            self.ctx.teacher(x1, torch.rand(x1.shape[0], device=x1.device))
        return super().loss(model, batch, step)


register("fm+teacher", FMPlusTeacher)


def _recipe(method: str) -> dict:
    """The objective's options of ``configs/checker_<method>.yaml`` (without its method and time sampling)."""
    recipe = read_yaml((Path(__file__).parents[1] / "configs" / f"checker_{method}.yaml").read_text())
    return {k: v for k, v in recipe["objective"].items() if k not in ("method", "grid_frac", "rounds", "round_steps")}


def _traj(method: str) -> dict:
    """The trajectory term's options of ``configs/checker_<method>.yaml``."""
    return {k: v for k, v in _recipe(method).items() if k.startswith("traj_")}


# rows that are a method with options: LMD and EMD with the trajectory term of their recipes, read from the recipes,
# with the stored bank of teacher trajectories (<m>+bank) and LMD with fresh solves at every step (lmd+traj);
# <m>+ot: the exact minibatch OT coupling of the self-distillation and FMM recipes (fm+ot is OT-CFM's step);
# fm+ot25 / fm+ot50: OT on a quarter / half of each batch (coupling_frac), the rest independent; fm+otb<b>: OT
# on every pair, planned in blocks of b (coupling_block);
# pfmm+recipe: PFMM's recipe, round 0 (its costliest: two RK4 steps of the teacher, 8 evaluations)
VARIANTS = {"lmd+traj": ("lmd", {**_traj("lmd"), "traj_bank": 0}), "lmd+bank": ("lmd", _traj("lmd")),
            "emd+bank": ("emd", _traj("emd")), "pfmm+recipe": ("pfmm", _recipe("pfmm")),
            **{f"{m}+ot": (m, {"coupling": "ot"}) for m in ("fm", "fmm", "lsd", "psdm")},
            **{f"fm+ot{p}": ("fm", {"coupling": "ot", "coupling_frac": p / 100}) for p in (25, 50)},
            **{f"fm+otb{b}": ("fm", {"coupling": "ot", "coupling_block": b}) for b in (256, 512)}}


def tree(method: str, args) -> dict:
    method, options = VARIANTS.get(method, (method, {}))
    return {"seed": 0, "data": {"kind": "toy", "name": "checker"},
            "model": {"net": "mlp", "width": args.width, "depth": args.depth, "max_freq": 1.0},
            "objective": {"method": method, **options},
            "train": {"steps": 1, "batch_size": args.batch, "lr": 1e-4, "optimizer": "radam"}}


def setup(method: str, args, teacher: Path) -> tuple[TrainState, dict]:
    t = tree(method, args)
    if objective_class(t["objective"]["method"]).needs_teacher:
        t["teacher"] = {"kind": "run", "path": str(teacher)}
    cfg = parse_config(t)
    source = build_source(cfg.data)
    state = build_state(cfg, source)
    torch.nn.init.normal_(state.model.net.out.weight, std=0.01)  # not the identity: every term does work
    return state, source.sample(args.batch)


def lagrangian_pieces(state: TrainState, batch: dict) -> dict:
    """The parts of a Lagrangian step on the model of ``state``, each a function of no argument: the plain forward
    ``X_{s,t}(x)``, forward + backward, the JVP ``(X, ∂_t X)`` and JVP + backward through both."""
    from flowmaps.core.objectives.mapbase import lagrangian

    model, x = state.model, batch["x1"]
    s, t = torch.rand(len(x)) * 0.5, 0.5 + torch.rand(len(x)) * 0.5

    def fwd_bwd():
        model(x, s, t).pow(2).mean().backward()

    def jvp_bwd():
        out, dt = lagrangian(model, x, s, t)
        (dt.pow(2).mean() + out.pow(2).mean()).backward()

    return {"forward (no grad)": torch.no_grad()(lambda: model(x, s, t)), "forward + backward": fwd_bwd,
            "JVP (no grad)": torch.no_grad()(lambda: lagrangian(model, x, s, t)), "JVP + backward": jvp_bwd}


def time_pieces(state: TrainState, batch: dict, rounds: int, k: int) -> list[dict]:
    fns = lagrangian_pieces(state, batch)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(k):
                f()
            times[name].append((time.perf_counter() - t0) / k)
    base = statistics.median(times["forward + backward"])
    return [{"piece": name, "ms": 1e3 * statistics.median(v), "ratio_to_forward_backward":
             statistics.median(v) / base} for name, v in times.items()]


def run_steps(state: TrainState, batch: dict, k: int) -> float:
    t0 = time.perf_counter()
    for _ in range(k):
        train_step(state, batch)
    return (time.perf_counter() - t0) / k


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=10, help="steps per method per round")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--out", default="docs/benchmarks/step_cost")
    args = p.parse_args()
    torch.manual_seed(0)
    methods = args.methods.split(",")
    if "fm" not in methods:
        methods = ["fm"] + methods
    tmp = Path(tempfile.mkdtemp(prefix="step_cost_"))
    try:
        # the teacher: a velocity run of the same network, trained one step (its weights do not change the cost)
        train(parse_config(tree("fm", args)), tmp / "teacher", progress=False)
        pieces = {m: setup(m, args, tmp / "teacher") for m in methods}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for m in methods:  # warm-up (functorch set-up, allocator)
        run_steps(*pieces[m], 3)
    pieces_of = pieces["lmd"] if "lmd" in pieces else pieces["fm"]
    times: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(args.rounds):
        for m in methods:
            times[m].append(run_steps(*pieces[m], args.steps))
    parts = time_pieces(*pieces_of, args.rounds, args.steps)
    fm = statistics.median(times["fm"])
    rows = [{"method": m, "jvps": JVPS.get(m), "ms_per_step": 1e3 * statistics.median(times[m]),
             "ratio_to_fm": statistics.median(times[m]) / fm} for m in methods]
    meta = {"width": args.width, "depth": args.depth, "batch": args.batch, "rounds": args.rounds,
            "steps_per_round": args.steps, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine()}
    cmd = f"OMP_NUM_THREADS={meta['threads']} python benchmarks/step_cost.py " + " ".join(
        f"--{k} {v}" for k, v in (("width", args.width), ("depth", args.depth), ("batch", args.batch),
                                  ("rounds", args.rounds), ("steps", args.steps))) + (
        f" --methods {args.methods}" if args.methods != ",".join(METHODS) else "") + (
        f" --out {args.out}" if args.out != "docs/benchmarks/step_cost" else "")
    text = ("# Training-step cost per objective, relative to one flow-matching step\n\n"
            f"Command: `{cmd}`\n\n"
            f"MLP {args.depth}×{args.width}, batch {args.batch} (2-D checkerboard), one training step "
            "(the trainer's `train_step`: loss, backward, clipping, "
            f"RAdam, EMA) timed side by side: median over {args.rounds} rounds of {args.steps} steps each; "
            f"{meta['threads']} thread(s), torch {meta['torch']}, CPU. `jvps`: forward-mode JVPs per step. "
            "LMD and EMD also evaluate a teacher network of the same size once per step (PFMM: two frozen-network "
            "evaluations): `fm+teacher` is a "
            "flow-matching step plus that evaluation, so `lmd / (fm+teacher)` is LMD's JVP overhead. `lmd+bank`, "
            "`emd+bank`: LMD and EMD with their recipes' trajectory term (configs/checker_lmd.yaml, checker_emd.yaml: "
            + ", ".join(f"`{k}: {v}`" for k, v in VARIANTS["lmd+bank"][1].items()) + "), the trajectories drawn "
            "from the bank solved at the first (warm-up) step; `lmd+traj`: the same term with fresh teacher solves "
            "at every step (`traj_bank: 0`). `<method>+ot`: the step with the exact minibatch OT coupling "
            "(`coupling: ot`) of the self-distillation and FMM recipes; `fm+ot` is OT-CFM's step, `fm+ot25` / "
            "`fm+ot50` the exact OT on a quarter / half of each batch (`coupling_frac`), the rest independent, "
            "`fm+otb256` / `fm+otb512` on every pair, planned in blocks of 256 / 512 (`coupling_block`). "
            "`pfmm+recipe`: "
            "PFMM's recipe (" + ", ".join(f"`{k}: {v}`" for k, v in VARIANTS["pfmm+recipe"][1].items())
            + ") in round 0, where its target is two RK4 steps of the teacher (8 evaluations; later rounds: the "
            "frozen copy twice, RK4 only on the short pieces), its trajectories drawn from the bank.\n\n"
            + markdown_table(rows) + "\nWhere a Lagrangian step's time goes (the same network and batch, timed "
            "side by side): the forward-mode JVP carries a tangent through every layer and the backward runs "
            "through both.\n\n" + markdown_table(parts))
    write_report(args.out, {"meta": meta, "rows": rows, "pieces": parts}, text)
    print(text)


if __name__ == "__main__":
    main()
