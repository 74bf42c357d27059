"""Fault injection: SIGKILL a command at random instants, rerun the same command, compare with an uninterrupted run.

    python benchmarks/fault_injection.py                 # 20 kills of each target
    python benchmarks/fault_injection.py --kills 100 --seed 1 --json out.json

One function per target: ``kill_training`` (flow matching on the checkerboard), ``kill_distillation`` (LMD from a
teacher run), ``kill_pair_training`` (lines matching from a pair store) and ``kill_pairs`` (pair generation;
fields named for training: "training" means generating and "checkpoint write" a shard write, a resume "from
checkpoint" had shards done).
For training, an uninterrupted reference run is trained once; then fresh runs of the same command
(``python -m flowmaps train CFG --out RUN --resume``) are killed with SIGKILL, up to ``--per-run`` times each, and
finished by the same command: a fifth of the kills at a random instant of startup (import, validation,
restore), a fifth the moment a checkpoint's temporary file appears (inside the atomic write), the rest at a
random instant of the remaining training steps, once the process has begun them.
After every kill the run directory must hold a loadable checkpoint (once one was written); at the end every
run must equal the reference bit for bit (model, EMA, optimizer, objective state, RNG states, step counters)
and its metrics.csv must equal the reference's (all columns but elapsed_s). It reports runs, kills, resumes,
where the kills landed (startup, training, inside a checkpoint write) and mismatches, which must be 0;
the exit status is 1 otherwise.
For pair generation the same is done with ``flowmaps pairs TEACHER --n 3000 --shard-size 100`` on a tiny
teacher: after every kill each shard the manifest lists must pass its checksum; at the end the store must be
complete with exactly N distinct indices, every shard's checksum and noise seeds verified, no temporary file,
and the same shard checksums as the uninterrupted reference store.

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
from fnmatch import fnmatch
from functools import partial
from pathlib import Path

from flowmaps.errors import CheckpointError
from flowmaps.io.checkpoint import load_state, state_diff
from flowmaps.io.files import write_text
from flowmaps.io.shards import read_manifest
from flowmaps.pairs.store import verify_store

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "checker_fm.yaml"
# the recipe made tiny: a few hundred steps of a small MLP, a checkpoint every 5 steps, a metrics row every step
TINY = ["train.steps=300", "train.batch_size=64", "model.width=32", "model.depth=2", "model.time_dim=8",
        "train.log_every=1", "train.ckpt_every=5", "train.threads=1", "train.warmup=20"]
CKPT = "checkpoint.safetensors"


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _metrics(run: Path) -> list[dict]:
    """metrics.csv without the wall-clock column."""
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in csv.DictReader(f)]


def _train_time(run: Path) -> float:
    with open(run / "metrics.csv", newline="") as f:
        return float(list(csv.DictReader(f))[-1]["elapsed_s"])


def _has_temp(folder: Path, pattern: str) -> bool:
    """Whether ``folder`` exists and holds a file whose name matches ``pattern`` (a temporary file)."""
    return folder.exists() and any(fnmatch(p.name, pattern) for p in folder.iterdir())


def _touched_since(path: Path, t: float) -> bool:
    """Whether ``path`` exists and was modified at or after the time ``t``."""
    return path.exists() and path.stat().st_mtime >= t


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


def _reference(command: list[str], env: dict[str, str], marker: Path) -> tuple[float, float]:
    """Run ``command`` uninterrupted; return (seconds until ``marker`` appeared, total wall seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while not marker.exists() and proc.poll() is None:
        time.sleep(0.005)
    startup_s = time.perf_counter() - t0
    if proc.wait() != 0:
        raise RuntimeError(f"reference run failed: {proc.stderr.read().decode()[-500:]}")
    return startup_s, time.perf_counter() - t0


def _new_report(target: str, **reference) -> dict:
    """The counters every target reports, zeroed."""
    return {"target": target, "runs": 0, "kills": 0, "resumes": 0, "resumes_from_checkpoint": 0,
            "kills_in_startup": 0, "kills_in_training": 0, "kills_inside_checkpoint_write": 0,
            "unloadable_after_kill": 0, "failed_commands": 0, "mismatches": 0, "mismatch_details": [], **reference}


def kill_training(kills: int = 20, per_run: int = 5, seed: int = 0, work: Path | None = None,
                  config: Path = CONFIG, overrides: list[str] | None = None, startup_share: float = 0.2,
                  write_share: float = 0.2) -> dict:
    """Kill ``flowmaps train`` ``kills`` times at random instants over fresh runs; count mismatches with a reference."""
    rng = random.Random(seed)
    work = Path(work or tempfile.mkdtemp(prefix="fault_training_"))
    overrides = TINY if overrides is None else overrides

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "flowmaps", "train", str(config), *overrides, "--out", str(out),
                "--resume", "--quiet"]

    ref = work / "reference"
    shutil.rmtree(ref, ignore_errors=True)
    startup_s, wall = _reference(command(ref), _env(), ref / "metrics.csv")  # startup: until the first step logged
    train_s = _train_time(ref)
    reference, ref_rows = load_state(ref / CKPT), _metrics(ref)
    steps = int(reference["step"])

    report = _new_report("training", reference_steps=steps, reference_wall_s=round(wall, 2))
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
                _kill_at(proc, partial(_has_temp, run, f".{CKPT}.*.tmp"), 0.0, poll=0.0005)
            else:  # during training: once this process touched metrics.csv, within the remaining steps
                _kill_at(proc, partial(_touched_since, metrics, launched), rng.uniform(0, train_s * (1 - done / steps)))
            if proc.returncode != -signal.SIGKILL:  # finished before the kill
                if proc.returncode != 0:
                    report["failed_commands"] += 1
                break
            killed_here += 1
            report["kills"] += 1
            report["kills_in_training" if _touched_since(metrics, launched) else "kills_in_startup"] += 1
            report["kills_inside_checkpoint_write"] += int(_has_temp(run, f".{CKPT}.*.tmp"))
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


