"""Multi-process training on the CPU (gloo): gradients are averaged explicitly, so every rank ends with the
same weights, for a flow-matching objective and for a JVP objective (which cannot run through a DDP wrapper)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from flowmaps.objectives import registry

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_two_ranks(tmp_path: Path, method: str) -> tuple[dict, dict, Path]:
    cfg = {"seed": 0, "data": {"kind": "gmm", "dim": 2, "components": 4},
           "model": {"width": 32, "depth": 2, "time_dim": 8}, "objective": {"method": method},
           "train": {"steps": 8, "batch_size": 64, "log_every": 4, "ckpt_every": 8, "threads": 1}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    run = tmp_path / "run"
    procs = [subprocess.Popen([sys.executable, str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path / "cfg.yaml"),
                               str(run), str(tmp_path)], env={**env, "RANK": str(r)}, stderr=subprocess.PIPE,
                              text=True) for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    return load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors"), run


@pytest.mark.parametrize("method", ["fm", "lsd"])
def test_two_ranks_end_with_the_same_weights(tmp_path, method):
    if method not in registry():
        pytest.fail(f"objective {method!r} is not registered")
    a, b, run = _train_two_ranks(tmp_path, method)
    assert a.keys() == b.keys()
    for k in a:  # the ranks drew different batches (seed + rank), so equality needs the gradient all-reduce
        assert torch.equal(a[k], b[k]), k
    assert (run / "checkpoint.safetensors").exists() and (run / "metrics.csv").exists()  # written by rank 0 only
