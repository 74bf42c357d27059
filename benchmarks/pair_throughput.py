"""Pair generation throughput against the teacher's raw forward throughput, side by side.

Teacher: a freshly initialised velocity MLP of the benchmark size (128×3, 2-D; the weights do not change the
cost) saved as a run; sampler: EDM Heun, 18 steps = 35 NFE. "Raw": ``teacher_sampler`` on noise already in
memory, batch after batch, nothing written. "Pairs": ``generate_pairs`` end to end (per-sample seeded noise,
the same sampler, shards written atomically, sha256, manifest). The same N, batch size and thread count;
the target is pairs within 10% of raw (I/O must not dominate). Two repeats, best of each.
CPU budget: about 2 minutes on one core.
    python benchmarks/pair_throughput.py     # writes docs/benchmarks/pair_throughput.{md,json}
    python benchmarks/pair_throughput.py --n 2048 --out /tmp/pt     # a smoke test
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from flowmaps.app.evaluate import markdown_table, save_rows
from flowmaps.pairs.generate import generate_pairs
from flowmaps.run.build import pair_teacher
from flowmaps.run.config import parse_config
from flowmaps.run.trainer import train

ROOT_DIR = Path(__file__).resolve().parents[1]
BATCH, SHARD = 4096, 8192


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=16_384, help="pairs per repeat")
    p.add_argument("--out", default=str(ROOT_DIR / "docs" / "benchmarks" / "pair_throughput"), help="output stem")
    args = p.parse_args()
    n = args.n
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    try:
        cfg = parse_config({"data": {"kind": "toy", "name": "checker"}, "model": {"width": 128, "depth": 3},
                            "objective": {"method": "edm"}, "train": {"steps": 1, "batch_size": 16}})
        train(cfg, tmp / "teacher", progress=False)
        teacher = pair_teacher(tmp / "teacher", "edm", 18)
        raw, pairs = [], []
        for rep in range(2):
            z = teacher.sigma0 * torch.randn(n, 2)
            t = time.perf_counter()
            for a in range(0, n, BATCH):
                teacher.phi(z[a: a + BATCH])
            raw.append(n / (time.perf_counter() - t))
            t = time.perf_counter()
            generate_pairs(teacher, n, tmp / f"store{rep}", solver="edm", steps=18, shard_size=SHARD,
                           batch_size=BATCH, progress=False)
            pairs.append(n / (time.perf_counter() - t))
            print(f"repeat {rep}: raw {raw[-1]:.0f}/s, pairs {pairs[-1]:.0f}/s", flush=True)
        rows = [{"what": "teacher forward only (35 NFE)", "samples_per_s": max(raw)},
                {"what": "flowmaps pairs end to end", "samples_per_s": max(pairs)},
                {"what": "pairs / raw", "samples_per_s": max(pairs) / max(raw)}]
        save_rows(args.out, rows)
        print(markdown_table(rows, f"Pair generation, N={n}, batch {BATCH}, MLP 128×3, EDM Heun 35 NFE, 1 thread"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
