"""JVP training at scale: fused attention outside JVPs (and the same output as the written-out one), MeanFlow's
adaptive weight and logit-normal times, gradient accumulation, activation checkpointing, torch.compile with JVP
objectives, and several EMAs side by side."""

import functools
import math

import pytest
import torch

from flowmaps.core.models import FlowMap
from flowmaps.core.nets import attention as attention_module
from flowmaps.core.nets.unet import UNet
from flowmaps.core.objectives import Context, Loss
from flowmaps.core.objectives.mapbase import lagrangian
from flowmaps.core.objectives.selfdistill import LSD, MeanFlow
from flowmaps.core.paths import interpolant
from flowmaps.core.times import logit_normal_times
from flowmaps.data import build_source
from flowmaps.errors import ConfigError
from flowmaps.io.checkpoint import load_state, save_state
from flowmaps.run.build import load_run
from flowmaps.run.config import parse_config
from flowmaps.run.trainer import build_state, train, train_step

GMM = {"data": {"kind": "gmm", "components": 4}, "model": {"width": 32, "depth": 2, "time_dim": 8}}


def _unet(checkpointing=False, attn=(4,)):
    torch.manual_seed(0)
    net = UNet((3, 8, 8), 64, channels=16, mult=(1, 2), num_res_blocks=1, attn_resolutions=attn,
               checkpointing=checkpointing)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0, 0.2)
    return FlowMap(net, interpolant("linear"), 1.0, 0.5, form="flowmap")


def test_fused_attention_outside_jvp_and_written_out_inside(monkeypatch):
    model = _unet()
    x, s, t = torch.randn(4, 3, 8, 8), torch.full((4,), 0.2), torch.full((4,), 0.7)
    fused = model(x, s, t)
    with attention_module.written_out():
        explicit = model(x, s, t)
    assert torch.allclose(fused, explicit, atol=1e-5) and (fused - x).abs().max() > 0.1

    def no_fused(*args, **kw):
        raise AssertionError("the fused kernel ran inside a JVP")

    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", no_fused)
    out, dt = lagrangian(model, x, s, t)  # the objectives' JVP writes attention out
    assert torch.allclose(out, explicit, atol=1e-6) and dt.abs().max() > 0
    with pytest.raises(AssertionError, match="fused kernel"):
        model(x, s, t)  # and sampling or teacher training use the fused kernel


def test_adaptive_weight_and_logit_normal_times():
    opts = LSD.Config(adaptive_p=1.0, adaptive_c=0.5)
    obj = LSD(opts, Context(interpolant("linear"), 1.0, (3, 2)))
    losses = torch.tensor([0.1, 1.0, 4.0], requires_grad=True)
    s = t = torch.zeros(3)
    out = obj.combine(losses, s, t, 0)
    d = 6  # entries per sample
    exact = losses.detach() / (d * losses.detach() + 0.5)
    assert float(out.value.detach()) == pytest.approx(float(exact.mean()))
    out.value.backward()  # sg(w) · L: the weight is not differentiated
    assert torch.allclose(losses.grad, 1 / (3 * (d * losses.detach() + 0.5)))
    assert out.logs["off"] == pytest.approx(float(losses.detach().mean()))  # logs stay unweighted
    # a self-distillation's diagonal regresses the conditional velocity: it stays unweighted; MeanFlow weighs all
    diag_and_off = obj.combine(losses, s, t, 1).value
    assert float(diag_and_off.detach()) == pytest.approx(0.1 + float(exact[1:].mean()))
    mf = MeanFlow(MeanFlow.Config(adaptive_p=1.0, adaptive_c=0.5), Context(interpolant("linear"), 1.0, (3, 2)))
    assert float(mf.combine(losses, s, t, 1).value.detach()) == pytest.approx(float(exact[0] + exact[1:].mean()))
    torch.manual_seed(0)
    s, t, k = logit_normal_times(40_000, 0.75, 0.4, 1.0)
    assert k == 30_000 and torch.equal(s[:k], t[:k]) and bool((s[k:] <= t[k:]).all())
    logit = torch.logit(s[:k].double())
    assert abs(float(logit.mean()) - 0.4) < 0.03 and abs(float(logit.std()) - 1.0) < 0.03
    paper = {"method": "meanflow", "adaptive_p": 1, "time": "logit_normal"}  # the paper's c, mean, std: defaults
    mf = parse_config({**GMM, "objective": paper}).objective
    assert (mf.adaptive_p, mf.adaptive_c, mf.time, mf.time_mean, mf.time_std, mf.eta) == \
        (1.0, 1e-3, "logit_normal", 0.4, 1.0, 0.75)
    with pytest.raises(ConfigError, match="choose one"):
        parse_config({**GMM, "objective": {"method": "lsd", "adaptive_p": 1, "learned_weight": True}})
    with pytest.raises(ConfigError, match="leave gap_start and anneal_steps unset"):
        parse_config({**GMM, "objective": {**paper, "anneal_steps": 10}})


