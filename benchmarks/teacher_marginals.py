"""Which coupling's interpolant has the teacher's marginals: where a distillation should draw its states ``I_s``.

A flow-matching teacher trained on pairs coupled by π carries the noise along ``dx/dt = b(x, t)`` through the
marginals of the interpolant ``I_u = (1 − u) x0 + u x1`` under π, not under any other coupling: the ends agree
(noise at u = 0, data at u = 1) and the middle does not. A distillation (LMD, EMD, PFMM) regresses its map at
states ``I_s``; drawn from another coupling than the teacher's they lie off the states its few-step samplers
start their later jumps from.

For each teacher run and each time u: the energy distance of the teacher's adaptive solve ``Φ_{0,u}(z)`` to the
interpolant ``I_u`` of independent pairs and of pairs coupled as the teacher's recipe couples them (its
``objective.coupling``, ``coupling_block`` and batch), beside the floor (``Φ_{0,u}`` of other noise), and the
states' root-mean-square radius ``|x| / √D``.

    OMP_NUM_THREADS=1 python benchmarks/teacher_marginals.py --runs runs/x_otb256/gmm32d/fm,runs/x_otb256/rings/fm \\
        --out docs/benchmarks/teacher_marginals
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from flowmaps.app.evaluate import markdown_table
from flowmaps.core.couplings import couple
from flowmaps.core.metrics.distribution import energy_distance
from flowmaps.core.sampling import noise, solve_adaptive
from flowmaps.io.files import write_report
from flowmaps.run.build import load_run


def interpolant(run, u: float, coupling: str, block: int, batch: int, n: int, seed: int) -> torch.Tensor:
    """``I_u`` of ``n`` pairs of fresh noise and data, coupled by ``coupling`` in batches of ``batch`` (planned in
    blocks of ``block``), as the training loop draws them."""
    torch.manual_seed(seed)
    m, out = run.model, []
    for _ in range(0, n, batch):
        x1 = run.source.sample(batch)["x1"]
        x0 = m.sigma0 * torch.randn_like(x1)
        x0, x1, _ = couple(coupling, x0, x1, block=block)
        out.append(m.interp(x0, x1, torch.full((batch,), u, dtype=x1.dtype)))
    return torch.cat(out)[:n]


def rms(x: torch.Tensor) -> float:
    """``sqrt(E |x|² / D)``."""
    return float(x.flatten(1).pow(2).mean().sqrt())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True, help="flow-matching teacher runs, comma-separated")
    ap.add_argument("--times", default="0.25,0.5,0.75")
    ap.add_argument("--n", type=int, default=4000, help="samples per set (the energy distance is O(n²))")
    ap.add_argument("--out", required=True, help="path stem of the .md / .json table")
    args = ap.parse_args()
    torch.set_grad_enabled(False)

    rows = []
    for path in args.runs.split(","):
        run = load_run(path)
        o, batch = run.cfg.objective, run.cfg.train.batch_size
        if run.t0:
            raise SystemExit(f"{path}: a teacher with t0 > 0 (an EDM conversion); this compares linear interpolants")
        z, other = (noise(args.n, run.source.shape, run.model.sigma0, s) for s in (1234, 4321))
        for u in (float(v) for v in args.times.split(",")):
            phi, floor = (solve_adaptive(run.model.velocity, x, 0.0, u).x for x in (z, other))
            ind = interpolant(run, u, "independent", 0, batch, args.n, 7)
            own = interpolant(run, u, o.coupling, o.coupling_block, batch, args.n, 7)
            rows.append({"teacher": path, "coupling": f"{o.coupling}, block {o.coupling_block or batch} of {batch}",
                         "u": u, "floor": energy_distance(phi, floor),
                         "independent": energy_distance(phi, ind), "the teacher's": energy_distance(phi, own),
                         "rms Φ": rms(phi), "rms independent": rms(ind), "rms the teacher's": rms(own)})
            print(rows[-1], flush=True)
    cmd = "OMP_NUM_THREADS=1 python " + shlex.join(["benchmarks/teacher_marginals.py", *sys.argv[1:]])
    text = (f"# Which coupling's interpolant has the teacher's marginals\n\nCommand: `{cmd}`\n\n"
            f"Energy distance of the teacher's states Φ_{{0,u}}(z) ({args.n} draws, adaptive solve) to the "
            "interpolant I_u of independent pairs and of pairs coupled as the teacher was trained; the floor is "
            "Φ_{0,u} of other noise. rms: sqrt(E|x|²/D).\n\n" + markdown_table(rows))
    write_report(Path(args.out), {"rows": rows}, text)
    print(text)


if __name__ == "__main__":
    main()
