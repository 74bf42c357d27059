"""Teachers from outside flowmaps: a diffusers save_pretrained folder (a tiny random UNet2DModel built here) and a
user's Python factory, through distillation, pairs and sampling; classifier-free guidance end to end."""

import json
import sys

import numpy as np
import pytest
import torch

from flowmaps.app.cli import main as cli_main
from flowmaps.core.frames import VPSchedule
from flowmaps.core.objectives import Context
from flowmaps.core.objectives.distill import LMD
from flowmaps.core.paths import interpolant
from flowmaps.core.sampling import from_noise, sample
from flowmaps.core.teachers import DiffusersTeacher, GaussianMixture, PythonTeacher, guided
from flowmaps.errors import CheckpointError, ConfigError
from flowmaps.pairs.store import PairStore, read_manifest
from flowmaps.run.build import load_run, open_teacher
from flowmaps.run.config import parse_config
from flowmaps.run.teachers import diffusers_teacher, python_teacher
from flowmaps.run.trainer import train

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A class-conditional ε-prediction UNet2DModel (10 classes + the null class) under DDPM's linear schedule."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                 layers_per_block=1, norm_num_groups=8, down_block_types=("DownBlock2D",) * 2,
                                 up_block_types=("UpBlock2D",) * 2, num_class_embeds=11)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    root = tmp_path_factory.mktemp("diffusers") / "pipe"
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(root)
    return root


def test_diffusers_velocity_is_the_exact_conversion_of_the_network(folder):
    teacher, identity = diffusers_teacher(DiffusersTeacher(path=str(folder), null_class=True), sigma0=1.0)
    assert teacher.shape == (1, 8, 8) and teacher.num_classes == 10
    unet = diffusers.UNet2DModel.from_pretrained(folder / "unet", use_safetensors=True).eval()
    abar = diffusers.DDPMScheduler.from_pretrained(folder / "scheduler").alphas_cumprod.double()
    tau = torch.tensor([999, 600, 250, 10])
    a, s = abar[tau].sqrt(), (1 - abar[tau]).sqrt()
    t = a / (a + s)  # t = a σ0 / (a σ0 + s), σ0 = 1
    assert teacher.t0 == pytest.approx(float(t[0]))
    x, label = torch.randn(4, 1, 8, 8), torch.tensor([0, 9, 10, 1])
    x_tau = x / torch.sqrt(t**2 + (1 - t) ** 2)[:, None, None, None].float()
    with torch.no_grad():
        eps = unet(x_tau, tau, class_labels=label).sample.double()
    a4, s4 = a[:, None, None, None], s[:, None, None, None]
    want = (x_tau.double() - s4 * eps) / a4 - eps  # b = x̂1 − σ0 ε̂
    assert torch.allclose(teacher.velocity(x, t.float(), label).double(), want, rtol=1e-4, atol=1e-4)
    assert identity["kind"] == "diffusers" and identity["prediction"] == "epsilon"
    assert sorted(identity["files"]) == ["scheduler/scheduler_config.json", "unet/config.json",
                                         "unet/diffusion_pytorch_model.safetensors"]


def test_bad_diffusers_folders_are_one_line(folder, tmp_path, monkeypatch):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for name in ("config.json", "scheduler_config.json"):
        src = folder / ("unet" if name == "config.json" else "scheduler") / name
        (pickled / name).write_text(src.read_text())
    (pickled / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ConfigError, match=r"holds only pickled weights \(diffusion_pytorch_model.bin\), which "
                                          "flowmaps never loads"):
        diffusers_teacher(DiffusersTeacher(path=str(pickled)), 1.0)
    with pytest.raises(ConfigError, match="no such folder"):
        diffusers_teacher(DiffusersTeacher(path=str(tmp_path / "nowhere")), 1.0)
    with pytest.raises(ConfigError, match="null_class is set but the model has no class embedding"):
        unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                     layers_per_block=1, norm_num_groups=8, down_block_types=("DownBlock2D",) * 2,
                                     up_block_types=("UpBlock2D",) * 2)
        diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler()).save_pretrained(tmp_path / "u")
        diffusers_teacher(DiffusersTeacher(path=str(tmp_path / "u"), null_class=True), 1.0)
    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"^teacher.kind=diffusers needs the diffusers package: pip install "
                                          r"'flowmaps\[diffusers\]'$"):
        diffusers_teacher(DiffusersTeacher(path=str(folder)), 1.0)


