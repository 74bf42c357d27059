"""Images: the two-time UNet, image data, the digits classifier, the Fréchet distance, LPIPS wiring, CLI runs."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from flowmaps.app.cli import main
from flowmaps.app.digits_classifier import accuracy, digits_split
from flowmaps.core.metrics.digits import WEIGHTS, load_classifier
from flowmaps.core.metrics.frechet import (
    feature_extractor,
    frechet_distance,
    frechet_from_stats,
    inception_features,
    inception_score,
)
from flowmaps.core.models import FlowMap
from flowmaps.core.nets.discriminator import build_discriminator
from flowmaps.core.nets.image_disc import ImageDiscriminator
from flowmaps.core.nets.unet import UNet
from flowmaps.core.objectives.lmm import last_layer
from flowmaps.core.paths import interpolant
from flowmaps.data import build_source
from flowmaps.data.images import ImagesData, load_digits, load_npy
from flowmaps.data.sources import hflip
from flowmaps.errors import ConfigError, DataError
from flowmaps.run.config import parse_config

SMALL = dict(channels=8, mult=(1, 2), num_res_blocks=1)


def randomize(net: nn.Module) -> nn.Module:
    """Give the zero-initialised layers random weights, so every input can change the output."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return net


# ----- networks ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,options", [
    ((1, 8, 8), dict(SMALL)),
    ((3, 16, 16), dict(channels=8, mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(8,), dropout=0.1)),
    ((1, 32, 32), dict(channels=8, mult=(1, 1, 2, 2), num_res_blocks=1, attn_resolutions=(16, 4), num_classes=10)),
    ((3, 8, 16), dict(channels=8, mult=(1, 2), num_res_blocks=1)),
])
def test_unet_shapes_and_identity_at_init(shape, options):
    net = UNet(shape, 64, **options)
    x = torch.randn(3, *shape)
    label = torch.tensor([0, 1, 2]) if options.get("num_classes") else None
    out = net(x, torch.randn(3, 64), label)
    assert out.shape == x.shape
    assert out.abs().max() == 0  # zero output layer: an untrained flow map is the identity
    assert last_layer(FlowMap(net, interpolant("linear"))) is net.out.weight
    d = ImageDiscriminator(shape)
    assert d(x).shape == (3,)
    assert isinstance(build_discriminator(shape), ImageDiscriminator)


def test_unet_bad_configs_are_clear():
    with pytest.raises(ValueError, match="divisible by 4"):
        UNet((1, 8, 10), 64, channels=8, mult=(1, 2, 2))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        UNet((64,), 64)
    with pytest.raises(ValueError, match="dropout"):
        UNet((1, 8, 8), 64, channels=8, dropout=1.5)


def test_unet_conditioning_changes_the_output():
    torch.manual_seed(0)
    net = randomize(UNet((1, 8, 8), 64, channels=8, mult=(1, 2), num_res_blocks=1, num_classes=10)).eval()
    model = FlowMap(net, interpolant("linear"), sigma0=1.0, sigma_data=0.5, form="flowmap")
    x = torch.randn(4, 1, 8, 8)
    s, t = torch.full((4,), 0.2), torch.full((4,), 0.7)
    lab = torch.tensor([1, 2, 3, 4])
    base = model.v(x, s, t, lab)
    assert (model.v(x, s + 0.1, t, lab) - base).abs().max() > 1e-3  # s
    assert (model.v(x, s, t + 0.1, lab) - base).abs().max() > 1e-3  # t
    assert (model.v(x, s, t, lab.flip(0)) - base).abs().max() > 1e-3  # label
    assert (model.v(x, s, t, None) - base).abs().max() > 1e-3  # no label: the unconditional embedding
    # each sample is processed independently (no leakage across the batch through norms or attention)
    assert torch.allclose(model.v(x[:2], s[:2], t[:2], lab[:2]), base[:2], atol=1e-5)
    # X_{s,s} = id by construction
    assert torch.equal(model(x, s, s, lab), x)


