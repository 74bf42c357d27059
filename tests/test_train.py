"""The training loop: learns on a closed-form problem, logs, checkpoints, and resumes exactly."""

import csv

import pytest
import torch

from flowmaps.app.evaluate import evaluate, sampler_specs
from flowmaps.errors import ConfigError, NonFiniteError
from flowmaps.run.build import load_run
from flowmaps.run.config import parse_config
from flowmaps.run.trainer import train

TINY = ["data.kind=gmm", "data.dim=2", "data.components=4", "data.std=0.1", "model.width=64", "model.depth=2",
        "train.batch_size=256", "train.log_every=10", "train.ckpt_every=25", "train.lr=5e-3", "objective.method=fm",
        "eval.n=2000"]


def cfg(*extra):
    return parse_config({}, TINY + list(extra))


def test_resume_is_bit_identical(tmp_path):
    c = cfg("train.steps=60", "train.schedule=cosine", "train.warmup=5", "objective.coupling=ot")
    train(c, tmp_path / "a", progress=False)
    train(c, tmp_path / "b", progress=False, stop_after=25)  # "killed" right after the step-25 checkpoint
    train(c, tmp_path / "b", resume=True, progress=False, stop_after=13)  # and after a step that was never checkpointed
    train(c, tmp_path / "b", resume=True, progress=False)
    a, b = load_run(tmp_path / "a", ema=False), load_run(tmp_path / "b", ema=False)
    for (k, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(p, q), k
    ea, eb = load_run(tmp_path / "a"), load_run(tmp_path / "b")
    assert all(torch.equal(p, q) for p, q in zip(ea.model.parameters(), eb.model.parameters()))
    rows = list(csv.DictReader((tmp_path / "b" / "metrics.csv").read_text().splitlines()))
    assert [int(r["step"]) for r in rows] == list(range(10, 61, 10))  # truncated and continued, no duplicates
    ref = list(csv.DictReader((tmp_path / "a" / "metrics.csv").read_text().splitlines()))
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref]


def test_existing_run_dir_and_changed_config_are_refused(tmp_path):
    c = cfg("train.steps=5")
    train(c, tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="run directory exists"):
        train(c, tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="config differs"):
        train(cfg("train.steps=9"), tmp_path / "r", resume=True, progress=False)


def test_resume_takes_new_evaluation_and_device_keys_bit_identically(tmp_path):
    """Keys that do not change what a run learns (eval.*, train.device/threads/log_every/ckpt_every) may change
    on resume: the run continues exactly and its config.yaml takes the new values."""
    train(cfg("train.steps=20"), tmp_path / "a", progress=False)
    train(cfg("train.steps=20"), tmp_path / "b", progress=False, stop_after=10)
    later = cfg("train.steps=20", "eval.steps=[3]", "eval.edm_grids=[[0]]", "train.device=cpu", "train.threads=1",
                "train.log_every=5", "train.ckpt_every=5")
    train(later, tmp_path / "b", resume=True, progress=False)
    a, b = load_run(tmp_path / "a"), load_run(tmp_path / "b")
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    assert b.cfg.eval.steps == [3] and b.cfg.eval.edm_grids == [[0]] and b.cfg.train.log_every == 5
    with pytest.raises(ConfigError, match=r"config differs .*train\.lr"):
        train(cfg("train.steps=20", "train.lr=0.5"), tmp_path / "b", resume=True, progress=False)


def test_nonfinite_loss_stops_and_keeps_the_last_checkpoint(tmp_path):
    c = cfg("train.steps=40", "train.lr=1e30", "train.grad_clip=null", "train.ckpt_every=1", "train.ema=0")
    with pytest.raises(NonFiniteError, match=r"non-finite \w+ at step \d+"):
        train(c, tmp_path / "r", progress=False)
    run = load_run(tmp_path / "r")  # loadable
    assert all(torch.isfinite(p).all() for p in run.model.parameters())


def test_flow_matching_learns_a_gaussian_mixture(tmp_path):
    """FM on the analytic mixture: the learned velocity approaches the exact one and samples match the target."""
    c = cfg("train.steps=1000", "train.schedule=cosine", "train.warmup=20")
    run = load_run(train(c, tmp_path / "fm", progress=False))
    mix = run.source.mixture
    x, t = mix.sample(2000).float(), torch.rand(2000) * 0.9 + 0.05
    x = run.model.interp(run.model.sigma0 * torch.randn_like(x), x, t)
    exact = mix.velocity(x, t, run.model.interp, run.model.sigma0)
    rel = float((run.model.velocity(x, t) - exact).pow(2).mean() / exact.pow(2).mean())
    assert rel < 0.15, rel
    rows = {r["solver"]: r for r in evaluate(run.model, run.source, [16], 2000, solvers=("heun",))}
    ref = run.source.reference(2000, seed=7)
    from flowmaps.core.metrics import wasserstein2

    floor = wasserstein2(ref, run.source.reference(2000, seed=8))  # two target samples of this size
    assert rows["heun"]["w2"] < 3 * floor + 0.02, (rows, floor)
    assert rows["adaptive"]["w2"] < 3 * floor + 0.02, (rows, floor)


def test_the_adaptive_solve_is_one_row_whatever_the_step_counts():
    """It chooses its own steps: named among the solvers or added for a velocity model, it is measured once."""
    named = sampler_specs("flowmap", [1, 2, 4], ["map", "adaptive"])
    assert [(r["solver"], r["steps"]) for r in named] == [("map", 1), ("map", 2), ("map", 4), ("adaptive", None)]
    assert sampler_specs("flowmap", [2, 4], ["adaptive"]) == [{"solver": "adaptive", "steps": None}]
    assert [r["solver"] for r in sampler_specs("velocity", [8, 16], ["heun"])] == ["heun", "heun", "adaptive"]
    assert [r["solver"] for r in sampler_specs("flowmap", [8], ["map"])] == ["map"]