def test_pairs_and_samples_from_a_diffusers_folder_guided(folder, tmp_path, capsys):
    out = tmp_path / "pairs"
    args = ["pairs", str(folder), "--n", "6", "--out", str(out), "--solver", "euler", "--steps", "3",
            "--null-class", "--guidance", "1.5", "--quiet"]
    assert cli_main(args) == 0
    m = read_manifest(out)
    assert m["guidance"] == 1.5 and m["teacher"]["guidance"] == 1.5 and m["num_classes"] == 10
    assert m["t0"] == pytest.approx(VPSchedule(diffusers.DDPMScheduler().alphas_cumprod).t0)
    # the stored endpoint is the guided Euler solve from α_{t0} z at t0
    teacher, _, _ = open_teacher(folder, 1.5, {"null_class": True})
    z, x1 = PairStore(out).pairs(torch.arange(6))
    label = torch.arange(6) % 10
    x, grid = from_noise(teacher, z, 3, teacher.t0)
    assert float(grid[0]) == pytest.approx(teacher.t0)
    assert torch.allclose(sample(teacher, x, grid, "euler", label).x, x1, atol=1e-5)
    plain, _, _ = open_teacher(folder, 0.0, {"null_class": True})
    assert not torch.allclose(sample(plain, x, grid, "euler", label).x, x1, atol=1e-3)
    # the same store at another scale is another teacher: refused
    assert cli_main(args[:-3] + ["--guidance", "0", "--quiet"]) == 2
    assert "was made with guidance=1.5, this run asks guidance=0.0" in capsys.readouterr().err
    # sampling the folder itself, guided, 2 steps of EDM's Heun from σ(t0)
    npy = tmp_path / "s.npy"
    assert cli_main(["sample", str(folder), "--null-class", "--guidance", "1.5", "--solver", "edm", "--steps", "2",
                     "--n", "4", "--class", "1", "--out", str(npy)]) == 0
    assert np.load(npy).shape == (4, 1, 8, 8) and "NFE 3" in capsys.readouterr().out
    assert cli_main(["sample", str(folder), "--guidance", "1", "--n", "2", "--out", str(tmp_path / "x.npy")]) == 2
    assert capsys.readouterr().err.strip() == ("flowmaps: error: --guidance=1 needs a class-conditional teacher with a "
                                               "null class (trained with label dropout: model.cond_drop; diffusers: "
                                               "null_class)")


def digits_lmd(folder, **teacher):
    return parse_config({
        "data": {"kind": "images", "name": "digits"}, "path": {"sigma0": 1.0},
        "model": {"net": "unet", "channels": 8, "mult": [1, 2], "num_res_blocks": 1, "time_dim": 8, "max_freq": 1,
                  "num_classes": 10},
        "objective": {"method": "lmd"}, "teacher": {"kind": "diffusers", "path": str(folder), **teacher},
        "train": {"steps": 2, "batch_size": 8, "ckpt_every": 2, "log_every": 1}})


def test_distill_a_diffusers_teacher_pins_it(folder, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    cfg = digits_lmd(copy, null_class=True, guidance=2.0)
    run = tmp_path / "lmd"
    train(cfg, run, progress=False, stop_after=1)
    loaded = load_run(run)
    assert loaded.t0 == pytest.approx(VPSchedule(diffusers.DDPMScheduler().alphas_cumprod).t0)
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"the teacher changed since this run started \(files differ"):
        train(cfg, run, resume=True, progress=False)
    no_labels = {**cfg.model_dump(mode="json"), "data": {"kind": "images", "name": "digits", "labels": False},
                 "model": {**cfg.model.model_dump(mode="json"), "num_classes": 0}}
    with pytest.raises(ConfigError, match="is class-conditional with 10 classes; set model.num_classes=10"):
        train(parse_config(no_labels), tmp_path / "r2", progress=False)
    with pytest.raises(ConfigError, match="teacher.kind=diffusers is converted to the linear path"):
        train(parse_config({**cfg.model_dump(mode="json"), "path": {"interpolant": "trig", "sigma0": 1.0}}),
              tmp_path / "r3", progress=False)


