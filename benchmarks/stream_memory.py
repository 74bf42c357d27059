"""Peak memory of training on a prepared image store does not grow with the store: synthetic 32×32 RGB stores of
1 GB and 4 GB, 200 training steps of a small UNet each, streamed by 2 loader workers.

    OMP_NUM_THREADS=1 python benchmarks/stream_memory.py --work /tmp/stream_memory      # needs ~5.2 GB of disk

Each store is written by :func:`flowmaps.data.prepare.prepare` from seeded random pixels (no intermediate array),
then trained on by a fresh ``flowmaps train`` process (FM, UNet 32 ch (1, 2), batch 64, ``data.workers=2``),
which reports its own peak resident memory (``VmHWM``) and that of its loader workers (the largest child,
``RUSAGE_CHILDREN``); the harness also samples the summed RSS of the whole process tree every 0.1 s (shared pages
counted once per process, so an upper bound). For contrast, fresh processes read the same random batches with the
store's positional reads and through a memory map of its shards. The stores are deleted at the end unless
``--keep``. Writes ``docs/benchmarks/stream_memory.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from flowmaps.data.prepare import prepare
from flowmaps.io.files import write_report

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (3, 32, 32)
CHILD = """
import json, resource, sys
from flowmaps.run.config import parse_config
from flowmaps.run.trainer import train
cfg = parse_config(json.loads(sys.argv[1]))
train(cfg, sys.argv[2], progress=False)
with open("/proc/self/status") as f:
    hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM"))
