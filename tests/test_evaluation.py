"""The evaluation protocol, on the tiny random feature extractor of conftest (Inception's weights are absent here):
reference statistics through .npz, computed once and cached beside the data (reused, refused for other data),
FD/KID/precision/recall, PNG export, batched noise, image evaluation without an extractor, `eval` on the grids of
`sample`, and evaluations during training."""

import json
import re

import numpy as np
import pytest
import torch

from clitools import error_line, forked_cli, metric_rows
from flowmaps.app.samples import png_name, write_pngs
from flowmaps.core.metrics.frechet import (
    Extractor,
    feature_extractor,
    gaussian_stats,
    kid,
    precision_recall,
    scores,
    statistics,
)
from flowmaps.core.models import FlowMap
from flowmaps.core.nets.unet import UNet
from flowmaps.core.paths import interpolant
from flowmaps.core.sampling import noise, noise_batches, sample_batches
from flowmaps.data.prepare import open_source, prepare
from flowmaps.data.reference import cache_file, load_statistics, reference_statistics, save_statistics
from flowmaps.data.sources import TensorSource
from flowmaps.data.stream import ImageStore, StoreSource
from flowmaps.errors import ConfigError, DataError
from flowmaps.io.images import load_png, to_uint8
from flowmaps.run.config import parse_config
from flowmaps.run.measure import image_meter
from flowmaps.run.trainer import train


def _rgb(n=120, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 8, 8), dtype=np.uint8)


def _counting(ext: Extractor) -> tuple[Extractor, list]:
    calls = []

    def fn(x):
        calls.append(len(x))
        return ext.fn(x)

    return Extractor(ext.name, ext.identity, fn, ext.batch), calls


def test_statistics_round_trip_through_npz(tmp_path):
    f = torch.randn(300, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 1
    st = statistics(f.split(64))
    mu, cov = gaussian_stats(f)
    assert np.allclose(st.mu, mu, atol=1e-12) and np.allclose(st.sigma, cov, atol=1e-10) and st.n == 300
    save_statistics(tmp_path / "s.npz", st, data="d", extractor="e")
    back = load_statistics(tmp_path / "s.npz")
    assert np.array_equal(back.mu, st.mu) and np.array_equal(back.sigma, st.sigma) and back.n == 300
    assert np.array_equal(back.features, st.features)
    np.savez(tmp_path / "published.npz", mu=st.mu.astype(np.float32), sigma=st.sigma)  # EDM / ADM / clean-fid
    pub = load_statistics(tmp_path / "published.npz")
    assert pub.features is None and np.allclose(pub.mu, st.mu, atol=1e-6)
    gen = statistics(f[:150] + 0.5)
    assert set(scores(gen, pub, "x")) == {"fd_x"}  # statistics only: FD, no KID without reference features
    assert scores(gen, pub, "x")["fd_x"] == pytest.approx(scores(gen, st, "x")["fd_x"], rel=1e-5)
    np.savez(tmp_path / "bad.npz", mu=st.mu)
    with pytest.raises(DataError, match="need the arrays mu and sigma"):
        load_statistics(tmp_path / "bad.npz")
    with pytest.raises(ConfigError, match="32-d features"):
        scores(statistics(f[:, :8]), st, "x")


def test_fd_against_own_cached_statistics_reuse_and_refusal(tmp_path):
    np.save(tmp_path / "a.npy", _rgb())
    items, about = open_source(tmp_path / "a.npy")
    prepare(items, about, tmp_path / "store", shard_size=50, progress=False)
    src = StoreSource(ImageStore(tmp_path / "store"), workers=0)
    ext, calls = _counting(feature_extractor("tiny"))
    ref, computed = reference_statistics(src, ext, batch=32)
    assert computed and sum(calls) == 120 and ref.n == 120
    assert list((tmp_path / "store" / "stats").iterdir()) == [cache_file(tmp_path / "store" / "stats",
                                                                          src.reference_id(), ext)]
    own = statistics([ext(x)["features"] for x in src.reference_batches(50)])
    s = scores(own, ref, "tiny")
    assert s["fd_tiny"] < 1e-9 and s["precision_tiny"] == 1 and s["recall_tiny"] == 1
    noisy = statistics(ext(torch.rand(120, 3, 8, 8) * 2 - 1)["features"])
    assert scores(noisy, ref, "tiny")["fd_tiny"] > 1e-3
    calls.clear()
    again, computed = reference_statistics(src, ext, batch=32)
    assert not computed and calls == [] and np.array_equal(again.sigma, ref.sigma)  # no feature pass
    # in-memory data: cached in the caller's folder, keyed by the data's checksum
    x = torch.from_numpy(_rgb()).float() / 127.5 - 1
    mem = TensorSource(x, "mem", heldout=x)
    reference_statistics(mem, ext, tmp_path / "cache")
    x2 = x.clone()
    x2[0, 0, 0, 0] = 0.5  # one pixel changed: another checksum, so the cache is not used for it
    changed = TensorSource(x2, "mem", heldout=x2)
    calls.clear()
    _, computed = reference_statistics(changed, ext, tmp_path / "cache")
    assert computed and sum(calls) == 120
    stale = cache_file(tmp_path / "cache", mem.reference_id(), ext)
    stale.replace(cache_file(tmp_path / "cache", changed.reference_id(), ext))  # a cache of other data
    with pytest.raises(DataError, match="cached statistics of other data"):
        reference_statistics(changed, ext, tmp_path / "cache")


def test_kid_and_precision_recall():
    g = np.random.default_rng(0)
    a, b = g.normal(size=(600, 8)), g.normal(size=(600, 8))
    assert abs(kid(a, b, subsets=20, subset_size=300)[0]) < 0.01
    assert kid(a, b + 1.0, subsets=20, subset_size=300)[0] > 0.1
    assert precision_recall(a, a) == (1.0, 1.0)
    assert precision_recall(a, a + 100) == (0.0, 0.0)
    p, r = precision_recall(a, b)
    assert 0.7 < p <= 1 and 0.7 < r <= 1


def test_batched_noise_equals_one_shot_noise():
    for shape in [(2,), (1, 8, 8), (3, 32, 32)]:
        for batch in (7, 100, 500):
            parts = torch.cat([z for _, z in noise_batches(1001, shape, 0.7, 3, batch)])
            assert torch.equal(parts, noise(1001, shape, 0.7, 3)), (shape, batch)


def _model(shape=(3, 8, 8)):
    torch.manual_seed(0)
    net = UNet(shape, 64, channels=8, mult=(1, 2), num_res_blocks=1)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0, 0.2)
    return FlowMap(net, interpolant("linear"), 1.0, 0.5, form="flowmap").eval()


