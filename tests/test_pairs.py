"""Pair store: round trip, resume after interruption, corruption detection and repair, teacher identity."""

import json

import numpy as np
import pytest
import torch

from flowmaps.app.cli import main
from flowmaps.core.sampling import edm_grid
from flowmaps.core.teachers import GaussianMixture
from flowmaps.data import build_source
from flowmaps.data.sources import GMMData
from flowmaps.errors import StoreError
from flowmaps.io.shards import read_manifest, shard_file
from flowmaps.pairs.generate import PairTeacher, generate_pairs, pair_solver_nfe
from flowmaps.pairs.store import PairStore, indexed_noise, verify_store
from flowmaps.run.config import parse_config

MIX = GaussianMixture.random(2, components=4, std=0.2, radius=1.0, seed=3)
SIGMA0 = MIX.std()


def gmm_teacher(tag: str = "a") -> PairTeacher:
    """The exact flow map of the analytic mixture as a teacher Φ(z) = X_{0,1}(z)."""

    def phi(z, label=None):
        n = z.shape[0]
        return MIX.flow_map(z, torch.zeros(n), torch.ones(n), sigma0=SIGMA0, rtol=1e-7, atol=1e-8, label=label), 0

    data = GMMData(dim=2, components=4, std=0.2, radius=1.0, seed=3).model_dump(mode="json")
    return PairTeacher(phi, {"kind": "analytic", "tag": tag, "data": data}, SIGMA0, (2,))


def test_round_trip_and_noise_from_seeds(tmp_path):
    m = generate_pairs(gmm_teacher(), 70, tmp_path / "s", seed=5, solver="adaptive", shard_size=32, batch_size=16,
                       progress=False)
    assert m["complete"] and len(m["shards"]) == 3 and m["n"] == 70
    store = PairStore(tmp_path / "s")
    idx = torch.tensor([69, 0, 33, 33, 5])
    z, x1 = store.pairs(idx)
    assert torch.equal(z, indexed_noise(5, idx.tolist(), (2,), SIGMA0))
    ref = MIX.flow_map(z, torch.zeros(5), torch.ones(5), sigma0=SIGMA0, rtol=1e-7, atol=1e-8)
    assert torch.allclose(x1, ref, atol=1e-5)
    assert verify_store(tmp_path / "s", full=True, check_noise=True) == {}


def test_resume_after_interruption_gives_the_same_store(tmp_path):
    kw = dict(seed=1, solver="adaptive", shard_size=16, batch_size=8, progress=False)
    generate_pairs(gmm_teacher(), 50, tmp_path / "full", **kw)
    part = generate_pairs(gmm_teacher(), 50, tmp_path / "cut", stop_after=2, **kw)
    assert not part["complete"] and len(part["shards"]) == 2
    with pytest.raises(StoreError, match="incomplete"):
        PairStore(tmp_path / "cut")
    (tmp_path / "cut" / shard_file(2, "x1")).write_bytes(b"half-written junk")  # a shard the manifest does not list
    m = generate_pairs(gmm_teacher(), 50, tmp_path / "cut", **kw)
    assert m["complete"]
    a, b = PairStore(tmp_path / "full"), PairStore(tmp_path / "cut")
    idx = torch.arange(50)
    za, xa = a.pairs(idx)
    zb, xb = b.pairs(idx)
    assert torch.equal(za, zb) and torch.equal(xa, xb)
    assert len({tuple(r) for r in zb.tolist()}) == 50  # exactly N distinct samples
    assert sum(e["rows"] for e in m["shards"].values()) == 50


def test_corrupt_shard_is_named_and_repaired(tmp_path):
    kw = dict(seed=0, solver="adaptive", shard_size=16, batch_size=16, progress=False)
    generate_pairs(gmm_teacher(), 40, tmp_path / "s", **kw)
    good = PairStore(tmp_path / "s").pairs(torch.arange(40))
    path = tmp_path / "s" / shard_file(1, "x1")
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert list(verify_store(tmp_path / "s")) == [1]
    with pytest.raises(StoreError, match=r"shard-00001\.x1\.npy \(sha256"):
        generate_pairs(gmm_teacher(), 40, tmp_path / "s", **kw)
    (tmp_path / "s" / shard_file(2, "x1")).write_bytes(path.read_bytes()[:40])  # truncated
    assert sorted(verify_store(tmp_path / "s")) == [1, 2]
    generate_pairs(gmm_teacher(), 40, tmp_path / "s", repair=True, **kw)
    assert verify_store(tmp_path / "s") == {}
    again = PairStore(tmp_path / "s").pairs(torch.arange(40))
    assert torch.equal(good[0], again[0]) and torch.equal(good[1], again[1])


