"""Side by side with the peer users would pick: torchcfm (*Improving and generalizing flow-based generative models
with minibatch optimal transport*, Tong et al.), installed from the ``bench`` extra with ``--no-deps``.

Three measurements, each on one thread and each pair run in the same process, one after the other:

* ``speed`` — steps/s of the same network trained by torchcfm's plain CFM loop and by flowmaps' ``train_step``
  (rounds alternate, medians reported), with the pieces of the difference: our network in the plain loop, our
  step without EMA and clipping.
* ``ot`` — seconds per exact minibatch OT coupling of a batch: torchcfm's ``OTPlanSampler("exact")`` and
  flowmaps' ``ot_permutation``.
* ``quality`` — on each data set, flowmaps' demo pipeline (flow-matching teacher → LMD flow map, and EDM-Heun
  pairs → lines matching) is timed, and torchcfm's exact OT-CFM is trained for the same wall-clock time (the
  whole pipeline's, both students included: a budget that favours the peer). KL(target ‖ model) on the 50×50
  grid at N = 1, 2, 4 steps from the same noise count.

    pip install --no-deps torchcfm                    # the bench extra
    OMP_NUM_THREADS=1 python benchmarks/peers.py       # writes docs/benchmarks/peers.{md,json}
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from flowmaps.app import demo
from flowmaps.app.evaluate import markdown_table, measure, run_sampler
from flowmaps.core.couplings import ot_permutation
from flowmaps.core.sampling import noise
from flowmaps.data import build_source
from flowmaps.io.files import write_report, write_text
from flowmaps.pairs.generate import generate_pairs
from flowmaps.run.build import load_run, pair_teacher
from flowmaps.run.config import parse_config
from flowmaps.run.trainer import build_state, train, train_step

# The demo's recipes as docs/benchmarks/peers.md measured them (pinned so that table reproduces): the students
# before grid times (LMD, 2,600 steps) and sampling-optimized training (LMM on karras σ, 3,000 steps, 50,000 pairs).
TEACHER = demo.TEACHER
LMD = {**demo.LMD, "objective": {"method": "lmd"}, "train": {**demo.LMD["train"], "steps": 2600}}
LMM = {**demo.LMM, "objective": {"method": "lmm"}, "train": {**demo.LMM["train"], "steps": 3000}}
PAIRS = 50_000

try:
    from torchcfm.conditional_flow_matching import (
        ConditionalFlowMatcher,
        ExactOptimalTransportConditionalFlowMatcher,
    )
    from torchcfm.optimal_transport import OTPlanSampler
except ImportError as err:  # the bench extra
    raise SystemExit(f"peers.py needs torchcfm: pip install --no-deps torchcfm ({err})") from None

WIDTH, DEPTH, LR = 256, 4, 3e-3


def plain_mlp(dim: int) -> nn.Module:
    """torchcfm's usual network: an MLP on ``[x, t]``, DEPTH hidden layers of WIDTH with GELU."""
    layers: list[nn.Module] = [nn.Linear(dim + 1, WIDTH), nn.GELU()]
    for _ in range(DEPTH - 1):
        layers += [nn.Linear(WIDTH, WIDTH), nn.GELU()]
    return nn.Sequential(*layers, nn.Linear(WIDTH, dim))


class PlainLoop:
    """torchcfm's training loop: a CFM matcher, MSE, backward, RAdam, cosine decay over ``total`` steps.
    ``net`` is a function ``(x_t, t) -> v`` and ``params`` its parameters."""

    def __init__(self, matcher, net, params, source, batch: int, total: int) -> None:
        self.matcher, self.net, self.source, self.batch = matcher, net, source, batch
        self.opt = torch.optim.RAdam(params, lr=LR)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, total)

    def step(self) -> None:
        x1 = self.source.sample(self.batch)["x1"]
        x0 = torch.randn_like(x1)
        t, xt, ut = self.matcher.sample_location_and_conditional_flow(x0, x1)
        loss = (self.net(xt, t) - ut).pow(2).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()


def fm_tree(data: dict, batch: int, **train) -> dict:
    return {"seed": 0, "data": data,
            "model": {"net": "mlp", "width": WIDTH, "depth": DEPTH, "act": "gelu", "max_freq": 16.0},
            "objective": {"method": "fm"},
            "train": {"steps": 10**6, "batch_size": batch, "lr": LR, "optimizer": "radam", "schedule": "cosine",
                      "warmup": 0, **train}}


