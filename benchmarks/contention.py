"""Training beside a busy process: the slowdown of a fixed training run when another 2-thread process shares the
CPU cores, for several CPU thread policies, measured side by side.

    OMP_NUM_THREADS= python benchmarks/contention.py            # writes docs/benchmarks/contention.{md,json}

The fixed training is the checkerboard teacher's recipe (``configs/checker_fm.yaml``: MLP 4×256, batch 1,024) with
the independent coupling (the network's step alone, as before the recipe's block OT),
``--steps`` steps, timed by the loop itself (``elapsed_s`` of ``metrics.csv``, startup excluded). The busy process
is another training of the same recipe with torch's default threads (2 on a 2-core machine) and the default
OpenMP wait policy, started first and kept running. Policies, each a fresh process:

- ``torch default``: torch's thread count (one per core) and GNU OpenMP's default waits (a waiting thread spins
  300,000 times before it sleeps: ``GOMP_SPINCOUNT=300000``, which is also what stops flowmaps from choosing) —
  what flowmaps did before it chose a policy;
- ``passive``: the same threads, ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep at once);
- ``short spin``: the same threads, ``GOMP_SPINCOUNT=300``;
- ``one thread``: the default waits, ``train.threads=1``;
- ``flowmaps``: the command line's own policy (``flowmaps.app.cli.quiet_waits``: ``GOMP_SPINCOUNT=1000``),
  nothing set by hand.

Each policy runs alone, then beside the busy process, ``--rounds`` times in turn; the table reports the median
steps/s and the slowdown (alone / beside). Losing half the cores should cost at most about half the speed:
a slowdown of 2 is the fair share, and the target is at most 2.5.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flowmaps.app.evaluate import markdown_table, save_rows
from flowmaps.io.files import write_text

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "checker_fm.yaml"
DEFAULT_WAITS = {"GOMP_SPINCOUNT": "300000"}
POLICIES = {
    "torch default": (DEFAULT_WAITS, []),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, []),
    "short spin": ({"GOMP_SPINCOUNT": "300"}, []),
    "one thread": (DEFAULT_WAITS, ["train.threads=1"]),
    "flowmaps": ({}, []),
}


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    return {**env, **extra}


def _train(out: Path, steps: int, env: dict[str, str], overrides: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flowmaps", "train", str(CONFIG), "--out", str(out), "--quiet",
                             f"train.steps={steps}", f"train.log_every={steps}", f"train.ckpt_every={steps}",
                             "objective.coupling=independent", *overrides],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _steps_per_s(out: Path, steps: int) -> float:
    with open(out / "metrics.csv", newline="") as f:
        return steps / float(list(csv.DictReader(f))[-1]["elapsed_s"])


def measure(name: str, steps: int, work: Path) -> float:
    env, overrides = POLICIES[name]
    out = work / name.replace(" ", "_")
    shutil.rmtree(out, ignore_errors=True)
    proc = _train(out, steps, _env(env), overrides)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: {err.decode()[-400:]}")
    return _steps_per_s(out, steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "contention"))
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="contention_"))
    alone: dict[str, list[float]] = {n: [] for n in POLICIES}
    beside: dict[str, list[float]] = {n: [] for n in POLICIES}
    try:
        for _ in range(args.rounds):
            for name in POLICIES:
                alone[name].append(measure(name, args.steps, work))
            busy = _train(work / "busy", 10**7, _env(DEFAULT_WAITS), [])
            try:
                time.sleep(8)  # past its start-up: the busy process trains
                for name in POLICIES:
                    beside[name].append(measure(name, args.steps, work))
            finally:
                busy.kill()
                busy.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for name in POLICIES:
        a, b = statistics.median(alone[name]), statistics.median(beside[name])
        rows.append({"policy": name, "alone_steps_per_s": a, "beside_steps_per_s": b, "slowdown": a / b})
        print(rows[-1], flush=True)
    save_rows(args.out, rows)
    command = "python benchmarks/contention.py " + " ".join(sys.argv[1:])
    meta = {"cpus": os.cpu_count(), "steps": args.steps, "rounds": args.rounds, "command": command}
    write_text(Path(args.out).with_name(Path(args.out).name + "_meta.json"), json.dumps(meta, indent=1))
    table = markdown_table(rows, f"training beside a busy 2-thread process, {os.cpu_count()} CPUs, "
                                 f"{args.steps} steps, median of {args.rounds} (`{command.strip()}`)")
    write_text(Path(args.out).with_suffix(".md"), table)
    print(table)


if __name__ == "__main__":
    main()
