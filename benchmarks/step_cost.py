"""Training-step cost of each flow-map objective as a ratio to one flow-matching step (same network, same batch).

Methods run side by side: every round times a few optimizer steps of each method in turn, and the table reports
the median time per step over the rounds, so drifts of machine load hit all methods alike. Distillation methods
use a velocity teacher of the same architecture (a network evaluation, as with a trained teacher).

    OMP_NUM_THREADS=1 python benchmarks/step_cost.py            # writes docs/benchmarks/step_cost.{md,json}
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from flowmaps.run.config import parse_config
from flowmaps.data import build_source
from flowmaps.app.evaluate import markdown_table
from flowmaps.core.objectives import Context
from flowmaps.core.paths import interpolant
from flowmaps.run.build import build_model, resolve_scales

METHODS = ["fm", "fm+teacher", "lmd", "emd", "fmm", "pfmm", "lsd", "esd", "psdm", "psdu", "meanflow"]
JVPS = {"fm": 0, "fm+teacher": 0, "lmd": 1, "emd": 1, "fmm": 1, "pfmm": 0, "lsd": 1, "esd": 2, "psdm": 0, "psdu": 0,
        "meanflow": 1}


class WithTeacher(torch.nn.Module):
    """Flow matching plus one no-grad teacher evaluation on the batch: the non-JVP work of a distillation step."""

    kind = "velocity"

    def __init__(self, fm, teacher) -> None:
        super().__init__()
        self.fm, self.teacher = fm, teacher

    def extra_parameters(self):
        return []

    def loss(self, model, batch, step):
        x1 = batch["x1"]
        with torch.no_grad():
            self.teacher(x1, torch.rand(x1.shape[0]))
        return self.fm.loss(model, batch, step)


def setup(method: str, args):
    if method == "fm+teacher":
        model, objective, opt, batch = setup("fm", args)
        return model, WithTeacher(objective, setup("lmd", args)[1].ctx.teacher), opt, batch
    tree = {"seed": 0, "data": {"kind": "toy", "name": "checker"},
            "model": {"net": "mlp", "width": args.width, "depth": args.depth, "max_freq": 1.0},
            "objective": {"method": method}}
    if method in ("lmd", "emd", "pfmm"):
        tree["teacher"] = {"kind": "run", "path": "unused"}
    cfg = parse_config(tree)
    source = build_source(cfg.data)
    teacher_net = build_model(cfg, source, "velocity").requires_grad_(False)
    sigma0, _ = resolve_scales(cfg, source)
    ctx = Context(interpolant("linear"), sigma0, lambda x, t, label=None: teacher_net.velocity(x, t, label), source)
    from flowmaps.core.objectives import objective_class

    cls = objective_class(method)
    objective = cls(cfg.objective_options(), ctx)
    model = build_model(cfg, source, objective.kind)
    torch.nn.init.normal_(model.net.out.weight, std=0.01)  # not the identity: every term does work
    opt = torch.optim.RAdam(list(model.parameters()) + objective.extra_parameters(), lr=1e-4)
    batch = source.sample(args.batch)
    return model, objective, opt, batch


def run_steps(model, objective, opt, batch, k: int, step0: int) -> float:
    t0 = time.perf_counter()
    for i in range(k):
        loss, _ = objective.loss(model, batch, step0 + i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
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
    pieces = {m: setup(m, args) for m in methods}
    for m in methods:  # warm-up (functorch set-up, allocator)
        run_steps(*pieces[m], 3, 0)
    times: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(args.rounds):
        for m in methods:
            times[m].append(run_steps(*pieces[m], args.steps, 10 + r * args.steps))
    fm = statistics.median(times["fm"])
    rows = [{"method": m, "jvps": JVPS.get(m), "ms_per_step": 1e3 * statistics.median(times[m]),
             "ratio_to_fm": statistics.median(times[m]) / fm} for m in methods]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"width": args.width, "depth": args.depth, "batch": args.batch, "rounds": args.rounds,
            "steps_per_round": args.steps, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine()}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    cmd = "OMP_NUM_THREADS=1 python benchmarks/step_cost.py " + " ".join(
        f"--{k} {v}" for k, v in (("width", args.width), ("depth", args.depth), ("batch", args.batch)))
    text = ("# Training-step cost per objective, relative to one flow-matching step\n\n"
            f"Command: `{cmd}`\n\n"
            f"MLP {args.depth}×{args.width}, batch {args.batch} (2-D checkerboard), one optimizer step "
            "(loss, backward, "
            f"RAdam) timed side by side: median over {args.rounds} rounds of {args.steps} steps each; "
            f"{meta['threads']} thread(s), torch {meta['torch']}, CPU. `jvps`: forward-mode JVPs per step. "
            "LMD and EMD also evaluate a teacher network of the same size once per step (PFMM: two frozen-network "
            "evaluations): `fm+teacher` is a "
            "flow-matching step plus that evaluation, so `lmd / (fm+teacher)` is LMD's JVP overhead.\n\n"
            + markdown_table(rows))
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