def test_lmd_times_lie_in_the_teachers_range():
    ctx = Context(interpolant("linear"), 1.0, (2,), teacher=lambda x, t, label=None: x, t0=0.2)
    lmd = LMD(LMD.Config(eta=0.25), ctx)
    s, t, n_diag = lmd.draw_times(4000, 0, "cpu")
    assert n_diag == 1000 and float(s.min()) >= 0.2 and float(t.max()) <= 1.0 and bool((s <= t).all())
    assert float(s.min()) < 0.21 and float(t.max()) > 0.99


FACTORY = '''
import torch
from flowmaps.core.teachers import GaussianMixture, Teacher

def gmm(std=0.1, t0=0.0):
    mix = GaussianMixture.random(2, 4, std, 1.0, 0)
    return Teacher(mix.teacher(sigma0=mix.std()), mix.std(), (2,), t0=t0, num_classes=4)
'''


def test_python_teacher_distills_and_is_pinned(tmp_path):
    src = tmp_path / "my_teacher.py"
    src.write_text(FACTORY)
    mix = GaussianMixture.random(2, 4, 0.1, 1.0, 0)
    tree = {"data": {"kind": "gmm", "components": 4, "labels": True}, "path": {"sigma0": mix.std()},
            "model": {"width": 32, "depth": 2, "time_dim": 8, "max_freq": 1, "num_classes": 4},
            "objective": {"method": "lmd"},
            "teacher": {"kind": "python", "target": f"{src}:gmm", "options": {"t0": 0.05}, "guidance": 0.5},
            "train": {"steps": 6, "batch_size": 16, "ckpt_every": 2, "log_every": 1}}
    run = tmp_path / "run"
    train(parse_config(tree), run, progress=False, stop_after=2)
    loaded = load_run(run)
    assert loaded.t0 == 0.05
    teacher, identity = python_teacher(PythonTeacher(target=f"{src}:gmm", options={"t0": 0.05}), 1.0, None)
    assert identity == {"kind": "python", "target": f"{src}:gmm", "options": {"t0": 0.05},
                        "file_sha256": identity["file_sha256"]}
    x, t, k = torch.randn(8, 2), torch.rand(8), torch.arange(8) % 4
    want = 1.5 * mix.velocity(x, t, sigma0=mix.std(), label=k) - 0.5 * mix.velocity(x, t, sigma0=mix.std())
    assert torch.allclose(guided(teacher.b, 0.5, 4)(x, t, k), want, atol=1e-6)
    src.write_text(FACTORY + "\n# edited\n")  # another teacher: a resume is refused
    with pytest.raises(CheckpointError, match=r"the teacher changed since this run started \(file_sha256 differ"):
        train(parse_config(tree), run, resume=True, progress=False)
    with pytest.raises(ConfigError, match="has no nothing"):
        python_teacher(PythonTeacher(target=f"{src}:nothing"), 1.0, (2,))
    with pytest.raises(ConfigError, match="cannot import no_such_module_here"):
        python_teacher(PythonTeacher(target="no_such_module_here:f"), 1.0, (2,))