def test_other_teacher_or_settings_refused(tmp_path):
    kw = dict(seed=0, solver="adaptive", shard_size=16, batch_size=16, progress=False)
    generate_pairs(gmm_teacher("a"), 20, tmp_path / "s", stop_after=1, **kw)
    with pytest.raises(StoreError, match="another teacher"):
        generate_pairs(gmm_teacher("b"), 20, tmp_path / "s", **kw)
    with pytest.raises(StoreError, match="seed=0"):
        generate_pairs(gmm_teacher("a"), 20, tmp_path / "s", **{**kw, "seed": 1})


def test_pair_source_batches_and_real_data(tmp_path):
    generate_pairs(gmm_teacher(), 64, tmp_path / "s", solver="adaptive", shard_size=32, progress=False)
    src = build_source({"kind": "pairs", "path": str(tmp_path / "s")})
    torch.manual_seed(0)
    b = src.sample(10)
    assert set(b) == {"x0", "x1"} and b["x0"].shape == (10, 2)
    store = PairStore(tmp_path / "s")
    z, x1 = store.pairs(torch.arange(64))
    rows = {tuple(r) for r in torch.cat([z, x1], 1).tolist()}
    assert all(tuple(r) in rows for r in torch.cat([b["x0"], b["x1"]], 1).tolist())  # real pairs, not re-paired
    assert src.real(5).shape == (5, 2) and src.mixture is not None


def test_edm_solver_plan_has_35_nfe():
    grid, nfe = edm_grid(18, 1.0), pair_solver_nfe("edm", 18)
    assert nfe == 35 and len(grid) == 19 and float(grid[-1]) == 1.0
    assert abs(float(grid[0]) - 1 / 81) < 1e-12


def test_cli_pairs_from_a_trained_run(tmp_path, capsys):
    import yaml

    cfg = parse_config({"data": {"kind": "gmm", "dim": 2, "components": 4},
                        "model": {"width": 32, "depth": 2},
                        "train": {"steps": 5, "batch_size": 64, "log_every": 5, "ckpt_every": 5}})
    from flowmaps.run.trainer import train

    train(cfg, tmp_path / "teacher", progress=False)
    out = tmp_path / "pairs"
    assert main(["pairs", str(tmp_path / "teacher"), "--n", "40", "--out", str(out), "--shard-size", "16",
                 "--quiet"]) == 0
    m = read_manifest(out)
    assert m["nfe"] == 35 and m["complete"] and m["teacher"]["kind"] == "run"
    assert len(m["teacher"]["config_sha256"]) == 64
    assert main(["pairs", str(tmp_path / "teacher"), "--out", str(out), "--verify"]) == 0
    np.save(out / shard_file(0, "x1"), np.zeros((16, 2), np.float32))  # same shape, wrong content
    assert main(["pairs", str(tmp_path / "teacher"), "--n", "40", "--out", str(out), "--quiet"]) == 2
    assert "shard-00000.x1.npy" in capsys.readouterr().err
    assert main(["pairs", str(tmp_path / "teacher"), "--n", "40", "--out", str(out), "--quiet", "--repair"]) == 0
    json.loads((out / "manifest.json").read_text())
    # training reads the store: 2-rectified flow on the pairs runs
    cfg2 = parse_config({"data": {"kind": "pairs", "path": str(out)}, "model": {"width": 32, "depth": 2},
                         "objective": {"method": "fm"},
                         "train": {"steps": 3, "batch_size": 16, "log_every": 1, "ckpt_every": 3}})
    train(cfg2, tmp_path / "rf2", progress=False)
    assert yaml.safe_load((tmp_path / "rf2" / "config.yaml").read_text())["data"]["kind"] == "pairs"
    out = str(tmp_path / "s.npy")
    assert main(["sample", str(tmp_path / "rf2"), "--edm-grid", "0,1", "--n", "50", "--out", out]) == 0
    assert np.load(tmp_path / "s.npy").shape == (50, 2) and "solver heun, NFE 4" in capsys.readouterr().out
