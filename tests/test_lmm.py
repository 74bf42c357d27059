"""Lines matching: the exact endpoint map is learned, line and consistency samplers, adaptive weight, EDM pieces."""

import math

import pytest
import torch
from torch import nn

from flowmaps.core.models import FlowMap
from flowmaps.core.nets.discriminator import build_discriminator
from flowmaps.core.objectives.lmm import adaptive_weight, last_layer
from flowmaps.core.paths import interpolant, sigma_to_t, velocity_to_denoiser
from flowmaps.core.sampling import (
    EDM_SUBSETS,
    constant_speed_grid,
    edm_grid,
    edm_sigmas,
    edm_subset_grid,
    sample,
    solve_edm,
    start_state,
)
from flowmaps.core.teachers import GaussianMixture
from flowmaps.data.sources import GMMData
from flowmaps.errors import ConfigError
from flowmaps.pairs.generate import PairTeacher, generate_pairs
from flowmaps.run.build import load_run
from flowmaps.run.config import parse_config
from flowmaps.run.trainer import train

MIX = GaussianMixture.random(2, components=4, std=0.2, radius=1.0, seed=3)
S0 = MIX.std()
DATA = GMMData(dim=2, components=4, std=0.2, radius=1.0, seed=3).model_dump(mode="json")


def exact_phi(z):
    n = z.shape[0]
    return MIX.flow_map(z, torch.zeros(n), torch.ones(n), sigma0=S0, rtol=1e-7, atol=1e-8)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmm") / "pairs"
    teacher = PairTeacher(lambda z, label=None: (exact_phi(z), 0), {"kind": "analytic", "data": DATA}, S0, (2,))
    generate_pairs(teacher, 8192, root, solver="adaptive", shard_size=4096, progress=False)
    return root


def lmm_cfg(store, **objective):
    return parse_config({"seed": 0, "data": {"kind": "pairs", "path": str(store)},
                         "model": {"width": 128, "depth": 3},
                         "objective": {"method": "lmm", **objective},
                         "train": {"steps": 1500, "batch_size": 512, "lr": 2e-3, "schedule": "cosine", "ema": 0.99,
                                   "log_every": 500, "ckpt_every": 1500}})


def test_lmm_learns_the_exact_endpoint_map(store, tmp_path):
    train(lmm_cfg(store, time="uniform"), tmp_path / "run", progress=False)
    model = load_run(tmp_path / "run").model
    assert model.form == "endpoint"
    z = S0 * torch.randn(2000, 2, generator=torch.Generator().manual_seed(99))  # fresh noise, not in the store
    x1 = exact_phi(z)
    naive = (x1 - x1.mean(0)).norm(dim=1).pow(2).mean().sqrt()  # predicting the mean: the data scale
    err0 = (model.endpoint(z, torch.zeros(2000)) - x1).norm(dim=1)
    assert err0.median() < 0.08 * S0 and err0.pow(2).mean().sqrt() < 0.25 * naive
    for t in (0.3, 0.6, 0.9):
        tt = torch.full((2000,), t)
        err = (model.endpoint((1 - t) * z + t * x1, tt) - x1).norm(dim=1)
        assert err.pow(2).mean().sqrt() < 0.06 * S0, (t, err.pow(2).mean().sqrt())
    # one and two deterministic steps land on the teacher's samples
    for grid in ([0.0, 1.0], [0.0, 0.5, 1.0]):
        x = sample(model, z, torch.tensor(grid, dtype=torch.float64), solver="map").x
        assert (x - x1).norm(dim=1).median() < 0.08 * S0


class ExactEndpoint(FlowMap):
    """``f(x, s)`` of an affine teacher ``Φ(z) = μ + A z``: invert ``x = (1−s) z + s Φ(z)`` for z, return Φ(z)."""

    def __init__(self, mu, a):
        super().__init__(nn.Identity(), interpolant("linear"), S0, 1.0, form="endpoint")
        self.mu, self.a = mu, a

    def v(self, x, s, t, label=None):
        sb = s[:, None].double()
        z = (x.double() - sb * self.mu) / ((1 - sb) + sb * self.a)
        f = self.mu + self.a * z
        return ((f - x.double()) / (1 - sb)).to(x.dtype)