def test_adaptive_weight_at_p_one_half_is_the_pseudo_huber_loss():
    """``sg(w) L`` with ``w = (‖Δ‖² + c)^{−1/2}`` has the gradient of ``(2/D)(sqrt(‖Δ‖² + c) − sqrt(c))``: small
    residuals are weighted as squares, large ones as their norm (LMD's recipe, ``adaptive_p: 0.5``)."""
    c, d = 1e-3, 6
    obj = LSD(LSD.Config(adaptive_p=0.5, adaptive_c=c), Context(interpolant("linear"), 1.0, (3, 2)))
    delta = torch.tensor([[1e-3] * d, [0.05] * d, [3.0, -2.0, 0.0, 1.0, 0.5, 0.0]], requires_grad=True)
    obj.combine(delta.pow(2).mean(1), torch.zeros(3), torch.zeros(3), 0).value.backward()
    huber = torch.tensor(delta.detach().tolist(), requires_grad=True)
    ((huber.pow(2).sum(1) + c).sqrt() - c**0.5).mul(2 / d).mean().backward()
    assert torch.allclose(delta.grad, huber.grad, rtol=1e-5, atol=0)
    g, r = delta.grad.norm(dim=1), delta.detach().norm(dim=1)
    assert float((g[2] / r[2]) / (g[0] / r[0])) < 0.02  # per unit of residual: outlier ≪ inlier


def test_accumulation_gives_the_whole_batch_gradient():
    def deterministic(model, batch, step):
        x = batch["x1"]
        v = model.v(x, torch.full((len(x),), 0.3), torch.full((len(x),), 0.8))
        return Loss(v.pow(2).mean() + x.mean(), {"part": float(x.abs().mean())})

    states, src = [], build_source(GMM["data"])
    batch = src.sample(64)
    for parts in (1, 4):
        cfg = parse_config({**GMM, "train": {"batch_size": 64, "accumulate": parts, "device": "cpu"}})
        torch.manual_seed(0)
        st = build_state(cfg, src)
        st.objective.loss = deterministic
        r = train_step(st, batch)
        states.append((st, r))
    (a, ra), (b, rb) = states
    assert ra.loss == pytest.approx(rb.loss, rel=1e-6) and ra.logs["part"] == pytest.approx(rb.logs["part"])
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    with pytest.raises(ConfigError, match="accumulate=3 must divide batch_size=64"):
        parse_config({**GMM, "train": {"batch_size": 64, "accumulate": 3}})


def test_activation_checkpointing_same_gradients_refused_under_jvp():
    grads = []
    for ckpt in (False, True):
        model = _unet(ckpt)
        x = torch.randn(4, 3, 8, 8)
        model.v(x, torch.full((4,), 0.3), torch.full((4,), 0.3)).pow(2).mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.allclose(g, h, atol=1e-6) for g, h in zip(*grads))
    unet = {"data": {"kind": "images", "name": "digits"}, "model": {"net": "unet", "checkpointing": True}}
    assert parse_config({**unet, "objective": {"method": "fm"}}).model.checkpointing
    with pytest.raises(ConfigError, match="model.checkpointing does not compose with the JVP of objective 'lsd'"):
        parse_config({**unet, "objective": {"method": "lsd"}})


@pytest.mark.parametrize("method", ["lsd", "meanflow"])
def test_compile_with_a_jvp_objective_trains_and_resumes_like_eager(tmp_path, monkeypatch, method):
    """torch.compile (its graph capture and autograd, with the eager backend: inductor's C++ build takes about a
    minute on this CPU; benchmarks/gpu_check.sh measures it on a GPU) under the JVP of the objective."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    rows = []
    for compiled in (False, True):
        cfg = parse_config({**GMM, "objective": {"method": method},
                            "train": {"steps": 4, "batch_size": 64, "compile": compiled, "device": "cpu",
                                      "log_every": 1, "ckpt_every": 2}})
        out = tmp_path / str(compiled)
        train(cfg, out, progress=False, stop_after=2)
        train(cfg, out, progress=False, resume=True)
        rows.append([ln.split(",")[1] for ln in (out / "metrics.csv").read_text().splitlines()[1:]])
    assert len(rows[0]) == 4 and rows[0] == rows[1] and all(math.isfinite(float(v)) for v in rows[0])


def test_several_emas_side_by_side(tmp_path):
    cfg = parse_config({**GMM, "train": {"steps": 5, "batch_size": 64, "ema": [0.0, 0.9], "device": "cpu"}})
    train(cfg, tmp_path / "r", progress=False)
    raw, first, slow = (load_run(tmp_path / "r", ema=e) for e in (False, True, "0.9"))
    for p, q in zip(raw.model.parameters(), first.model.parameters()):
        assert torch.equal(p, q)  # decay 0: the EMA is the model
    assert any(not torch.equal(p, r) for p, r in zip(raw.model.parameters(), slow.model.parameters()))
    with pytest.raises(ConfigError, match=r"no EMA with decay 0\.99; the run keeps 0, 0\.9"):
        load_run(tmp_path / "r", ema="0.99")
    assert parse_config({"train": {"ema": 0.999}}).train.ema == [0.999]
    ckpt = tmp_path / "r" / "checkpoint.safetensors"
    old = load_state(ckpt)
    save_state(ckpt, {**old, "ema": old["ema"]["0"]})  # a checkpoint from before several EMAs: the first's
    assert all(torch.equal(p, q) for p, q in zip(load_run(tmp_path / "r").model.parameters(),
                                                  first.model.parameters()))