def test_png_export_round_trips_and_resumes(tmp_path):
    model, shape, out = _model(), (3, 8, 8), tmp_path / "pngs"
    about = {"run": "r", "n": 10}
    spec = dict(solver="map", steps=1)
    made, nfe = write_pngs(model, shape, out, about, 10, 0, 4, **spec)
    assert made == 10 and nfe == 1
    x = torch.cat([s for _, s, _ in sample_batches(model, shape, 10, 0, 4, **spec)])
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == [png_name(i, 10) for i in range(10)]
    u = to_uint8(x).numpy()
    for i, f in enumerate(files):
        assert load_png(f).dtype == np.uint8 and np.array_equal(load_png(f), u[i])
    before = {f.name: f.read_bytes() for f in files}
    (out / png_name(1, 10)).unlink()
    (out / png_name(9, 10)).unlink()
    made, _ = write_pngs(model, shape, out, about, 10, 0, 4, **spec)
    assert made == 4 + 2  # the batches of rows 0-3 and 8-9, made again
    assert {f.name: f.read_bytes() for f in sorted(out.glob("*.png"))} == before
    with pytest.raises(ConfigError, match=r"other settings \(n differ\)"):
        write_pngs(model, shape, out, {**about, "n": 12}, 12, 0, 4, **spec)
    grey = _model((1, 8, 8))
    write_pngs(grey, (1, 8, 8), tmp_path / "grey", about, 3, 0, 4, **spec)
    assert load_png(tmp_path / "grey" / png_name(0, 3)).shape == (1, 8, 8)