def test_line_sampler_with_exact_endpoint_map_walks_the_straight_line():
    mu, std = torch.tensor([0.7, -0.3], dtype=torch.float64), torch.tensor([0.3, 1.1], dtype=torch.float64)
    gauss = GaussianMixture(mu[None], std[None], torch.ones(1))
    model = ExactEndpoint(mu, std / S0)
    z = S0 * torch.randn(500, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    n = len(z)
    x1 = gauss.flow_map(z, torch.zeros(n), torch.ones(n), sigma0=S0)
    assert torch.allclose(model.endpoint(z, torch.zeros(n, dtype=torch.float64)), x1, atol=1e-6)
    grid = torch.tensor([0.0, 0.2, 0.55, 0.9, 1.0], dtype=torch.float64)
    x = z
    for i in range(len(grid) - 1):
        x = sample(model, x, grid[i:i + 2], solver="map").x
        u = grid[i + 1]
        assert torch.allclose(x, (1 - u) * z + u * x1, atol=1e-9)  # exactly on the line at every step
    # consistency-style sampling: one step is the map itself; a second step re-noises to I_u with fresh
    # noise, off the teacher's lines unless Φ is an isometry, so its spread is the formula below, not std
    torch.manual_seed(0)
    zs = S0 * torch.randn(50_000, 2, dtype=torch.float64)
    one = sample(model, zs, torch.tensor([0.0, 1.0], dtype=torch.float64), solver="renoise").x
    assert torch.allclose(one, model.endpoint(zs, torch.zeros(len(zs), dtype=torch.float64)))
    u, a = 0.4, std / S0
    xs = sample(model, zs, torch.tensor([0.0, u, 1.0], dtype=torch.float64), solver="renoise").x
    want = a * S0 * torch.sqrt((1 - u) ** 2 + u**2 * a**2) / ((1 - u) + u * a)
    assert torch.allclose(xs.mean(0), mu, atol=0.02) and torch.allclose(xs.std(0), want, rtol=0.02)
    assert not torch.allclose(want, std, rtol=0.05)
    # evaluation draws the re-noising stream apart from the initial noise of the same seed
    from flowmaps.app.evaluate import run_sampler
    from flowmaps.core.sampling import noise

    x0 = noise(1000, (2,), model.sigma0, seed=3).double()
    renoised, line = run_sampler(model, x0, "renoise", 2, seed=3).x, run_sampler(model, x0, "map", 2, seed=3).x
    assert not torch.allclose(renoised, line)


def test_adaptive_weight_matches_hand_computation():
    torch.manual_seed(0)
    w = torch.randn(3, 4, requires_grad=True)
    a, y, b = torch.randn(4), torch.randn(3), torch.randn(4)
    rec = (w @ a - y).pow(2).sum()
    adv = 2.5 * (w @ b).sum()
    g_rec = 2 * torch.outer((w @ a - y).detach(), a)  # ∂|Wa − y|²/∂W
    g_adv = 2.5 * torch.outer(torch.ones(3), b)  # ∂ 2.5 Σ Wb / ∂W
    want = g_rec.norm() / (g_adv.norm() + 1e-4)
    assert torch.allclose(adaptive_weight(rec, adv, w), want, rtol=1e-6)
    model = FlowMap(__import__("flowmaps.core.nets.mlp", fromlist=["MLP"]).MLP(2, 64, 16, 2, num_classes=3),
                    interpolant("linear"))
    assert last_layer(model) is model.net.out.weight
    assert build_discriminator((2,))(torch.randn(5, 2)).shape == (5,)


def test_adversarial_training_resumes_exactly(store, tmp_path):
    cfg = lmm_cfg(store, adversarial=True, adv_start=2, disc={"width": 32, "depth": 2}, time="sot",
                  sot_steps=[0, 3])
    cfg = parse_config(cfg.model_dump(mode="json"), ["train.steps=6", "train.ckpt_every=2", "train.batch_size=64",
                                                     "model.width=32"])
    train(cfg, tmp_path / "full", progress=False)
    train(cfg, tmp_path / "cut", progress=False, stop_after=4)
    train(cfg, tmp_path / "cut", resume=True, progress=False)
    from flowmaps.io.checkpoint import load_state

    a = load_state(tmp_path / "full" / "checkpoint.safetensors")
    b = load_state(tmp_path / "cut" / "checkpoint.safetensors")
    for part in ("model", "objective"):
        assert a[part].keys() == b[part].keys() and any("disc" in k for k in a["objective"])
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])
    assert a["aux_optim"]["disc"]["state"]  # the discriminator's optimizer is checkpointed
    rows = (tmp_path / "full" / "metrics.csv").read_text()
    assert "adv_lambda" in rows


def test_lmm_options_and_times(store):
    with pytest.raises(ConfigError, match="lpips_weights"):
        from flowmaps.data import build_source
        from flowmaps.run.build import build_objective

        cfg = lmm_cfg(store, distance="lpips")
        build_objective(cfg, build_source(cfg.data))
    from flowmaps.data import build_source
    from flowmaps.run.build import build_objective

    cfg = lmm_cfg(store, time="sot", sot_steps=[0, 3, 5])
    obj, _ = build_objective(cfg, build_source(cfg.data))
    t = obj.draw_times(1000, "cpu")
    want = edm_grid(18, obj.ctx.sigma0)[[0, 3, 5]].float()
    assert set(t.tolist()) == set(want.tolist())
    with pytest.raises(ConfigError, match="data.kind=pairs"):
        parse_config({"objective": {"method": "lmm"}})  # lines matching trains on pairs, not on toy data
    assert obj.ctx.sigma0 == pytest.approx(S0)  # the store's noise scale, not the pairs' measured std
    wrong = parse_config(cfg.model_dump(mode="json"), ["path.sigma0=1.0"])
    with pytest.raises(ConfigError, match="store"):
        build_objective(wrong, build_source(wrong.data))


