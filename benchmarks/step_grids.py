"""Which 2-step grid: a flow map's step times are chosen after training, so each trained map is scored on the
uniform grid ``0, 1/2, 1`` and on grids that split the path earlier or later, ``0, u, 1``.

    OMP_NUM_THREADS=1 python benchmarks/step_grids.py --runs runs/h2_wave/wave/lmd runs/h2_moons/moons/lsd \
        --out docs/benchmarks/step_grids

Each run is scored as ``benchmarks/heldout.py`` scores it (KL on the 50×50 grid in 2-D, the energy distance in
more dimensions; same seed and sample count), with its teacher's adaptive solve beside it where the run sits in a
``heldout.py`` root (``<run>/../fm/heldout_eval_n<N>.json``). Scores are cached per run (``step_grids_n<N>.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from flowmaps.app.evaluate import evaluate
from flowmaps.io.files import write_report, write_text
from flowmaps.run.build import load_run

SPLITS = (0.25, 0.4, 0.5, 0.6, 0.75)


def score(row: dict) -> float:
    return row["kl"] if "kl" in row else row["energy"]


def run_scores(run_dir: Path, n: int) -> dict[str, float]:
    cache = run_dir / f"step_grids_n{n}.json"
    done = json.loads(cache.read_text()) if cache.is_file() else {}
    todo = [u for u in SPLITS if f"{u:g}" not in done]
    if todo:
        run = load_run(run_dir)
        for u in todo:
            rows = evaluate(run.model, run.source, None, n, solvers=("map",), adaptive=False,
                            grid=torch.tensor([0.0, u, 1.0]))
            done[f"{u:g}"] = score(rows[0])
        write_text(cache, json.dumps(done))
    return {f"{u:g}": done[f"{u:g}"] for u in SPLITS}


def teacher_score(run_dir: Path, n: int) -> float | None:
    cached = run_dir.parent / "fm" / f"heldout_eval_n{n}.json"
    return score(json.loads(cached.read_text())["rows"][0]) if cached.is_file() else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, help="flow-map run directories")
    p.add_argument("--n", type=int, default=64_000, help="samples per score")
    p.add_argument("--out", default="docs/benchmarks/step_grids")
    args = p.parse_args()
    result = {}
    for r in args.runs:
        run_dir = Path(r)
        result[r] = {"teacher": teacher_score(run_dir, args.n), "scores": run_scores(run_dir, args.n)}
        print(r, result[r], flush=True)
    head = " | ".join(f"0, {u:g}, 1" for u in SPLITS)
    lines = ["# Which 2-step grid", "", f"Command: `OMP_NUM_THREADS=1 python benchmarks/step_grids.py --runs "
             f"{' '.join(args.runs)} --n {args.n} --out {args.out}`", "",
             "Score at N = 2 on the grid `0, u, 1` (KL on the 50×50 grid in 2-D, energy distance in more "
             f"dimensions; {args.n} samples), in brackets over the teacher's adaptive solve; best per run in bold.",
             "", f"| run | teacher | {head} |", "|---|---|" + "---|" * len(SPLITS)]
    for r, v in result.items():
        best = min(v["scores"].values())
        cells = []
        for s in v["scores"].values():
            text = f"{s:.3g}" + (f" ({s / v['teacher']:.2f}×)" if v["teacher"] else "")
            cells.append(f"**{text}**" if s == best else text)
        teacher = f"{v['teacher']:.3g}" if v["teacher"] else "–"
        lines.append(f"| {r} | {teacher} | " + " | ".join(cells) + " |")
    write_report(args.out, result, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