def test_rgb_evaluation_needs_a_feature_extractor(tmp_path, monkeypatch):
    monkeypatch.delenv("FLOWMAPS_INCEPTION_WEIGHTS", raising=False)
    x = torch.from_numpy(_rgb(20)).float() / 127.5 - 1
    with pytest.raises(ConfigError, match="FLOWMAPS_INCEPTION_WEIGHTS"):
        image_meter(TensorSource(x, "rgb", heldout=x), None, {}, None)
    with pytest.raises(ConfigError, match="eval.reference names digits"):
        image_meter(TensorSource(x, "rgb", heldout=x), ["tiny"], {"digits": "x.npz"}, None)
    np.save(tmp_path / "rgb.npy", _rgb(16))
    cfg = parse_config({"data": {"kind": "images", "name": "npy", "path": str(tmp_path / "rgb.npy")},
                        "model": {"net": "unet", "channels": 8, "mult": [1, 2], "num_res_blocks": 1},
                        "eval": {"every": 2}, "train": {"steps": 2, "batch_size": 8, "device": "cpu"}})
    with pytest.raises(ConfigError, match=r"eval\.every=2: Inception features need local weights.*eval\.every=0"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # found before anything was written


def test_eval_takes_the_grids_of_sample_and_reports_every_score(tmp_path, monkeypatch):
    monkeypatch.delenv("FLOWMAPS_INCEPTION_WEIGHTS", raising=False)
    np.save(tmp_path / "rgb.npy", _rgb(64))
    run = tmp_path / "run"
    cfg = parse_config({"data": {"kind": "images", "name": "npy", "path": str(tmp_path / "rgb.npy")},
                        "model": {"net": "unet", "channels": 8, "mult": [1, 2], "num_res_blocks": 1},
                        "objective": {"method": "lsd"}, "eval": {"n": 64, "steps": [1, 2], "batch": 32},
                        "train": {"steps": 2, "batch_size": 8, "ckpt_every": 2, "ema": [0.9, 0.99], "device": "cpu"}})
    train(cfg, run, progress=False)
    r = forked_cli("eval", run)  # RGB without Inception: one line naming what to set
    assert r.returncode == 2 and "FLOWMAPS_INCEPTION_WEIGHTS" in error_line(r)
    for args in (["--steps", "1,2"], ["--grid", "0,0.5,1"], ["--edm-grid", "0,1"]):
        r = forked_cli("eval", run, "--features", "tiny", "--device", "cpu", "--quiet", *args)
        assert r.returncode == 0, r.stderr
        rows = json.loads((run / "eval.json").read_text())
        assert all(r["n"] == 64 and r["n_ref_tiny"] == 64 and r["fd_tiny"] > 0 for r in rows)
        assert {"kid_tiny", "precision_tiny", "recall_tiny", "w2"} <= set(rows[0])
    assert [r["grid"] for r in rows] == ["EDM σ idx 0,1"] and rows[0]["nfe"] == 2
    assert (run / "stats").is_dir()  # the data's statistics, cached once
    stats = next((run / "stats").iterdir())
    r = forked_cli("eval", run, "--features", "tiny", "--steps", "1", "--ref", stats, "--ema", "0.99")
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "eval.json").read_text())[0]["fd_tiny"] > 0
    r = forked_cli("eval", run, "--features", "tiny", "--ema", "0.5")
    assert r.returncode == 2 and re.search(r"no EMA with decay 0\.5; the run keeps 0\.9, 0\.99", error_line(r))
    r = forked_cli("sample", run, "--n", "5", "--ema", "0.99", "--out", tmp_path / "pngs", "--device", "cpu")
    assert r.returncode == 0 and len(list((tmp_path / "pngs").glob("*.png"))) == 5


def test_evaluation_during_training_logs_and_resumes(tmp_path):
    tree = {"data": {"kind": "images", "name": "digits"},
            "model": {"net": "unet", "channels": 8, "mult": [1, 2], "num_res_blocks": 1},
            "eval": {"every": 2, "every_n": 40, "steps": [1], "edm_grids": [[0, 1]], "features": ["tiny"],
                     "batch": 20},
            "train": {"steps": 4, "batch_size": 8, "log_every": 10, "ckpt_every": 10, "device": "cpu"}}
    cfg = parse_config(tree)
    train(cfg, tmp_path / "a", progress=False)
    rows = metric_rows(tmp_path / "a")
    assert [int(r["step"]) for r in rows] == [2, 4] and all(float(r["fd_tiny_N1"]) > 0 for r in rows)
    assert {"kid_tiny_N1", "w2_N1", "fd_tiny_edm0-1"} <= set(rows[0])
    assert (tmp_path / "a" / "samples" / "step-0000002.png").is_file()
    assert load_png(tmp_path / "a" / "samples" / "step-0000004.png").shape[0] == 1
    train(cfg, tmp_path / "b", progress=False, stop_after=3)
    train(cfg, tmp_path / "b", resume=True, progress=False)
    again = metric_rows(tmp_path / "b")
    assert [(r["loss"], r["fd_tiny_N1"]) for r in again] == [(r["loss"], r["fd_tiny_N1"]) for r in rows]


def test_eval_defaults_to_the_configs_steps_and_edm_grids(tmp_path):
    """An LMM recipe evaluates on lines matching's EDM σ grids (``eval.edm_grids``) besides the uniform steps;
    a grid given on the command line replaces both."""
    run = tmp_path / "run"
    cfg = parse_config({"data": {"kind": "gmm", "dim": 2, "components": 2}, "model": {"width": 16, "depth": 1},
                        "eval": {"n": 200, "steps": [1, 2], "edm_grids": [[0], [0, 3, 5]]},
                        "train": {"steps": 2, "batch_size": 16, "ckpt_every": 2, "device": "cpu"}})
    train(cfg, run, progress=False)
    r = forked_cli("eval", run, "--solver", "map", "--quiet")
    assert r.returncode == 0, r.stderr
    rows = json.loads((run / "eval.json").read_text())
    assert [(r["steps"], r.get("grid"), r["nfe"]) for r in rows[:4]] == [
        (1, None, 1), (2, None, 2), (1, "EDM σ idx 0", 1), (3, "EDM σ idx 0,3,5", 3)]
    assert [r["solver"] for r in rows[4:]] == ["adaptive"]  # a velocity model's reference solve
    r = forked_cli("eval", run, "--solver", "map", "--quiet", "--edm-grid", "0,1")
    assert r.returncode == 0 and [r["grid"] for r in json.loads((run / "eval.json").read_text())] == ["EDM σ idx 0,1"]
    with pytest.raises(ConfigError, match=r"eval\.edm_grids: EDM step indices must lie in 0\.\.17"):
        parse_config({"eval": {"edm_grids": [[0, 18]]}})