def test_flowmap_jvp_through_the_unet():
    torch.manual_seed(0)
    net = randomize(UNet((1, 8, 8), 64, channels=8, mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,))).double()
    model = FlowMap(net, interpolant("linear"), sigma0=1.0, sigma_data=0.5, form="flowmap").double()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    s, t = torch.full((2,), 0.3, dtype=torch.float64), torch.full((2,), 0.6, dtype=torch.float64)
    out, dt = torch.func.jvp(lambda tt: model(x, s, tt), (t,), (torch.ones_like(t),))
    assert torch.allclose(out, model(x, s, t))
    # reverse mode gives the same per-sample derivative: d/dt_i Σ w ⊙ X_{s,t}(x) = Σ w_i ⊙ ∂_t X_i
    w = torch.randn_like(x)
    tt = t.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((model(x, s, tt) * w).sum(), tt)
    assert torch.allclose(grad, (dt * w).flatten(1).sum(1), rtol=1e-9, atol=1e-9)
    h = 1e-7  # and a central difference, loosely (the time embedding has frequencies up to 1000π)
    fd = (model(x, s, t + h) - model(x, s, t - h)) / (2 * h)
    assert torch.allclose(dt, fd, rtol=1e-3, atol=1e-3 * float(dt.detach().abs().max()))
    assert dt.abs().max() > 1e-3


# ----- data -------------------------------------------------------------------------------------------------


def test_digits_source_split_range_and_upsampling():
    cfg = ImagesData(name="digits")
    src = build_source(cfg)
    assert src.shape == (1, 8, 8) and src.num_classes == 10
    assert len(src.heldout) == 359
    b = src.sample(64)
    assert b["x1"].shape == (64, 1, 8, 8) and b["label"].shape == (64,)
    x, _y = load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.min() == -1 and x.max() == 1
    # the held-out rows never appear in training batches
    held = {tuple(r.flatten().tolist()) for r in src.heldout}
    train_rows = {tuple(r.flatten().tolist()) for r in src.sample(4000)["x1"]}
    dup = sum(1 for r in held if r in train_rows)
    assert dup <= 5  # the digits have a handful of exact duplicate images across the split
    assert torch.equal(build_source(cfg).heldout, src.heldout)  # fixed by the seed
    assert not torch.equal(build_source(ImagesData(name="digits", seed=1)).heldout, src.heldout)
    ref = src.reference(10_000)
    assert ref.shape == (359, 1, 8, 8)  # all of the held-out split
    for size in (16, 32):
        up = build_source(ImagesData(name="digits", size=size))
        assert up.shape == (1, size, size)
        big = up.heldout
        assert big.min() >= -1 - 1e-5 and big.max() <= 1 + 1e-5
        down = torch.nn.functional.adaptive_avg_pool2d(big, 8)
        assert (down - src.heldout).abs().mean() < 0.2  # same digits, resampled (and blurred)
    with pytest.raises(ConfigError, match="data.szie: Extra inputs are not permitted"):
        parse_config({"data": {"kind": "images", "name": "digits", "szie": 16}})
    with pytest.raises(ConfigError, match="data.name: Input should be 'digits'"):
        parse_config({"data": {"kind": "images", "name": "imagenet"}})


def test_hflip_flips_about_half():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(1000, 1, 1, 1)
    torch.manual_seed(0)
    y = hflip(x)
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    kept = (y == x).flatten(1).all(1)
    assert bool((flipped | kept).all()) and 400 < int(flipped.sum()) < 600


def test_npy_images_are_validated(tmp_path):
    p = tmp_path / "imgs.npy"
    np.save(p, np.random.default_rng(0).integers(0, 256, (5, 3, 4, 4), dtype=np.uint8))
    x = load_npy(p)
    assert x.shape == (5, 3, 4, 4) and x.min() >= -1 and x.max() <= 1
    src = build_source(ImagesData(name="npy", path=str(p), hflip=True))
    assert src.shape == (3, 4, 4) and "label" not in src.sample(3)
    bad = {"flat": np.zeros((5, 16), np.float32), "twochan": np.zeros((5, 2, 4, 4), np.float32),
           "range": np.full((5, 1, 4, 4), 3.0, np.float32)}
    msgs = {"flat": r"\(N, C, H, W\)", "twochan": "C = 1 or 3", "range": r"\[-1, 1\]"}
    for name, arr in bad.items():
        np.save(tmp_path / f"{name}.npy", arr)
        with pytest.raises(DataError, match=msgs[name]):
            load_npy(tmp_path / f"{name}.npy")
    with pytest.raises(DataError, match="no such file"):
        load_npy(tmp_path / "missing.npy")