print(json.dumps({"main_kib": hwm, "worker_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


READ = """
import json, sys
import numpy as np
from flowmaps.data.stream import ImageStore, batch_positions
from flowmaps.io.shards import shard_count, shard_file
st = ImageStore(sys.argv[1])
maps = [np.load(st.root / shard_file(k, "x"), mmap_mode="r") for k in range(shard_count(st.manifest))]
for step in range(int(sys.argv[2])):
    idx = batch_positions(len(st), 64, 0, step)
    if sys.argv[3] == "map":
        rows = np.stack([maps[i // st.size][i % st.size] for i in idx])
    else:
        rows = st.get(idx)["x"]
with open("/proc/self/status") as f:
    print(json.dumps({"kib": next(int(l.split()[1]) for l in f if l.startswith("VmHWM"))}))
"""


def read_peak_kib(store: Path, steps: int, how: str) -> int:
    """Peak RSS of a process that reads ``steps`` random batches of 64 rows through a memory map or ``get``."""
    out = subprocess.run([sys.executable, "-c", READ, str(store), str(steps), how], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
    return json.loads(out.strip().splitlines()[-1])["kib"]


class Synthetic(Dataset):
    """Seeded random uint8 images, a whole shard per request (the batches of :func:`prepare`)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitems__(self, idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([7, idx[0]])
        return rng.integers(0, 256, (len(idx), *SHAPE), dtype=np.uint8), np.asarray(idx, np.int64) % 10


def make_store(path: Path, gigabytes: float) -> float:
    n = int(gigabytes * 1e9 / np.prod(SHAPE))
    t0 = time.perf_counter()
    prepare(Synthetic(n), {"source": {"synthetic": n}, "num_classes": 10, "classes": []}, path, shard_size=16384,
            progress=False)
    return time.perf_counter() - t0


def tree_rss_kib(pid: int) -> int:
    """Summed VmRSS of ``pid`` and its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS"))
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, StopIteration):
            continue
    return total


def train_on(store: Path, run: Path, steps: int) -> dict:
    cfg = {"seed": 0, "data": {"kind": "prepared", "path": str(store), "hflip": True, "workers": 2},
           "model": {"net": "unet", "channels": 32, "mult": [1, 2], "num_res_blocks": 1},
           "objective": {"method": "fm"},
           "train": {"steps": steps, "batch_size": 64, "lr": 2e-4, "log_every": 50, "ckpt_every": steps,
                     "device": "cpu"}}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg), str(run)], stdout=subprocess.PIPE,
                            text=True, env=env)
    peak_tree = 0
    while proc.poll() is None:
        peak_tree = max(peak_tree, tree_rss_kib(proc.pid))
        time.sleep(0.1)
    out = proc.stdout.read()
    if proc.returncode:
        raise SystemExit(f"training on {store} failed ({proc.returncode})")
    got = json.loads(out.strip().splitlines()[-1])
    return {**got, "tree_kib": peak_tree, "seconds": time.perf_counter() - t0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/stream_memory")
    p.add_argument("--sizes", default="1,4", help="store sizes in GB")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--keep", action="store_true", help="keep the stores")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "stream_memory"))
    args = p.parse_args()
    work = Path(args.work)
    rows = []
    for gb in (float(s) for s in args.sizes.split(",")):
        store = work / f"store_{gb:g}GB"
        made = make_store(store, gb)
        size = sum(f.stat().st_size for f in store.glob("shard-*.npy")) / 1e9
        r = train_on(store, work / f"run_{gb:g}GB", args.steps)
        rows.append({"store_GB": round(size, 3), "images": int(gb * 1e9 / np.prod(SHAPE)), "prepare_s": made,
                     "train_s": r["seconds"], "main_peak_MB": r["main_kib"] / 1024,
                     "worker_peak_MB": r["worker_kib"] / 1024, "tree_peak_MB": r["tree_kib"] / 1024,
                     "read_pread_MB": read_peak_kib(store, args.steps, "pread") / 1024,
                     "read_mmap_MB": read_peak_kib(store, args.steps, "map") / 1024})
        print(rows[-1], flush=True)
        if not args.keep:
            shutil.rmtree(store)
            shutil.rmtree(work / f"run_{gb:g}GB")
    lo, hi = rows[0], rows[-1]
    verdict = {k: hi[k] / lo[k] for k in ("main_peak_MB", "worker_peak_MB", "tree_peak_MB", "read_pread_MB",
                                          "read_mmap_MB")}
    text = ["# Training memory on prepared stores of growing size", "",
            f"Command: `OMP_NUM_THREADS=1 python benchmarks/stream_memory.py --work {args.work} --sizes {args.sizes} "
            f"--steps {args.steps}`", "",
            f"Synthetic 32×32 RGB stores, FM with a UNet 32 ch (1, 2), batch 64, {args.steps} steps, 2 loader workers, "
            "one CPU thread. Peak resident memory of the training process (VmHWM), of its largest loader worker "
            "(RUSAGE_CHILDREN), and of the whole process tree (summed RSS sampled every 0.1 s; shared pages counted "
            "in every process, so an upper bound). The last two columns read the same "
            f"{args.steps} random batches of 64 images in a fresh process without training, with the store's "
            "positional reads (`ShardReader.get`, what training uses) and through a NumPy memory map of the "
            "shards instead: its peak resident memory.", "",
            "| store (GB) | images | prepare (s) | train (s) | training process peak (MB) | worker peak (MB) | "
            "process tree peak (MB) | reads: positional (MB) | reads: memory map (MB) |",
            "|---|---|---|---|---|---|---|---|---|"]
    text += [f"| {r['store_GB']:.2f} | {r['images']:,} | {r['prepare_s']:.0f} | {r['train_s']:.0f} | "
             f"{r['main_peak_MB']:.0f} | {r['worker_peak_MB']:.0f} | {r['tree_peak_MB']:.0f} | "
             f"{r['read_pread_MB']:.0f} | {r['read_mmap_MB']:.0f} |" for r in rows]
    text += ["", "Largest over smallest store: " + ", ".join(f"{k.removesuffix('_MB').replace('_', ' ')} "
                                                              f"{v:.3f}×" for k, v in verdict.items()) + "."]
    write_report(args.out, {"rows": rows, "ratio": verdict}, "\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