def speed(args) -> list[dict]:
    data = {"kind": "toy", "name": "checker"}
    source = build_source(parse_config(fm_tree(data, args.batch)).data)
    torch.manual_seed(0)
    peer = plain_mlp(2)
    ours_plain = build_state(parse_config(fm_tree(data, args.batch)), source).model
    states = {"flowmaps train_step": build_state(parse_config(fm_tree(data, args.batch)), source),
              "flowmaps train_step, no clipping": build_state(
                  parse_config(fm_tree(data, args.batch, grad_clip=None)), source)}

    def ours(state):
        return lambda: train_step(state, source.sample(args.batch))

    steps = {"torchcfm CFM loop (plain MLP)":
             PlainLoop(ConditionalFlowMatcher(0.0), lambda x, t: peer(torch.cat([x, t[:, None]], 1)),
                       peer.parameters(), source, args.batch, 10**6).step,
             "torchcfm CFM loop, flowmaps network":
             PlainLoop(ConditionalFlowMatcher(0.0), lambda x, t: ours_plain.v(x, t, t), ours_plain.parameters(),
                       source, args.batch, 10**6).step,
             **{k: ours(s) for k, s in states.items()}}
    times = {k: [] for k in steps}
    for f in steps.values():  # warm-up
        for _ in range(3):
            f()
    for _ in range(args.rounds):
        for k, f in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                f()
            times[k].append((time.perf_counter() - t0) / args.steps)
    base = statistics.median(times["torchcfm CFM loop (plain MLP)"])
    params = {"torchcfm CFM loop (plain MLP)": sum(p.numel() for p in peer.parameters()),
              "torchcfm CFM loop, flowmaps network": sum(p.numel() for p in ours_plain.parameters())}
    return [{"loop": k, "params": params.get(k, params["torchcfm CFM loop, flowmaps network"]),
             "steps_per_s": 1 / statistics.median(v), "time_vs_torchcfm": statistics.median(v) / base}
            for k, v in times.items()]


