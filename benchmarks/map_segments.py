"""Where a flow map's few-step error lives, against the teacher it learned: by time segment and by sample.

For the same noise z, the teacher's adaptive solve ``Φ(z)`` and the map's samples; then, for each split time u,
two hybrids that change one half of the path:

- *teacher to u, map after*: the teacher's solve 0 → u, then the map's one jump ``X_{u,1}``: how good the late
  jump is from exact states;
- *map to u, teacher after*: the map's jump ``X_{0,u}``, then the teacher's solve u → 1: how good the early jump
  is, judged by where the teacher carries its output.

A map trained without a teacher (FMM, the self-distillations) is measured against its own velocity
``v(x, t, t)`` unless ``--teacher`` names one: a flow-matching teacher of another coupling (``coupling: ot``
changes the interpolant's marginals between the ends) has other states at u, and the hybrids would mix two flows.

Per sample, for each split u (and u = 1): the distance of the jump out of the noise ``X_{0,u}(z)`` to
``Φ_{0,u}(z)`` (median and 90th percentile, over ``σ0 √D``, the noise's scale); for a map trained on the square of
(s, t) (FMM), also the backward jump ``X_{u,0}(Φ_{0,u}(z))`` against z, and the energy distance of those backward
states to fresh noise beside that of z itself (the floor): FMM trains ``X_{0,u}`` at ``X_{u,0}(I_u)``, so where the
backward states leave the noise the jumps out of the noise are trained off it.

And the tail: the share of samples whose 1-step sample lies farther than ``--tail`` from ``Φ(z)``, the score
with only those replaced by ``Φ(z)``, and where their noise sits (``|z|/σ0``). Scores as the evaluation's
(KL(target ‖ model) on the 50×50 grid in 2-D, the energy distance otherwise), on ``--n`` samples.

    OMP_NUM_THREADS=1 python benchmarks/map_segments.py --run runs/hl/rings/lmd --out docs/benchmarks/map_segments_rings
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from flowmaps.app.evaluate import markdown_table
from flowmaps.core.metrics.distribution import energy_distance
from flowmaps.core.sampling import noise, sample, solve_adaptive
from flowmaps.io.files import write_report
from flowmaps.run.build import load_run
from flowmaps.run.measure import measure

CHUNK = 8000


def deciles(v: torch.Tensor) -> list[float]:
    """The 1st, 5th and 9th deciles of ``v`` (empty when ``v`` is)."""
    return [round(float(v.quantile(p)), 2) for p in (0.1, 0.5, 0.9)] if v.numel() else []


def per_sample_jumps(m, z, fresh, t0: float, states: dict[float, torch.Tensor], square: bool) -> list[dict]:
    """Per split u (``states[u] = Φ_{t0,u}(z)``): ``|X_{t0,u}(z) − Φ_{t0,u}(z)|`` and, on the square,
    ``|X_{u,t0}(Φ_{t0,u}(z)) − z|``."""
    scale = m.sigma0 * z[0].numel() ** 0.5

    def dist(name, a, b):
        d = (a - b).flatten(1).norm(dim=1) / scale
        return {f"{name}, median": float(d.median()), f"{name}, 90 %": float(d.quantile(0.9))}

    def jump(x, a, c):
        return torch.cat([m(xx, *(torch.full((len(xx),), v, dtype=xx.dtype) for v in (a, c)))
                          for xx in x.split(CHUNK)])

    rows, floor = [], energy_distance(z, fresh) if square else None
    for u, phi_u in states.items():
        row = {"u": f"{u:g}"} | dist("X_{0,u}(z) to Φ_{0,u}(z)", jump(z, t0, u), phi_u)
        if square:
            back = jump(phi_u, u, t0)
            row |= dist("X_{u,0}(Φ_{0,u}(z)) to z", back, z)
            row |= {"its energy to noise": energy_distance(back, fresh), "z's (floor)": floor}
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a flow-map run (its teacher: the run its config names)")
    ap.add_argument("--teacher", help="a velocity run (default: the flow map's teacher.path, else the map's own "
                    "velocity)")
    ap.add_argument("--n", type=int, default=64_000)
    ap.add_argument("--splits", default="0.25,0.5,0.75,0.9375")
    ap.add_argument("--steps", default="1,2,4,16")
    ap.add_argument("--tail", type=float, default=0.05, help="distance to Φ(z) that counts as a tail sample")
    ap.add_argument("--out", required=True, help="path stem of the .md / .json table")
    args = ap.parse_args()
    torch.set_grad_enabled(False)

    run = load_run(args.run)
    teacher_dir = args.teacher or getattr(run.cfg.teacher, "path", None) or args.run
    m, t0 = run.model, run.t0
    b = (m if teacher_dir == args.run else load_run(teacher_dir).model).velocity
    ref = run.source.reference(args.n, seed=1235)
    z = noise(args.n, run.source.shape, m.sigma0, 1234)

    def score(x):
        s = measure(x, ref, run.source.bounds, w2=False)
        return s.get("kl", s["energy"])

    def teacher(x, a, c):
        return torch.cat([solve_adaptive(lambda y, t: b(y, t), xx, a, c).x for xx in x.split(CHUNK)])

    def jumps(x, grid):
        g = torch.tensor(grid, dtype=torch.float64)
        return torch.cat([sample(m, xx, g).x for xx in x.split(CHUNK)])

    def at_t0(x):  # noise as the map's state at t0 (an EDM-style map starts at α(t0) z)
        return x if not t0 else m.interp.alpha(torch.tensor([t0], dtype=torch.float64)).to(x.dtype) * x

    start = at_t0(z)
    phi = teacher(start, t0, 1.0)
    rows = [{"sampler": "teacher, adaptive solve", "score": score(phi)}]
    one = None
    for k in (int(v) for v in args.steps.split(",")):
        x = jumps(start, [t0 + (1 - t0) * i / k for i in range(k + 1)])
        one = x if k == 1 else one
        rows.append({"sampler": f"map, N = {k}", "score": score(x)})
    states = {u: teacher(start, t0, u) for u in (t0 + (1 - t0) * float(v) for v in args.splits.split(","))}
    for u, phi_u in states.items():
        late, early = jumps(phi_u, [u, 1.0]), teacher(jumps(start, [t0, u]), u, 1.0)
        rows.append({"sampler": f"teacher to {u:g}, map {u:g} → 1", "score": score(late)})
        rows.append({"sampler": f"map {t0:g} → {u:g}, teacher to 1", "score": score(early)})
    fresh = at_t0(noise(args.n, run.source.shape, m.sigma0, 4321))
    jumps_rows = per_sample_jumps(m, start, fresh, t0, states | {1.0: phi}, getattr(run.cfg.objective, "square", False))
    if one is not None:
        err = (one - phi).flatten(1).norm(dim=1)
        far = err > args.tail
        radius = z.flatten(1).norm(dim=1) / m.sigma0
        rows.append({"sampler": f"map, N = 1, the {float(far.float().mean()):.2%} farther than {args.tail:g} "
                                f"from Φ(z) replaced by Φ(z)",
                     "score": score(torch.where(far.view(-1, *[1] * (one.dim() - 1)), phi, one)),
                     "note": f"|z|/σ0 deciles 1/5/9: those {deciles(radius[far])}, all {deciles(radius)}; distance to "
                             f"Φ(z) median {float(err.median()):.4f}, 99 % {float(err.quantile(0.99)):.4f}"})
    out = Path(args.out)
    cmd = "OMP_NUM_THREADS=1 python " + shlex.join(["benchmarks/map_segments.py", *sys.argv[1:]])
    against = "its own velocity v(x, t, t)" if teacher_dir == args.run else f"its teacher `{teacher_dir}`"
    text = (f"# Where the few-step error lives: `{args.run}` against {against}\n\n"
            f"Command: `{cmd}`\n\nThe same {args.n} noise draws through every row; score: KL(target ‖ model) on "
            "the 50×50 grid (2-D) or the energy distance.\n\n" + markdown_table(rows)
            + "\nPer sample: distance to the reference flow Φ over σ0 √D, the noise's scale; for a map on the "
              "square, the energy distance of its backward states to fresh noise, z's own the floor.\n\n"
            + markdown_table(jumps_rows))
    write_report(out, {"run": args.run, "teacher": str(teacher_dir), "rows": rows, "jumps": jumps_rows}, text)
    print(text)


if __name__ == "__main__":
    main()