def _tiny_teacher(work: Path) -> Path:
    """A tiny flow-matching run (the recipe made tiny, 30 steps) in ``work/teacher``, trained once."""
    teacher = work / "teacher"
    if not (teacher / CKPT).exists():
        shutil.rmtree(teacher, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "flowmaps", "train", str(CONFIG), *TINY, "train.steps=30",
                        "--out", str(teacher), "--quiet"], env=_env(), check=True, stdout=subprocess.DEVNULL)
    return teacher


def kill_distillation(work: Path | None = None, **kw) -> dict:
    """:func:`kill_training` on Lagrangian map distillation of a tiny teacher run (pinned by its checksums)."""
    work = Path(work or tempfile.mkdtemp(prefix="fault_distillation_"))
    teacher = _tiny_teacher(work)
    over = [*TINY, "train.steps=150", "objective={method: lmd}", f"teacher={{kind: run, path: {teacher}}}"]
    return {**kill_training(work=work, overrides=over, **kw), "target": "distillation"}


def kill_pair_training(work: Path | None = None, **kw) -> dict:
    """:func:`kill_training` on lines matching trained from a pair store (shards verified on open)."""
    work = Path(work or tempfile.mkdtemp(prefix="fault_pair_training_"))
    teacher, store = _tiny_teacher(work), work / "store"
    if not (store / "manifest.json").exists():
        subprocess.run([sys.executable, "-m", "flowmaps", "pairs", str(teacher), "--n", "4000", "--out", str(store),
                        "--solver", "euler", "--steps", "4", "--shard-size", "1000", "--quiet"], env=_env(),
                       check=True, stdout=subprocess.DEVNULL)
    over = [*TINY, f"data={{kind: pairs, path: {store}}}", "objective={method: lmm, time: uniform}"]
    return {**kill_training(work=work, overrides=over, **kw), "target": "pair_training"}


# ----- pair generation -----------------------------------------------------------------------------------------
FAULT_CLI = ROOT / "tests" / "fault_cli.py"


def _store_problems(out: Path, reference: dict, n: int) -> list[str]:
    """Why the store at ``out`` is not the reference store (empty if it is)."""
    m = read_manifest(out)
    problems = [f"shard {k}: {why}" for k, why in verify_store(out, full=True, check_noise=True).items()]
    if not m["complete"]:
        problems.append("incomplete")
    starts = sorted(e["start"] for e in m["shards"].values())
    if sum(e["rows"] for e in m["shards"].values()) != n or len(set(starts)) != len(starts):
        problems.append("not exactly N distinct indices")
    if {k: e["sha256"] for k, e in m["shards"].items()} != {k: e["sha256"] for k, e in reference["shards"].items()}:
        problems.append("shards differ from the reference")
    if any(p.name.endswith(".tmp") for p in out.iterdir()):
        problems.append("temporary file left")
    return problems


