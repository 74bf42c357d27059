"""The command line as tests drive it: a fresh interpreter (``cli``), a forked ``main(argv)`` with its own
stderr and exit status (``forked_cli``), a background process to kill (``launch``), and what they leave on disk.

A fresh interpreter pays ~2 s of CPU for the torch import, so the many bad-input cases run the same
``flowmaps.app.cli.main(argv)`` that the ``flowmaps`` console entry runs, each in its own forked process.
"""

from __future__ import annotations

import csv
import hashlib
import os
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import flowmaps.app.cli
import flowmaps.app.evaluate
import flowmaps.run.build
import flowmaps.run.trainer
from flowmaps.io.checkpoint import load_state

ROOT = Path(__file__).resolve().parents[1]
FAULT_CLI = ROOT / "tests" / "fault_cli.py"
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
TINY = {
    "seed": 3,
    "data": {"kind": "toy", "name": "checker"},
    "model": {"net": "mlp", "width": 32, "depth": 2, "time_dim": 8},
    "objective": {"method": "fm"},
    "train": {"steps": 200, "batch_size": 64, "lr": 3e-3, "schedule": "cosine", "warmup": 30, "ema": 0.99,
              "log_every": 1, "ckpt_every": 25, "threads": 1},
    "eval": {"n": 200, "steps": [1, 2]},
}


def _cmd(args, fault: bool) -> list[str]:
    head = [sys.executable, str(FAULT_CLI)] if fault else [sys.executable, "-m", "flowmaps"]
    return head + [str(a) for a in args]


def cli(*args, fault: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(args, fault), env=ENV, capture_output=True, text=True, timeout=300)


def forked_cli(*args, max_file_size: int | None = None) -> subprocess.CompletedProcess:
    """``flowmaps ARGS`` in a forked child: ``flowmaps.app.cli.main(argv)``, its stderr and its exit status.

    ``max_file_size`` (bytes): the child cannot grow a file beyond it, as on a full disk (RLIMIT_FSIZE).
    """
    with tempfile.TemporaryFile(mode="w+") as err:
        pid = os.fork()
        if pid == 0:  # child: the console entry point, then exit without running the parent's cleanup
            code = 1
            try:
                if max_file_size is not None:
                    resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_size, max_file_size))
                os.dup2(err.fileno(), 2)
                sys.stderr = os.fdopen(2, "w", closefd=False)
                code = flowmaps.app.cli.main([str(a) for a in args])
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        err.seek(0)
        return subprocess.CompletedProcess(args, os.waitstatus_to_exitcode(status), "", err.read())


def launch(*args, fault: bool = False, **env: str) -> subprocess.Popen:
    return subprocess.Popen(_cmd(args, fault), env={**ENV, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def wait_for(cond, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"process ended early: {proc.stderr.read()}"
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def ckpt_step(run: Path) -> int:
    p = run / "checkpoint.safetensors"
    return int(load_state(p)["step"]) if p.exists() else 0


def metric_rows(run: Path) -> list[dict]:
    p = run / "metrics.csv"
    if not p.exists():
        return []
    with open(p, newline="") as f:
        return [r for r in csv.DictReader(f) if None not in r.values() and r["step"].isdigit()]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def error_line(r: subprocess.CompletedProcess) -> str:
    """The one line the user sees (no traceback, nothing else on stderr)."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("flowmaps: error: "), r.stderr
    return lines[0]
