"""Does PFMM's last round fit its target? The last round regresses ``X_{s,t}`` onto ``X̌_{u,t} ∘ X̌_{s,u}``,
``u = (s + t)/2``, with ``X̌`` the model frozen at the round's start; so the target of the 1-step map is the frozen
copy's 2-step sample, and that of the 2-step sample its 4-step sample. Scores both beside the trained model (EMA
weights), as ``benchmarks/heldout.py`` scores (KL on the 50×50 grid in 2-D, energy distance in more dimensions).

    OMP_NUM_THREADS=1 python benchmarks/pfmm_target.py --runs runs/heldout/moons/pfmm --out docs/benchmarks/pfmm_target
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from flowmaps.app.evaluate import evaluate
from flowmaps.io.checkpoint import load_state
from flowmaps.io.files import write_report
from flowmaps.run.build import load_run


def score(row: dict) -> float:
    return row["kl"] if "kl" in row else row["energy"]


def run_scores(run_dir: Path, n: int) -> dict[str, list[float]]:
    run = load_run(run_dir)
    extra = load_state(run_dir / "checkpoint.safetensors")["objective"].get("_extra_state") or {}
    if "frozen" not in extra:
        raise SystemExit(f"{run_dir}: no frozen copy in its checkpoint (not a PFMM run past round 0)")
    frozen = copy.deepcopy(run.model)
    frozen.load_state_dict(extra["frozen"])

    def at(model, steps):
        return [score(r) for r in evaluate(model, run.source, steps, n, adaptive=False)]

    return {"model": at(run.model, [1, 2]), "target": at(frozen, [2, 4]), "round": int(extra["round"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, help="PFMM run directories")
    p.add_argument("--n", type=int, default=64_000, help="samples per score")
    p.add_argument("--out", default="docs/benchmarks/pfmm_target")
    args = p.parse_args()
    result = {r: run_scores(Path(r), args.n) for r in args.runs}
    lines = ["# PFMM: the last round against its target", "",
             f"Command: `OMP_NUM_THREADS=1 python benchmarks/pfmm_target.py --runs {' '.join(args.runs)} --n {args.n} "
             f"--out {args.out}`", "",
             "The model's 1- and 2-step samples beside their targets in the last round: the frozen copy's 2- and "
             f"4-step samples (KL on the 50×50 grid in 2-D, energy distance in more dimensions; {args.n} samples).", "",
             "| run | round | model N = 1 | its target (frozen, N = 2) | model N = 2 | its target (frozen, N = 4) |",
             "|---|---|---|---|---|---|"]
    for r, v in result.items():
        (m1, m2), (t1, t2) = v["model"], v["target"]
        lines.append(f"| {r} | {v['round']} | {m1:.3g} | {t1:.3g} | {m2:.3g} | {t2:.3g} |")
    write_report(args.out, result, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