def ot_speed(args) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    source = build_source(parse_config(fm_tree({"kind": "toy", "name": "checker"}, args.batch)).data)
    sampler = OTPlanSampler(method="exact")
    x1, x0 = source.sample(args.batch)["x1"], torch.randn(args.batch, 2, generator=g)
    fns = {"torchcfm OTPlanSampler('exact').sample_plan": lambda: sampler.sample_plan(x0, x1),
           "flowmaps ot_permutation (POT network simplex)": lambda: x1[ot_permutation(x0, x1)],
           "Hungarian algorithm (scipy, flowmaps before)": lambda: x1[linear_sum_assignment(
               torch.cdist(x0.double(), x1.double()).pow(2).numpy())[1]]}
    times = {k: [] for k in fns}
    for _ in range(args.rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return [{"coupling": k, "batch": args.batch, "s_per_batch": statistics.median(v)} for k, v in times.items()]


def kl_rows(model: str, draws: dict[int, torch.Tensor], nfe: dict[int, int], target, bounds) -> list[dict]:
    return [{"model": model, "steps": k, "nfe": nfe[k], **measure(x, target, bounds)} for k, x in draws.items()]


def quality(name: str, args, root: Path) -> dict:
    data = {"kind": "toy", "name": name}
    out = root / name
    steps = (1, 2, 4)
    t0 = time.perf_counter()
    teacher_dir = train(parse_config({**TEACHER, "data": data}, args.set), out / "teacher", resume=True,
                        progress=False)
    lmd_dir = train(parse_config({**LMD, "data": data, "teacher": {"kind": "run", "path": str(teacher_dir)}},
                                 args.set), out / "lmd", resume=True, progress=False)
    t_lmd = time.perf_counter() - t0
    generate_pairs(pair_teacher(teacher_dir, "edm", 18, "cpu"), args.pairs, out / "pairs", shard_size=8192,
                   progress=False)
    lmm_dir = train(parse_config({**LMM, "data": {"kind": "pairs", "path": str(out / "pairs")}}, args.set),
                    out / "lmm", resume=True, progress=False)
    budget = time.perf_counter() - t0

    teacher, lmd, lmm = load_run(teacher_dir), load_run(lmd_dir), load_run(lmm_dir)
    source = teacher.source
    target = source.reference(args.n, seed=1235)
    rows: list[dict] = []
    x0 = noise(args.n, source.shape, teacher.model.sigma0, seed=1)
    s = run_sampler(teacher.model, x0, "adaptive", None, seed=1)
    rows.append({"model": "flowmaps teacher (adaptive)", "steps": None, "nfe": s.nfe,
                 **measure(s.x, target, source.bounds)})
    grids = {1: [0], 2: [0, 1], 4: [0, 1, 3, 5]}
    for label, run, kw in (("flowmaps LMD", lmd, lambda k: {"steps": k}),
                           ("flowmaps LMM", lmm, lambda k: {"steps": None, "edm_grid": grids[k]})):
        for k in steps:
            s = run_sampler(run.model, x0, "map", seed=1, **kw(k))
            rows.append({"model": label, "steps": k, "nfe": s.nfe, **measure(s.x, target, source.bounds)})

    # the peer: exact OT-CFM (σ = 0), the plain MLP, trained for the same wall-clock time
    torch.manual_seed(0)
    net = plain_mlp(2)
    fwd = lambda x, t: net(torch.cat([x, t[:, None]], 1))  # noqa: E731
    matcher = ExactOptimalTransportConditionalFlowMatcher(0.0)
    probe = PlainLoop(matcher, fwd, plain_mlp(2).parameters(), source, args.batch, 10)
    t1 = time.perf_counter()
    for _ in range(10):
        probe.step()
    total = max(1, int(budget / ((time.perf_counter() - t1) / 10)))  # the cosine schedule's length
    loop = PlainLoop(matcher, fwd, net.parameters(), source, args.batch, total)
    t1, done = time.perf_counter(), 0
    while time.perf_counter() - t1 < budget and done < total:
        loop.step()
        done += 1
    peer_s = time.perf_counter() - t1
    z = torch.randn(args.n, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for k in steps:
            x = z.clone()
            for i in range(k):
                x = x + fwd(x, torch.full((args.n,), i / k)) / k
            rows.append({"model": "torchcfm OT-CFM (Euler)", "steps": k, "nfe": k,
                         **measure(x, target, source.bounds)})
    floor = measure(source.reference(args.n, seed=999), target, source.bounds)["kl"]
    return {"data": name, "flowmaps_s": budget, "flowmaps_lmd_pipeline_s": t_lmd, "torchcfm_s": peer_s,
            "torchcfm_steps": done, "floor": floor, "rows": rows}


def render(result: dict) -> str:
    text = ["# flowmaps beside torchcfm", "", "Command: `pip install --no-deps torchcfm && OMP_NUM_THREADS=1 "
            "python benchmarks/peers.py " + result["cmd"] + "`", "",
            f"One thread, torch {torch.__version__}, CPU; MLP {DEPTH}×{WIDTH} GELU, batch {result['args']['batch']}, "
            "RAdam, cosine.", ""]
    if result.get("speed"):
        text += ["## Training step", "", markdown_table(result["speed"])]
    if result.get("ot"):
        text += ["## Exact minibatch OT", "", markdown_table(result["ot"])]
    for q in result.get("quality", []):
        text += [f"## Quality at an equal wall-clock budget: {q['data']}", "",
                 f"flowmaps' demo pipeline (teacher, LMD, pairs, LMM): {q['flowmaps_s']:.0f} s (teacher and LMD "
                 f"alone: {q['flowmaps_lmd_pipeline_s']:.0f} s); torchcfm's exact OT-CFM trained "
                 f"{q['torchcfm_s']:.0f} s ({q['torchcfm_steps']} steps). KL(target ‖ model), 50×50 grid, "
                 f"{result['args']['n']} samples; two target sets differ by KL {q['floor']:.3f}.", "",
                 markdown_table([{k: r.get(k) for k in ("model", "steps", "nfe", "kl", "w2", "energy")}
                                 for r in q["rows"]])]
    return "\n".join(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="speed,ot,quality")
    p.add_argument("--data", default="checker,spirals", help="toy sets of the quality comparison")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=10, help="steps per loop per round (speed)")
    p.add_argument("--n", type=int, default=64_000, help="samples per KL")
    p.add_argument("--pairs", type=int, default=PAIRS, help="teacher pairs of the lines matching model")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides of every flowmaps stage's recipe (smoke runs: train.steps=3)")
    p.add_argument("--root", default=None, help="where the quality runs are kept (default: a temporary folder)")
    p.add_argument("--out", default="docs/benchmarks/peers")
    args = p.parse_args()
    parts = args.parts.split(",")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = " ".join(f"--{k} {v}" for k, v in (("parts", args.parts), ("data", args.data), ("n", args.n),
                                             ("pairs", args.pairs)) if v != p.get_default(k))
    result: dict = {"args": vars(args), "cmd": cmd}
    if "speed" in parts:
        result["speed"] = speed(args)
    if "ot" in parts:
        result["ot"] = ot_speed(args)
    if "quality" in parts:
        root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="peers_"))
        result["quality"] = []
        for name in args.data.split(","):
            result["quality"].append(quality(name, args, root))
            write_text(out.with_suffix(".json"), json.dumps(result, indent=1))
    write_report(out, result, render(result))
    print(render(result))


if __name__ == "__main__":
    main()
