"""Does the streaming loader keep up with training? Steps/s of a small UNet training step on the CPU fed from a
prepared store by 2 loader workers, against the same step fed from the same images held in memory, side by side.

    OMP_NUM_THREADS=1 python benchmarks/stream_throughput.py

The store holds seeded random 32×32 RGB images (``--images``); both sources flip half of every batch. The two
feeds alternate in ``--rounds`` rounds of ``--steps`` steps (after a warm-up), so a machine whose load changes
affects both alike; steps/s is the total over the rounds. Writes ``docs/benchmarks/stream_throughput.{md,json}``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from flowmaps.data.prepare import ArrayImages, prepare
from flowmaps.data.sources import TensorSource
from flowmaps.data.stream import ImageStore, StoreSource
from flowmaps.io.files import write_report
from flowmaps.run.config import parse_config
from flowmaps.run.trainer import build_state, train_step

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="steps per round and feed")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "stream_throughput"))
    args = p.parse_args()
    torch.set_num_threads(1)
    u8 = np.random.default_rng(0).integers(0, 256, (args.images, 3, 32, 32), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        prepare(ArrayImages(u8, None, None, "synthetic"), {"source": "synthetic", "num_classes": 0, "classes": []},
                Path(tmp) / "store", shard_size=4096, progress=False)
        streamed = StoreSource(ImageStore(Path(tmp) / "store"), flip=True, workers=args.workers)
        memory = TensorSource(torch.from_numpy(u8).float() / 127.5 - 1, "memory", flip=True)
        cfg = parse_config({"data": {"kind": "images", "name": "digits"},
                            "model": {"net": "unet", "channels": 32, "mult": [1, 2], "num_res_blocks": 1},
                            "objective": {"method": "fm"}, "train": {"batch_size": args.batch, "device": "cpu"}})
        torch.manual_seed(0)
        state = build_state(cfg, memory)
        feeds = {"memory": memory.batches(args.batch), "store, 2 workers": streamed.batches(args.batch, 0, 0)}
        seconds = dict.fromkeys(feeds, 0.0)
        for it in feeds.values():  # warm-up: the loader's workers start, the step's kernels are chosen
            for _ in range(5):
                train_step(state, next(it))
        for _ in range(args.rounds):
            for name, it in feeds.items():
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    train_step(state, next(it))
                seconds[name] += time.perf_counter() - t0
    steps = args.rounds * args.steps
    rows = [{"feed": name, "steps": steps, "steps_per_s": steps / s} for name, s in seconds.items()]
    ratio = rows[1]["steps_per_s"] / rows[0]["steps_per_s"]
    text = ["# Streaming loader against data in memory", "",
            f"Command: `OMP_NUM_THREADS=1 python benchmarks/stream_throughput.py --images {args.images} --batch "
            f"{args.batch} --steps {args.steps} --rounds {args.rounds} --workers {args.workers}`", "",
            f"FM training step of a UNet 32 ch (1, 2) on 32×32 RGB batches of {args.batch}, one CPU thread for the "
            f"step; {args.images:,} seeded random images, flipped on the fly; the feeds alternate in {args.rounds} "
            f"rounds of {args.steps} steps on a shared 2-core machine.", "",
            "| feed | steps | steps/s |", "|---|---|---|"]
    text += [f"| {r['feed']} | {r['steps']} | {r['steps_per_s']:.3f} |" for r in rows]
    text += ["", f"Streamed over in memory: {ratio:.3f}× the steps/s."]
    write_report(args.out, {"args": vars(args), "rows": rows, "ratio": ratio}, "\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
