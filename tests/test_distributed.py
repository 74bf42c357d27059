"""Several processes on the CPU (gloo). Training: gradients are averaged explicitly, so every rank ends with the
same weights, for a flow-matching objective and for a JVP objective (which cannot run through a DDP wrapper).
Pair generation: the ranks split the shards and the store equals a one-process store, byte for byte. Evaluation
and PNG export: the ranks split the sample batches and the results equal one process's."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from flowmaps.app.cli import main
from flowmaps.core.objectives import registry
from flowmaps.data.prepare import open_source, prepare
from flowmaps.io.shards import read_manifest
from flowmaps.pairs.generate import generate_pairs
from flowmaps.pairs.store import verify_store
from flowmaps.run.build import pair_teacher
from flowmaps.run.config import parse_config
from flowmaps.run.trainer import train

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(rank: int, port: int) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": str(rank)}


def _two_ranks(args: list[str], code: int = 0) -> list[tuple[str, str]]:
    """Run ``python ARGS`` as ranks 0 and 1 of one gloo group, each ending with exit status ``code``;
    their (stdout, stderr)."""
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, *args], env=_env(r, port), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == code, err
        outs.append((out, err))
    return outs


def _train_two_ranks(tmp_path: Path, method: str, **sections) -> tuple[dict, dict, Path]:
    cfg = {"seed": 0, "data": {"kind": "gmm", "dim": 2, "components": 4},
           "model": {"width": 32, "depth": 2, "time_dim": 8}, "objective": {"method": method},
           "train": {"steps": 8, "batch_size": 64, "log_every": 4, "ckpt_every": 8, "threads": 1}, **sections}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    _two_ranks([str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path / "cfg.yaml"), str(run), str(tmp_path)])
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


def test_two_ranks_stream_a_prepared_store_and_end_with_the_same_weights(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).integers(0, 256, (64, 1, 8, 8), dtype=np.uint8))
    prepare(*open_source(tmp_path / "x.npy"), tmp_path / "store", shard_size=16, progress=False)
    a, b, _ = _train_two_ranks(tmp_path, "fm", data={"kind": "prepared", "path": str(tmp_path / "store"),
                                                     "hflip": True, "workers": 1},
                               model={"net": "unet", "channels": 8, "mult": [1, 2], "num_res_blocks": 1})
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_ranks_split_pair_generation_and_resume_a_one_process_store(tmp_path):
    """A store begun by one process (2 of 7 shards) is finished by two ranks; every shard equals the one of an
    uninterrupted one-process store, and the manifest lists each of the 7 shards once."""
    cfg = {"seed": 0, "data": {"kind": "gmm", "dim": 2, "components": 4},
           "model": {"width": 32, "depth": 2, "time_dim": 8}, "objective": {"method": "fm"},
           "train": {"steps": 5, "batch_size": 64, "log_every": 5, "ckpt_every": 5}}
    teacher = tmp_path / "teacher"
    train(parse_config(cfg), teacher, progress=False)
    kw = dict(solver="rk4", steps=8, shard_size=30, batch_size=16, progress=False)
    ref = generate_pairs(pair_teacher(teacher, "rk4", 8), 200, tmp_path / "ref", **kw)
    part = generate_pairs(pair_teacher(teacher, "rk4", 8), 200, tmp_path / "store", stop_after=2, **kw)
    assert len(part["shards"]) == 2 and not part["complete"]
    args = ["-m", "flowmaps", "pairs", str(teacher), "--n", "200", "--out", str(tmp_path / "store"),
            "--solver", "rk4", "--steps", "8", "--batch-size", "16", "--quiet"]
    outs = _two_ranks(args)
    assert outs[0][0].startswith("200 pairs (rk4, NFE 32) in 7 shards, complete") and outs[1][0] == ""
    m = read_manifest(tmp_path / "store")
    assert m["complete"] and sorted(int(k) for k in m["shards"]) == list(range(7))
    assert {k: e["sha256"] for k, e in m["shards"].items()} == {k: e["sha256"] for k, e in ref["shards"].items()}
    assert verify_store(tmp_path / "store", full=True, check_noise=True) == {}
    # a store that rank 0 refuses (other settings) stops every rank with rank 0's one line
    for _, err in _two_ranks(args + ["--seed", "1"], code=2):
        assert err.strip().endswith("was made with seed=0, this run asks seed=1; use the same settings to resume "
                                    "or choose another --out"), err


def test_two_ranks_split_eval_and_png_export_with_one_process_results(tmp_path):
    """`eval` and `sample --out DIR` under two ranks split the sample batches; the table and the PNG files equal
    those of one process."""
    cfg = {"seed": 0, "data": {"kind": "images", "name": "digits"},
           "model": {"net": "unet", "channels": 8, "mult": [1, 2], "num_res_blocks": 1},
           "train": {"steps": 2, "batch_size": 8, "ckpt_every": 2, "device": "cpu"},
           "eval": {"n": 48, "steps": [1], "batch": 16}}
    run = tmp_path / "run"
    train(parse_config(cfg), run, progress=False)
    common = ["--device", "cpu", "--batch-size", "16"]
    _two_ranks(["-m", "flowmaps", "eval", str(run), "--quiet", *common])
    two = json.loads((run / "eval.json").read_text())
    _two_ranks(["-m", "flowmaps", "sample", str(run), "--n", "40", "--out", str(tmp_path / "two"), *common])
    assert main(["eval", str(run), "--quiet", *common]) == 0
    one = json.loads((run / "eval.json").read_text())
    assert main(["sample", str(run), "--n", "40", "--out", str(tmp_path / "one"), *common]) == 0
    assert one == two and one[0]["n"] == 48 and one[0]["fd_digits"] > 0
    files = sorted(p.name for p in (tmp_path / "one").glob("*.png"))
    assert len(files) == 40 and files == sorted(p.name for p in (tmp_path / "two").glob("*.png"))
    assert all((tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes() for f in files)