def kill_pairs(kills: int = 20, per_run: int = 5, seed: int = 0, work: Path | None = None, n: int = 3000,
               startup_share: float = 0.2, write_share: float = 0.2) -> dict:
    """Kill ``flowmaps pairs`` ``kills`` times at random instants over fresh stores; count mismatches.

    The teacher is a tiny flow-matching run trained once; the command runs through ``tests/fault_cli.py`` with
    each shard's temporary file held 20 ms before its rename, so kills land inside atomic writes too.
    """
    rng = random.Random(seed)
    work = Path(work or tempfile.mkdtemp(prefix="fault_pairs_"))
    teacher = _tiny_teacher(work)
    env = {**_env(), "FAULT_SLOW_WRITE": "0.02"}

    def command(out: Path) -> list[str]:
        return [sys.executable, str(FAULT_CLI), "pairs", str(teacher), "--n", str(n), "--out", str(out),
                "--shard-size", "100", "--batch-size", "50", "--solver", "rk4", "--steps", "40", "--quiet"]

    ref = work / "reference"
    shutil.rmtree(ref, ignore_errors=True)
    startup_s, wall = _reference(command(ref), env, ref / "manifest.json")
    gen_s = wall - startup_s
    reference = read_manifest(ref)

    report = _new_report("pairs", reference_pairs=n, reference_wall_s=round(wall, 2))
    while report["kills"] < kills:
        out = work / f"store{report['runs']:03d}"
        shutil.rmtree(out, ignore_errors=True)
        report["runs"] += 1
        killed_here = 0
        temp = partial(_has_temp, out, "*.tmp")
        while True:
            done = len(read_manifest(out)["shards"]) * 100 if (out / "manifest.json").exists() else 0
            if killed_here:
                report["resumes"] += 1
                report["resumes_from_checkpoint"] += int(done > 0)
            proc = subprocess.Popen(command(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if killed_here >= per_run or report["kills"] >= kills:
                _, err = proc.communicate()
                if proc.returncode != 0:
                    report["failed_commands"] += 1
                    report["mismatch_details"].append(f"{out.name}: exit {proc.returncode}: {err.decode()[-300:]}")
                break
            phase = rng.random()
            if phase < startup_share:
                _kill_at(proc, lambda: True, rng.uniform(0, startup_s))
            elif phase < startup_share + write_share:
                _kill_at(proc, temp, 0.0, poll=0.0005)
            else:
                _kill_at(proc, (out / "manifest.json").exists, rng.uniform(0, gen_s * (1 - done / n)))
            if proc.returncode != -signal.SIGKILL:
                if proc.returncode != 0:
                    report["failed_commands"] += 1
                break
            killed_here += 1
            report["kills"] += 1
            report["kills_inside_checkpoint_write"] += int(temp())
            report["kills_in_startup" if phase < startup_share else "kills_in_training"] += 1
            if (out / "manifest.json").exists():
                bad = verify_store(out, full=True)
                if bad:
                    report["unloadable_after_kill"] += 1
                    report["mismatch_details"].append(f"{out.name}: {bad}")
        problems = _store_problems(out, reference, n) if (out / "manifest.json").exists() else ["no store"]
        if problems:
            report["mismatches"] += 1
            report["mismatch_details"].append(f"{out.name}: {problems}")
    return report


TARGETS = {"training": kill_training, "pairs": kill_pairs, "distillation": kill_distillation,
           "pair_training": kill_pair_training}


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
        write_text(args.json, json.dumps(reports, indent=1))
    bad = sum(r["mismatches"] + r["unloadable_after_kill"] + r["failed_commands"] for r in reports)
    print(f"fault injection: {sum(r['runs'] for r in reports)} runs, {sum(r['kills'] for r in reports)} kills, "
          f"{sum(r['resumes'] for r in reports)} resumes, {bad} mismatches/failures")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