def test_label_dropout_trains_a_guidable_velocity(tmp_path, capsys):
    """FM with model.cond_drop learns the class-conditional and the unconditional velocity of a labelled mixture:
    the guided velocity is near the closed form (1 + w) b(·|k) − w b(·|∅) (1,600 steps); `sample --guidance`
    uses it."""
    mix = GaussianMixture.random(2, 4, 0.1, 1.0, 0)
    tree = {"data": {"kind": "gmm", "components": 4, "labels": True},
            "model": {"width": 64, "depth": 3, "time_dim": 8, "max_freq": 16, "num_classes": 4, "cond_drop": 0.3},
            "objective": {"method": "fm"},
            "train": {"steps": 1600, "batch_size": 256, "lr": 3e-3, "schedule": "cosine", "ema": 0.99,
                      "ckpt_every": 1600, "log_every": 400}}
    run = tmp_path / "cfg_fm"
    train(parse_config(tree), run, progress=False)
    model = load_run(run).model
    assert model.num_classes == 4 and model.null_class and model.net.label_emb.num_embeddings == 5
    s0, n = model.sigma0, 4000
    t = 0.05 + 0.9 * torch.rand(n)
    x1, k = mix.sample_labelled(n)
    x = (1 - t)[:, None] * s0 * torch.randn(n, 2) + t[:, None] * x1  # I_t
    want = 2 * mix.velocity(x, t, sigma0=s0, label=k) - mix.velocity(x, t, sigma0=s0)  # w = 1

    def rel(v):
        return float((v - want).norm(dim=1).mean() / want.norm(dim=1).mean())

    with torch.no_grad():
        assert rel(guided(model.velocity, 1.0, 4)(x, t, k)) < 0.2  # measured 0.10
        assert rel(model.velocity(x, t, k)) > 0.3  # the unguided conditional velocity is not it (0.40)
    assert cli_main(["sample", str(run), "--guidance", "2", "--steps", "8", "--class", "1", "--n", "400",
                     "--out", str(tmp_path / "g.npy")]) == 0
    x = torch.from_numpy(np.load(tmp_path / "g.npy"))
    assert torch.allclose(x.mean(0), mix.means[1].float(), atol=0.05)
    with pytest.raises(ConfigError, match="model.cond_drop trains a class-conditional model without a teacher"):
        parse_config({**tree, "model": {**tree["model"], "num_classes": 0}})
    assert "guidance" not in json.dumps(load_run(run).identity)


def test_encode_train_and_decode_latents(tmp_path, tiny_cfg, capsys):
    """`flowmaps encode` with a tiny AutoencoderKL: a resumable latent store equal to c · mean(E(x)); training on
    it; `sample` decodes the model's latents into images."""
    import yaml

    from flowmaps.data import build_source
    from flowmaps.data.latents import KIND, encode_store
    from flowmaps.io.shards import ShardReader
    from flowmaps.run.autoencoders import load_autoencoder

    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8),
                                  latent_channels=2, norm_num_groups=8, sample_size=8, scaling_factor=0.5)
    vae.save_pretrained(tmp_path / "vae")
    cfg = tmp_path / "digits.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"kind": "images", "name": "digits"}}))
    store = tmp_path / "latents"
    assert cli_main(["encode", str(cfg), "--vae", str(tmp_path / "vae"), "--out", str(store), "--shard-size", "500",
                     "--quiet"]) == 0
    assert "1438 images (1, 8, 8) -> latents (2, 4, 4) in 3 shards" in capsys.readouterr().out
    reader = ShardReader(store, KIND)
    images = build_source({"kind": "images", "name": "digits"})
    with torch.no_grad():
        want = 0.5 * vae.encode(images.x[700:710]).latent_dist.mean
    rows = reader.get(np.arange(700, 710))
    assert torch.allclose(torch.from_numpy(rows["x1"]), want, atol=1e-5)
    assert torch.equal(torch.from_numpy(rows["label"]), images.labels[700:710])
    encode, _, identity = load_autoencoder(tmp_path / "vae")  # an interrupted store resumes to the same bytes
    about = {"autoencoder": identity, "data": reader.manifest["data"]}
    part = encode_store(encode, images.x, images.labels, tmp_path / "cut", about, 500, progress=False, stop_after=1)
    assert not part["complete"]
    done = encode_store(encode, images.x, images.labels, tmp_path / "cut", about, 500, progress=False)
    assert done["shards"] == reader.manifest["shards"]
    run = tmp_path / "latent_fm"
    assert cli_main(["train", str(tiny_cfg), "--out", str(run), "--quiet", "train.steps=3", "train.ckpt_every=3",
                     f"data={{kind: latents, path: {store}}}", "model.num_classes=10"]) == 0
    assert cli_main(["sample", str(run), "--steps", "2", "--n", "5", "--class", "3", "--out",
                     str(tmp_path / "x.npy")]) == 0
    assert np.load(tmp_path / "x.npy").shape == (5, 1, 8, 8)  # decoded images, not latents
    assert cli_main(["encode", str(cfg), "--vae", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().endswith(f"autoencoder {tmp_path / 'nowhere'}: no such folder")
