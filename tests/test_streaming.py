"""Streaming image data: ``flowmaps prepare`` (folder, .npy, .npz → a checksummed, resumable uint8 store with
labels), batches as a function of (seed, step, rank) read by DataLoader workers, each rank its own share, and a
training run on a store that resumes bit for bit."""

import re

import numpy as np
import pytest
import torch

from clitools import error_line, forked_cli, metric_rows
from flowmaps.data import build_source
from flowmaps.data.prepare import open_source, prepare
from flowmaps.data.stream import ImageStore, StoreSource, batch_positions, flips
from flowmaps.errors import DataError, StoreError
from flowmaps.io.checkpoint import load_state, state_diff
from flowmaps.io.shards import read_manifest, shard_file, write_manifest
from flowmaps.run.config import parse_config
from flowmaps.run.trainer import train


def _images(n=50, shape=(3, 8, 8), seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def _store(tmp_path, a, name="store", shard_size=16, **kw):
    np.save(tmp_path / f"{name}.npy", a)
    items, about = open_source(tmp_path / f"{name}.npy", **kw)
    prepare(items, about, tmp_path / name, shard_size=shard_size, progress=False)
    return ImageStore(tmp_path / name)


def test_prepare_arrays_and_folders_round_trip_with_labels(tmp_path):
    a = _images()
    st = _store(tmp_path, a)
    assert st.shape == (3, 8, 8) and st.num_classes == 0 and len(st) == 50
    got = st.get(np.arange(50))
    assert np.array_equal(got["x"], a) and (got["label"] == -1).all()
    u = a / 127.5 - 1
    assert st.std == pytest.approx(float(u.std()), rel=1e-9)
    # an .npz of channels-last floats in [-1, 1] with labels
    hwc = (a.transpose(0, 2, 3, 1) / 127.5 - 1).astype(np.float32)
    np.savez(tmp_path / "set.npz", images=hwc, y=np.arange(50) % 4)
    items, about = open_source(tmp_path / "set.npz", key="images", label_key="y")
    prepare(items, about, tmp_path / "npz", shard_size=20, progress=False)
    z = ImageStore(tmp_path / "npz")
    assert np.array_equal(z.get(np.arange(50))["x"], a) and z.num_classes == 4
    assert z.get(np.array([5, 6]))["label"].tolist() == [1, 2]
    # an image folder: labels from its sub-folders, decoded by two loader workers
    from PIL import Image

    for i in range(6):
        (tmp_path / "imgs" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(a[i].transpose(1, 2, 0)).save(tmp_path / "imgs" / f"c{i % 2}" / f"{i}.png")
    items, about = open_source(tmp_path / "imgs")
    prepare(items, about, tmp_path / "folder", shard_size=4, workers=2, progress=False)
    f = ImageStore(tmp_path / "folder")
    assert f.num_classes == 2 and read_manifest(tmp_path / "folder")["classes"] == ["c0", "c1"]
    got = f.get(np.arange(6))
    order = [0, 2, 4, 1, 3, 5]  # c0/0, c0/2, c0/4, c1/1, ...
    assert np.array_equal(got["x"], a[order]) and got["label"].tolist() == [0, 0, 0, 1, 1, 1]


def test_prepare_resumes_and_refuses_another_source(tmp_path):
    a = _images()
    st = _store(tmp_path, a)
    full = read_manifest(tmp_path / "store")
    m = dict(full, shards={k: v for k, v in full["shards"].items() if k != "2"}, complete=False)
    write_manifest(tmp_path / "store", m)  # as if killed before shard 2
    (tmp_path / "store" / shard_file(2, "x")).unlink()
    with pytest.raises(StoreError, match="incomplete store"):
        ImageStore(tmp_path / "store")
    items, about = open_source(tmp_path / "store.npy")
    again = prepare(items, about, tmp_path / "store", shard_size=16, progress=False)
    assert again["shards"] == full["shards"] and ImageStore(tmp_path / "store").checksum == st.checksum
    np.save(tmp_path / "other.npy", _images(seed=1)[:40])
    items, about = open_source(tmp_path / "other.npy")
    with pytest.raises(StoreError, match="was made with"):
        prepare(items, about, tmp_path / "store", shard_size=16, progress=False)


def test_batches_are_a_function_of_seed_step_and_rank(tmp_path):
    n, b = 50, 8
    share = [np.concatenate([batch_positions(n, b, 7, k, rank, 2) for k in range(3)]) for rank in (0, 1)]
    assert len(set(share[0])) == 24 and not set(share[0]) & set(share[1])  # each rank its own rows of epoch 0
    assert not np.array_equal(batch_positions(n, b, 7, 0), batch_positions(n, b, 8, 0))  # the seed matters
    assert np.array_equal(batch_positions(n, b, 7, 5, 1, 2), batch_positions(n, b, 7, 5, 1, 2))
    st = _store(tmp_path, _images())
    src = StoreSource(st, flip=True, workers=2)
    it = src.batches(b, step=0, seed=7)
    run = [next(it) for _ in range(4)]
    later = next(src.batches(b, step=3, seed=7))  # a resumed stream: batch 3 again, without batches 0-2
    assert torch.equal(later["x1"], run[3]["x1"])
    inline = next(StoreSource(st, flip=True, workers=0).batches(b, step=3, seed=7))
    assert torch.equal(inline["x1"], later["x1"])  # workers change nothing
    rows = torch.from_numpy(st.get(batch_positions(n, b, 7, 3))["x"]).float() / 127.5 - 1
    mirrored = torch.from_numpy(flips(b, 7, 3))
    assert 0 < int(mirrored.sum()) < b
    assert torch.equal(later["x1"], torch.where(mirrored[:, None, None, None], rows.flip(-1), rows))


def test_training_streams_from_a_store_and_resumes_bit_identical(tmp_path):
    _store(tmp_path, _images(n=40, shape=(1, 8, 8)))
    cfg = parse_config({"data": {"kind": "prepared", "path": str(tmp_path / "store"), "hflip": True, "workers": 2},
                        "model": {"net": "unet", "channels": 8, "mult": [1, 2], "num_res_blocks": 1},
                        "train": {"steps": 6, "batch_size": 8, "log_every": 1, "ckpt_every": 2, "device": "cpu"}})
    train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "b", progress=False, stop_after=3)  # stopped between checkpoints
    train(cfg, tmp_path / "b", resume=True, progress=False)
    a, b = (load_state(tmp_path / r / "checkpoint.safetensors") for r in ("a", "b"))
    assert state_diff(a["model"], b["model"]) == [] and state_diff(a["ema"], b["ema"]) == []
    assert state_diff(a["optim"], b["optim"]) == []
    losses = [[r["loss"] for r in metric_rows(tmp_path / run)] for run in ("a", "b")]
    assert len(losses[0]) == 6 and losses[0] == losses[1]


def test_prepare_errors_are_one_line(tmp_path):
    np.savez(tmp_path / "two.npz", a=_images(5), b=_images(5))
    from PIL import Image

    (tmp_path / "mixed").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "mixed" / "a.png")
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(tmp_path / "mixed" / "b.png")
    np.save(tmp_path / "flat.npy", np.zeros((5, 7), np.float32))
    cases = {
        (tmp_path / "two.npz",): "pass --key to choose the images",
        (tmp_path / "mixed",): r"b\.png: 8×9 pixels, the first image has 8×8; pass --size",
        (tmp_path / "flat.npy",): r"images must be \(N, C, H, W\) or \(N, H, W, C\)",
        (tmp_path / "none",): "no such file or folder",
        (tmp_path / "two.npz", "--key", "c"): "no array named 'c'",
    }
    for args, msg in cases.items():
        r = forked_cli("prepare", *args, "--out", tmp_path / "out", "--quiet")
        assert r.returncode == 2 and re.search(msg, error_line(r)), r.stderr
    with pytest.raises(DataError, match="needs torchvision|not found|no such folder"):
        open_source(tmp_path, torchvision_set="cifar10")
    r = forked_cli("prepare", tmp_path / "two.npz", "--key", "a", "--out", tmp_path / "ok", "--quiet")
    assert r.returncode == 0 and ImageStore(tmp_path / "ok").shape == (3, 8, 8)
    assert build_source({"kind": "prepared", "path": str(tmp_path / "ok")}).shape == (3, 8, 8)
