"""Class-conditional models end to end: labelled data, the exact class-conditional velocity of a Gaussian mixture,
distillation that learns each class's flow map, labelled teacher pairs, and sampling a chosen class from the CLI.

The closed form: class k of the mixture is one Gaussian N(μ_k, s² I), so with the linear interpolant from
N(0, σ0² I) its flow map is affine, ``X_{0,1}(z | k) = μ_k + (s/σ0) z``.
"""

import numpy as np
import pytest
import torch

from flowmaps.app.cli import main as cli_main
from flowmaps.app.evaluate import evaluate
from flowmaps.core.metrics import wasserstein2
from flowmaps.core.sampling import class_labels, noise
from flowmaps.core.teachers import GaussianMixture
from flowmaps.data import build_source
from flowmaps.errors import ConfigError
from flowmaps.pairs.generate import PairTeacher, generate_pairs
from flowmaps.run.build import load_run
from flowmaps.run.config import parse_config
from flowmaps.run.trainer import train

DATA = {"kind": "gmm", "dim": 2, "components": 4, "std": 0.1, "radius": 1.0, "seed": 0, "labels": True}
MIX = GaussianMixture.random(2, 4, 0.1, 1.0, 0)  # class means ≥ 1.1 apart
S0 = MIX.std()


def exact_class_map(z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    return MIX.means[label].float() + (0.1 / S0) * z


def cfg(**over):
    tree = {"seed": 0, "data": DATA, "model": {"width": 128, "depth": 3, "max_freq": 1.0, "num_classes": 4},
            "objective": {"method": "lmd"}, "teacher": {"kind": "analytic"},
            "train": {"steps": 1200, "batch_size": 256, "lr": 3e-3, "schedule": "cosine", "ema": 0.99,
                      "log_every": 400, "ckpt_every": 1200}}
    for key, value in over.items():
        section, name = key.split("__")
        tree[section] = {**tree[section], name: value}
    return parse_config(tree)


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    """Class-conditional LMD distilled from the mixture's exact class-conditional velocity (1,200 steps)."""
    run = tmp_path_factory.mktemp("cond") / "lmd"
    train(cfg(), run, progress=False)
    return run


def test_labelled_mixture_batches_carry_the_component():
    src = build_source(DATA)
    torch.manual_seed(0)
    batch = src.sample(4000)
    assert src.num_classes == 4 and batch["label"].shape == (4000,)
    nearest = torch.cdist(batch["x1"].double(), MIX.means).argmin(1)
    assert torch.equal(nearest, batch["label"])  # components 0.1 wide, means ≥ 1 apart: the label is the nearest


def test_class_velocity_is_the_single_gaussian_velocity_and_its_flow_is_affine():
    x, t = torch.randn(256, 2), torch.rand(256)
    label = torch.arange(256) % 4
    for k in range(4):
        one = GaussianMixture(MIX.means[k:k + 1], MIX.stds[k:k + 1], torch.ones(1))
        sel = label == k
        assert torch.allclose(MIX.velocity(x[sel], t[sel], sigma0=S0, label=label[sel]),
                              one.velocity(x[sel], t[sel], sigma0=S0), atol=1e-6)
    z = S0 * torch.randn(256, 2)
    flow = MIX.flow_map(z, torch.zeros(256), torch.ones(256), sigma0=S0, label=label)
    assert torch.allclose(flow, exact_class_map(z, label), atol=1e-5)


def test_conditional_lmd_learns_every_class_flow_map(cond_run):
    model = load_run(cond_run).model
    assert model.num_classes == 4
    n = 2000
    z = S0 * torch.randn(n, 2, generator=torch.Generator().manual_seed(7))
    label = class_labels(4, n)
    with torch.no_grad():
        out = model(z, torch.zeros(n), torch.ones(n), label)
    err = (out - exact_class_map(z, label)).norm(dim=1)
    for k in range(4):  # class means are ≥ 1.1 apart, each class 0.1 wide (measured: 0.02–0.03)
        assert float(err[label == k].mean()) < 0.04, (k, float(err[label == k].mean()))
    # balanced labels reproduce the equal-weight mixture: W2 within 1.25x of the exact map's on the same noise
    # (the floor of 4,000 samples; measured 1.05x)
    source, n = load_run(cond_run).source, 4000
    ref, z = source.reference(n, seed=1235), noise(n, (2,), model.sigma0, 1234)
    floor = wasserstein2(ref, exact_class_map(z, class_labels(4, n)))
    rows = evaluate(model, source, [1], n, seed=1234, solvers=("map",))
    assert rows[0]["w2"] < 1.25 * floor, (rows[0]["w2"], floor)


def test_sample_a_chosen_class_from_the_cli(cond_run, tmp_path, capsys):
    out = tmp_path / "k2.npy"
    assert cli_main(["sample", str(cond_run), "--class", "2", "--n", "500", "--out", str(out)]) == 0
    x = torch.from_numpy(np.load(out))
    assert torch.allclose(x.mean(0), MIX.means[2].float(), atol=0.02)
    assert float(x.std(0).mean()) == pytest.approx(0.1, rel=0.3)  # the class is 0.1 wide (measured 0.124)
    assert cli_main(["sample", str(cond_run), "--class", "4", "--n", "10", "--out", str(tmp_path / "bad.npy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"flowmaps: error: {cond_run}: class 4 requested, but the model has classes 0 … 3"]
    assert not (tmp_path / "bad.npy").exists()


def test_class_on_an_unconditional_run_is_refused(tmp_path, capsys):
    run = tmp_path / "uncond"
    train(cfg(model__num_classes=0, train__steps=2, train__ckpt_every=2), run, progress=False)
    assert cli_main(["sample", str(run), "--class", "0", "--n", "10", "--out", str(tmp_path / "x.npy")]) == 2
    assert capsys.readouterr().err.strip() == (f"flowmaps: error: {run}: class 0 requested, but the model has no "
                                               "classes (it is unconditional)")


def test_labels_must_exist_and_fit_the_embedding(tmp_path):
    unlabelled = {k: v for k, v in DATA.items() if k != "labels"}
    with pytest.raises(ConfigError, match=r"model.num_classes=4, but the data \(gmm2d\) has no labels"):
        train(cfg(data__labels=False), tmp_path / "a", progress=False)
    assert not (tmp_path / "a").exists()
    with pytest.raises(ConfigError, match=r"model.num_classes=3, but the data \(gmm2d\) has 4 classes"):
        train(cfg(model__num_classes=3), tmp_path / "b", progress=False)
    with pytest.raises(ConfigError, match="data.label: Extra inputs are not permitted"):
        parse_config({"data": {**unlabelled, "label": True}})


def test_a_conditional_teacher_needs_a_conditional_student(cond_run, tmp_path):
    with pytest.raises(ConfigError, match="is class-conditional with 4 classes; set model.num_classes=4"):
        train(cfg(model__num_classes=0, data__labels=False, teacher__kind="run", teacher__path=str(cond_run)),
              tmp_path / "s", progress=False)


def test_conditional_teacher_pairs_are_balanced_and_labelled(tmp_path):
    def phi(z, label):
        return exact_class_map(z, label), 1

    m = generate_pairs(PairTeacher(phi, {"kind": "analytic", "data": DATA}, S0, (2,), num_classes=4), 96,
                       tmp_path / "p", solver="map", steps=1, shard_size=40, batch_size=16, progress=False)
    assert m["num_classes"] == 4
    src = build_source({"kind": "pairs", "path": str(tmp_path / "p")})
    torch.manual_seed(0)
    batch = src.sample(500)
    assert src.num_classes == 4
    assert torch.allclose(batch["x1"], exact_class_map(batch["x0"], batch["label"]), atol=1e-6)
    nearest = torch.cdist(batch["x1"].double(), MIX.means).argmin(1)
    assert torch.equal(nearest, batch["label"])