def test_edm_grids_and_heun_nfe():
    g = edm_grid(18)
    assert len(g) == 19 and float(g[0]) == pytest.approx(1 / 81) and float(g[-1]) == 1.0
    assert [len(edm_subset_grid(s)) - 1 for s in EDM_SUBSETS] == [1, 2, 3, 3, 4]
    assert torch.allclose(edm_subset_grid((0, 3, 5), 0.5), torch.cat([edm_grid(18, 0.5)[[0, 3, 5]], g[-1:]]))
    cs = constant_speed_grid(4, sigma0=1.0, sigma_max=80.0, frame="sigma")
    assert torch.allclose(cs, sigma_to_t(torch.tensor([80.0, 60, 40, 20, 0], dtype=torch.float64), 1.0))
    assert torch.allclose(constant_speed_grid(4), torch.linspace(0, 1, 5, dtype=torch.float64))
    m = FlowMap(nn.Identity(), interpolant("linear"), sigma0=2.0)
    assert torch.allclose(start_state(m, torch.ones(1, 2), g), (1 - g[0]).float() * torch.ones(1, 2))
    # EDM's Heun sampler on the analytic velocity: 35 NFE and the exact flow map's samples
    z = S0 * torch.randn(2000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    s = solve_edm(lambda x, t: MIX.velocity(x, t, sigma0=S0), z, S0, 18)
    assert s.nfe == 35
    assert (s.x - exact_phi(z)).norm(dim=1).mean() < 0.05 * S0
    # the denoiser/velocity conversions are inverse to each other
    from flowmaps.core.paths import denoiser_to_velocity

    b = lambda x, t: MIX.velocity(x, t, sigma0=S0)  # noqa: E731
    back = denoiser_to_velocity(velocity_to_denoiser(b, S0), S0)
    t = torch.full((2000,), 0.37, dtype=torch.float64)
    assert torch.allclose(back(z, t), b(z, t), atol=1e-10)
    assert math.isclose(float(edm_sigmas(18)[0]), 80.0)


def test_edm_objective_learns_the_velocity(tmp_path):
    cfg = parse_config({"seed": 0, "data": {"kind": "gmm", "dim": 2, "components": 4, "std": 0.2, "seed": 3},
                        "model": {"width": 128, "depth": 3}, "objective": {"method": "edm"},
                        "train": {"steps": 1000, "batch_size": 512, "lr": 2e-3, "schedule": "cosine", "ema": 0.99,
                                  "log_every": 500, "ckpt_every": 1000}})
    train(cfg, tmp_path / "edm", progress=False)
    model = load_run(tmp_path / "edm").model
    x1 = MIX.sample(2000, torch.Generator().manual_seed(5))
    z = S0 * torch.randn(2000, 2, generator=torch.Generator().manual_seed(6))
    for t in (0.2, 0.5, 0.8):
        tt = torch.full((2000,), t)
        x = (1 - t) * z + t * x1
        exact = MIX.velocity(x, tt, sigma0=S0)
        err = (model.velocity(x, tt) - exact).norm(dim=1).pow(2).mean() / exact.norm(dim=1).pow(2).mean()
        assert err < 0.08, (t, float(err))  # relative mean squared error; a zero velocity scores 1


def test_default_time_law_trains_at_the_samplers_start(store):
    """Every EDM-grid sampler starts at σ_max = 80: the default time law draws σ ≥ σ_max/2 at least 1 % of the time
    (EDM's log-normal law: about 2·10⁻⁶), and never beyond σ_max."""
    from flowmaps.core.paths import t_to_sigma
    from flowmaps.data import build_source
    from flowmaps.run.build import build_objective

    cfg = lmm_cfg(store)
    assert cfg.objective.time == "karras"
    obj, _ = build_objective(cfg, build_source(cfg.data))
    torch.manual_seed(0)
    sigma = t_to_sigma(obj.draw_times(200_000, "cpu").double(), obj.ctx.sigma0)
    assert float((sigma >= 40).double().mean()) >= 0.01 and float(sigma.max()) <= 80.0 + 1e-6
    lognormal = parse_config(cfg.model_dump(mode="json"), ["objective.time=lognormal"])
    obj, _ = build_objective(lognormal, build_source(lognormal.data))
    sigma = t_to_sigma(obj.draw_times(200_000, "cpu").double(), obj.ctx.sigma0)
    assert float((sigma >= 40).double().mean()) < 1e-3