def test_image_folder_with_class_subfolders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    src = build_source(ImagesData(name="folder", path=str(tmp_path), size=8))
    assert src.shape == (3, 8, 8) and src.num_classes == 2
    b = src.sample(20)
    assert set(b["label"].tolist()) <= {0, 1} and b["x1"].abs().max() <= 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        build_source(ImagesData(name="folder", path=str(tmp_path / "empty")))
    with pytest.raises(DataError, match="no such folder"):
        build_source(ImagesData(name="folder", path=str(tmp_path / "none")))


def test_torchvision_sets_need_a_local_root(tmp_path):
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match=r"flowmaps\[images\]"):
            build_source(ImagesData(name="cifar10", path=str(tmp_path)))
        return
    with pytest.raises(DataError, match="not found|local folder"):
        build_source(ImagesData(name="cifar10", path=str(tmp_path / "nothing")))


# ----- digits classifier and Fréchet distance -------------------------------------------------------------


def test_shipped_digits_classifier_accuracy_and_size():
    assert WEIGHTS.stat().st_size < 300_000
    _, _, xh, yh = digits_split()
    net = load_classifier()
    assert accuracy(net, xh, yh) >= 0.95
    # upsampled digits are read back at 8×8 and still classified
    up = torch.nn.functional.interpolate(xh, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    assert accuracy(net, up, yh) >= 0.9


def test_frechet_matches_the_gaussian_closed_form():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    ca, cb = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
    ma, mb = rng.normal(size=4), rng.normal(size=4)
    from scipy.linalg import sqrtm

    root = sqrtm(ca)
    exact = ((ma - mb) ** 2).sum() + np.trace(ca + cb - 2 * np.real(sqrtm(root @ cb @ root)))
    assert frechet_from_stats(ma, ca, mb, cb) == pytest.approx(exact, rel=1e-8)
    # diagonal covariances: |μ_a − μ_b|² + Σ (σ_a − σ_b)²
    sa, sb = np.array([1.0, 2.0, 0.5]), np.array([0.5, 1.0, 3.0])
    closed = 1.0 + ((sa - sb) ** 2).sum()
    assert frechet_from_stats(np.zeros(3), np.diag(sa**2), np.r_[1.0, 0, 0], np.diag(sb**2)) == pytest.approx(closed)
    # from samples, the estimate converges to the closed form
    g = torch.Generator().manual_seed(0)
    xa = torch.randn(200_000, 3, generator=g, dtype=torch.float64) * torch.tensor(sa)
    xb = torch.randn(200_000, 3, generator=g, dtype=torch.float64) * torch.tensor(sb) + torch.tensor([1.0, 0, 0])
    assert frechet_distance(xa, xb) == pytest.approx(closed, rel=0.02)


def test_frechet_on_digits_features_self_noise_and_split():
    ext = feature_extractor("digits")
    x, _, xh, _ = digits_split()
    fx, fh = ext(x)["features"], ext(xh)["features"]
    assert frechet_distance(fx, fx) < 1e-6
    noise = torch.rand(len(xh), 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fd_noise = frechet_distance(ext(noise)["features"], fh)
    fd_split = frechet_distance(fx, fh)
    assert fd_split < 0.05 * fd_noise, (fd_split, fd_noise)
    with pytest.raises(ConfigError, match="unknown feature extractor"):
        feature_extractor("clip")


def test_inception_score_extremes_and_missing_weights(monkeypatch):
    sharp = 50 * torch.eye(10).repeat(20, 1)  # confident and uniform over 10 classes
    assert inception_score(sharp) == pytest.approx(10, rel=1e-3)
    assert inception_score(torch.zeros(200, 10)) == pytest.approx(1.0)
    monkeypatch.delenv("FLOWMAPS_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(ConfigError, match="FLOWMAPS_INCEPTION_WEIGHTS"):
        inception_features(None)


# ----- perceptual loss --------------------------------------------------------------------------------------


def test_lpips_needs_its_weights(tmp_path):
    from flowmaps.core.objectives import Context
    from flowmaps.core.objectives.lmm import LMM

    opts = LMM.Config(distance="lpips", lpips_weights=str(tmp_path / "vgg16.pth"))
    with pytest.raises(ConfigError, match="lpips"):
        LMM(opts, Context(interpolant("linear"), 1.0, (1, 8, 8)))


def test_lpips_wiring_with_random_weights():
    pytest.importorskip("lpips")
    from flowmaps.core.perceptual import LPIPSDistance

    d = LPIPSDistance(None, random_init=True)
    a = torch.rand(3, 1, 8, 8) * 2 - 1
    b = torch.rand(3, 1, 8, 8) * 2 - 1
    assert d(a, a).abs().max() < 1e-6
    dist = d(a, b)
    assert dist.shape == (3,) and bool((dist > 0).all())
    a.requires_grad_(True)
    d(a, b).sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0


def test_digits_distance_is_perceptual_and_differentiable():
    from flowmaps.core.objectives import Context
    from flowmaps.core.objectives.lmm import LMM
    from flowmaps.core.perceptual import DigitsDistance
    from flowmaps.data.images import load_digits

    d = DigitsDistance()
    x = load_digits()[0][:6].float()
    assert d(x, x).abs().max() < 1e-6
    shifted = torch.roll(x, 1, dims=-1)  # the same digits one pixel over: close in features, far in pixels
    other = torch.roll(x, 3, dims=0)  # other digits
    assert bool((d(x, shifted) < d(x, other)).float().mean() >= 0.5)
    a = x.clone().requires_grad_(True)
    d(a, other).sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    ctx = Context(interpolant("linear"), 1.0, (2,))
    with pytest.raises(ValueError, match="compares images"):
        LMM(LMM.Config(distance="digits"), ctx)


# ----- command line -----------------------------------------------------------------------------------------


def _tiny(method_tree: str, data: str, steps: int = 6) -> list[str]:
    return [f"data={data}", "model.net=unet", "model.channels=8", "model.mult=[1, 2]", "model.num_res_blocks=1",
            f"objective={method_tree}", f"train.steps={steps}", "train.batch_size=16", "train.log_every=2",
            f"train.ckpt_every={steps}", "eval.n=64", "eval.steps=[1, 2]"]


def test_cli_image_runs_train_sample_eval(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("seed: 0\n")
    run = tmp_path / "edm"
    assert main(["train", str(cfg), "--out", str(run), "--quiet",
                 *_tiny("{method: edm}", "{kind: images, name: digits}")]) == 0
    assert main(["sample", str(run), "--n", "16", "--steps", "2", "--out", str(tmp_path / "grid.png")]) == 0
    png = (tmp_path / "grid.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert "fd_digits" in out
    import json

    rows = json.loads((run / "eval.json").read_text())
    assert all(math.isfinite(r["fd_digits"]) and r["fd_digits"] > 0 for r in rows)
    # lines matching with the adversarial loss on image pairs: the convolutional discriminator on real digits
    pairs = tmp_path / "pairs"
    assert main(["pairs", str(run), "--n", "64", "--out", str(pairs), "--solver", "euler", "--steps", "2",
                 "--quiet"]) == 0
    lmm = tmp_path / "lmm"
    assert main(["train", str(cfg), "--out", str(lmm), "--quiet",
                 *_tiny("{method: lmm, adversarial: true, adv_start: 2, disc: {channels: 8}}",
                        f"{{kind: pairs, path: {pairs}}}")]) == 0
    metrics = (lmm / "metrics.csv").read_text()
    assert "adv_lambda" in metrics.splitlines()[0]
    assert main(["sample", str(lmm), "--n", "16", "--edm-grid", "0,1", "--out", str(tmp_path / "lmm.png")]) == 0


def test_unknown_unet_option_is_one_clear_line():
    with pytest.raises(ConfigError, match="chanels"):
        parse_config({"model": {"net": "unet", "chanels": 8}})
