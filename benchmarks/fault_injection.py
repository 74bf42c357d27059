"""Fault injection: SIGKILL a command at random instants, rerun the same command, compare with an uninterrupted run.

    PYTHONPATH=src python benchmarks/fault_injection.py                 # 20 kills of training
    PYTHONPATH=src python benchmarks/fault_injection.py --kills 100 --seed 1 --json out.json

One function per target (``kill_training``; pair generation gets its own, see the marked place below).
For training, an uninterrupted reference run is trained once; then fresh runs of the same command
(``flowmaps train CFG --out RUN --resume``) are killed with SIGKILL, up to ``--per-run`` times each, and
finished by the same command: a fifth of the kills at a random instant of startup (import, validation,
restore), a fifth the moment a checkpoint's temporary file appears (inside the atomic write), the rest at a
random instant of the remaining training steps, once the process has begun them.
After every kill the run directory must hold a loadable checkpoint (once one was written); at the end every
run must equal the reference bit for bit (model, EMA, optimizer, objective state, RNG states, step counters)
and its metrics.csv must equal the reference's (all columns but elapsed_s). It reports runs, kills, resumes,
where the kills landed (startup, training, inside a checkpoint write) and mismatches, which must be 0;
the exit status is 1 otherwise.

Budget: the default 20 kills took 4.4 minutes of wall time (2 minutes of CPU) on 2 shared CPU cores; each
launch pays the ~2-4 s import of torch. CPU only, one thread per process.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flowmaps.checkpoint import CheckpointError, load_state, state_diff

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "checker_fm.yaml"
# the recipe made tiny: a few hundred steps of a small MLP, a checkpoint every 5 steps, a metrics row every step
TINY = ["train.steps=300", "train.batch_size=64", "model.width=32", "model.depth=2", "model.time_dim=8",
        "train.log_every=1", "train.ckpt_every=5", "train.threads=1", "train.warmup=20"]
CKPT = "checkpoint.safetensors"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def _metrics(run: Path) -> list[dict]:
    """metrics.csv without the wall-clock column."""
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in csv.DictReader(f)]


def _train_time(run: Path) -> float:
    with open(run / "metrics.csv", newline="") as f:
        return float(list(csv.DictReader(f))[-1]["elapsed_s"])


def _kill_at(proc: subprocess.Popen, started, delay: float, poll: float = 0.005) -> None:
    """SIGKILL ``proc`` ``delay`` seconds after ``started()`` first holds (unless it ends first)."""
    while not started():
        if proc.poll() is not None:
            return
        time.sleep(poll)
    if delay <= 0:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def kill_training(kills: int = 20, per_run: int = 5, seed: int = 0, work: Path | None = None,
                  config: Path = CONFIG, overrides: list[str] | None = None, startup_share: float = 0.2,
                  write_share: float = 0.2) -> dict:
    """Kill ``flowmaps train`` ``kills`` times at random instants over fresh runs; count mismatches with a reference."""
    rng = random.Random(seed)
    work = Path(work or tempfile.mkdtemp(prefix="fault_training_"))
    overrides = TINY if overrides is None else overrides

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "flowmaps.cli", "train", str(config), *overrides, "--out", str(out),
                "--resume", "--quiet"]

    ref = work / "reference"
    shutil.rmtree(ref, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(command(ref), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while not (ref / "metrics.csv").exists() and proc.poll() is None:
        time.sleep(0.005)
    startup_s = time.perf_counter() - t0  # until the first training step was logged
    if proc.wait() != 0:
        raise RuntimeError(f"reference run failed: {proc.stderr.read().decode()[-500:]}")
    wall = time.perf_counter() - t0
    train_s = _train_time(ref)
    reference, ref_rows = load_state(ref / CKPT), _metrics(ref)
    steps = int(reference["step"])

    report = {"target": "training", "runs": 0, "kills": 0, "resumes": 0, "resumes_from_checkpoint": 0,
              "kills_in_startup": 0, "kills_in_training": 0, "kills_inside_checkpoint_write": 0,
              "unloadable_after_kill": 0, "failed_commands": 0, "mismatches": 0, "mismatch_details": [],
              "reference_steps": steps, "reference_wall_s": round(wall, 2)}
    while report["kills"] < kills:
        run = work / f"run{report['runs']:03d}"
        shutil.rmtree(run, ignore_errors=True)
        report["runs"] += 1
        killed_here = 0
        while True:
            done = load_state(run / CKPT)["step"] if (run / CKPT).exists() else 0
            if killed_here:
                report["resumes"] += 1
                report["resumes_from_checkpoint"] += int((run / CKPT).exists())
            launched = time.time()
            proc = subprocess.Popen(command(run), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if killed_here >= per_run or report["kills"] >= kills:
                _, err = proc.communicate()
                if proc.returncode != 0:
                    report["failed_commands"] += 1
                    report["mismatch_details"].append(f"{run.name}: exit {proc.returncode}: {err.decode()[-300:]}")
                break
            metrics = run / "metrics.csv"
            phase = rng.random()
            if phase < startup_share:  # during startup: imports, validation, restore, lock
                _kill_at(proc, lambda: True, rng.uniform(0, startup_s))
            elif phase < startup_share + write_share:  # the moment a checkpoint's temporary file exists
                _kill_at(proc, lambda: any(run.glob(f".{CKPT}.*.tmp")) if run.exists() else False, 0.0, poll=0.0005)
            else:  # during training: once this process touched metrics.csv, within the remaining steps
                started = lambda: metrics.exists() and metrics.stat().st_mtime >= launched  # noqa: E731
                _kill_at(proc, started, rng.uniform(0, train_s * (1 - done / steps)))
            if proc.returncode != -signal.SIGKILL:  # finished before the kill
                if proc.returncode != 0:
                    report["failed_commands"] += 1
                break
            killed_here += 1
            report["kills"] += 1
            in_training = metrics.exists() and metrics.stat().st_mtime >= launched
            report["kills_in_training" if in_training else "kills_in_startup"] += 1
            report["kills_inside_checkpoint_write"] += int(any(run.glob(f".{CKPT}.*.tmp"))) if run.exists() else 0
            if (run / CKPT).exists():
                try:
                    load_state(run / CKPT)
                except CheckpointError as err:
                    report["unloadable_after_kill"] += 1
                    report["mismatch_details"].append(f"{run.name}: {err}")
        diff = state_diff(reference, load_state(run / CKPT)) if (run / CKPT).exists() else ["no checkpoint"]
        if not diff and _metrics(run) != ref_rows:
            diff = ["metrics.csv"]
        if diff:
            report["mismatches"] += 1
            report["mismatch_details"].append(f"{run.name}: differs at {diff[:5]}")
    return report


# ----- pair generation -----------------------------------------------------------------------------------------
# >>> PLACE FOR kill_pairs(kills, per_run, seed, work, ...) -> dict, with the same report keys: run
# >>> `flowmaps pairs ...` uninterrupted once, kill fresh runs of the same command at random instants, rerun
# >>> until done, and count as mismatches any store that does not hold exactly N distinct indices, has a shard
# >>> whose checksum fails, or differs from the reference store. Then add it to TARGETS.

TARGETS = {"training": kill_training}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, of {', '.join(TARGETS)}")
    p.add_argument("--kills", type=int, default=20, help="kills per target")
    p.add_argument("--per-run", type=int, default=5, help="kills of one run before it is let finish")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, help="folder for the runs (default: a new temporary folder)")
    p.add_argument("--json", type=Path, help="also write the reports here")
    args = p.parse_args(argv)
    reports = []
    for name in args.targets.split(","):
        t0 = time.perf_counter()
        work = args.work / name if args.work else None
        report = TARGETS[name](kills=args.kills, per_run=args.per_run, seed=args.seed, work=work)
        report["wall_s"] = round(time.perf_counter() - t0, 1)
        reports.append(report)
        print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(reports, indent=1))
    bad = sum(r["mismatches"] + r["unloadable_after_kill"] + r["failed_commands"] for r in reports)
    print(f"fault injection: {sum(r['runs'] for r in reports)} runs, {sum(r['kills'] for r in reports)} kills, "
          f"{sum(r['resumes'] for r in reports)} resumes, {bad} mismatches/failures")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
