"""What a hostile but realistic user tried: inputs too large for memory, degenerate data, corrupt or edited files,
a teacher replaced under a distillation, a first start on a full disk, ambiguous flags. Each is one line with
the promised exit status, no traceback, and every file on disk as it was (docs/guarantees.md)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from clitools import TINY, cli, error_line, forked_cli, snapshot
from flowmaps.io.checkpoint import load_state, state_diff
from flowmaps.io.shards import shard_file

NEW = ["train", "{cfg}", "--out", "{d}/new"]
ARRAY = [*NEW, "data={{kind: array}}"]
SAMPLE = ["sample", "{run}", "--out", "{d}/s.npy"]
UNET_ATTN_3 = "model={{net: unet, channels: 8, mult: [1, 2], attn_resolutions: [3]}}"
OOM = r"out of memory \(.*you tried to allocate \d+ bytes.*\); ask for a smaller model, batch or --n"
HOSTILE = {
    # name: (command line, expected part of the one-line error); exit status 2, nothing on disk touched
    "a network too large for memory": ([*NEW, "model.width=100000000000"], OOM),
    "a sample set too large for the disk": ([*SAMPLE, "--n", "100000000000000"],
                                            r"s\.npy: 100000000000000 samples need \d+ bytes, the disk has \d+ free; "
                                            "ask for a smaller --n"),
    "attention at a resolution the UNet lacks": ([*NEW, "data={{kind: images, name: digits}}", UNET_ATTN_3],
                                                 r"UNet attention at resolutions \[3\]: a 8×8 image runs at \[8, 4\]"),
    "lines matching on toy data with a path": (["train", "{cfg}", "--out", "{d}/new", "objective.method=lmm",
                                                "data.path=null"], r"data\.path: Extra inputs are not permitted"),
    "data that does not vary": ([*ARRAY, "data.path={d}/const.npy"],
                                r"const\.npy: the data has standard deviation 0; training needs data that varies"),
    "NaN in a sampling grid": ([*SAMPLE, "--grid", "0,nan,1"], r"time grid must hold finite numbers"),
    "one sample per evaluation row": (["eval", "{run}", "--n", "1"], r"--n: expected an integer >= 2, got '1'"),
    "output into a missing folder": (["sample", "{run}", "--out", "{d}/nodir/sub/s.npy"],
                                     r"nodir/sub/s\.npy: no folder .*nodir/sub; create it first"),
    "a pair store onto a file": (["pairs", "{run}", "--n", "10", "--out", "{d}/exists.npy"],
                                 r"exists\.npy: exists and is not a folder"),
    "objects in an image array": ([*NEW, "data={{kind: images, name: npy, path: {d}/objects.npy}}"],
                                  r"objects\.npy: unreadable or corrupt \.npy file \(it holds Python objects"),
    "a text file named .npy": ([*ARRAY, "data.path={d}/text.npy"],
                               r"text\.npy: unreadable or corrupt \.npy file \(not a NumPy \.npy array"),
    "re-noising a velocity model": ([*SAMPLE, "--solver", "renoise"],
                                    r"solver 'renoise' samples endpoint models, not a velocity model"),
    "--steps with --grid": ([*SAMPLE, "--steps", "2", "--grid", "0,0.5,1"], r"not allowed with argument --steps"),
    "EDM indices out of order": ([*SAMPLE, "--edm-grid", "1,0"], r"EDM step indices must be strictly increasing"),
    "a demo into a foreign folder": (["demo", "--fast", "--quiet", "--out", "{d}/foreign"],
                                     r"foreign: exists and is not a demo folder"),
}


@pytest.fixture
def inputs(tmp_path, fm_run, tiny_cfg):
    d = tmp_path / "inputs"
    d.mkdir()
    np.save(d / "const.npy", np.ones((64, 2), dtype=np.float32))
    np.save(d / "objects.npy", np.array([[object(), 1.0]], dtype=object), allow_pickle=True)
    (d / "text.npy").write_text("1,2\n3,4\n")
    np.save(d / "exists.npy", np.zeros((2, 2), dtype=np.float32))
    (d / "foreign").mkdir()
    (d / "foreign" / "notes.txt").write_text("mine")
    run = tmp_path / "run"
    shutil.copytree(fm_run, run)
    return {"d": d, "cfg": tiny_cfg, "run": run}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_is_one_line_exit_2_nothing_touched(name, inputs, tmp_path):
    args, expect = HOSTILE[name]
    before = snapshot(tmp_path)
    r = forked_cli(*[a.format(**inputs) for a in args])
    assert r.returncode == 2, r.stderr
    assert re.search(expect, error_line(r)), r.stderr
    assert snapshot(tmp_path) == before


def _store(tmp_path: Path, teacher: Path) -> Path:
    out = tmp_path / "pairs"
    r = forked_cli("pairs", teacher, "--n", "64", "--out", out, "--solver", "euler", "--steps", "2",
                   "--shard-size", "32", "--quiet")
    assert r.returncode == 0, r.stderr
    return out


def test_a_corrupt_or_non_finite_pair_shard_is_refused_naming_it(tmp_path, fm_run, tiny_cfg):
    """Training from a store verifies every shard's sha256 and values once (then by size and mtime): a flipped
    bit, and NaN under a matching checksum, are refused naming the shard."""
    store = _store(tmp_path, fm_run)
    args = ["train", tiny_cfg, "--quiet", f"data={{kind: pairs, path: {store}}}", "train.steps=2"]
    assert forked_cli(*args, "--out", tmp_path / "ok").returncode == 0
    shard = store / shard_file(1, "x1")
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x10
    shard.write_bytes(bytes(data))
    before = snapshot(tmp_path)
    r = forked_cli(*args, "--out", tmp_path / "a")
    assert r.returncode == 2 and re.search(rf"{re.escape(str(shard))}: sha256 mismatch \(corrupt\)", error_line(r))
    assert snapshot(tmp_path) == before
    rows = np.load(shard)
    rows[3, 0] = np.nan
    np.save(shard, rows)
    manifest = store / "manifest.json"
    import hashlib
    import json

    m = json.loads(manifest.read_text())
    m["shards"]["1"]["sha256"]["x1"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    manifest.write_text(json.dumps(m))
    r = forked_cli(*args, "--out", tmp_path / "b")
    assert r.returncode == 2 and re.search(rf"{re.escape(str(shard))}: holds non-finite values", error_line(r))
    assert not (tmp_path / "b").exists()


def test_an_edited_checkpoint_header_is_refused_and_kept(tmp_path, fm_run, tiny_cfg):
    """The checksum covers the checkpoint's metadata too: a step counter edited from 30 to 10 is refused, and the
    resume that refuses it leaves the file as it was."""
    run = tmp_path / "run"
    shutil.copytree(fm_run, run)
    ckpt = run / "checkpoint.safetensors"
    data = ckpt.read_bytes()
    edited = data.replace(b'[\\"step\\", 30]', b'[\\"step\\", 10]', 1)
    assert edited != data and len(edited) == len(data)
    ckpt.write_bytes(edited)
    before = snapshot(tmp_path)
    r = forked_cli("train", tiny_cfg, "--out", run, "--quiet", "--resume", "train.steps=30", "train.ckpt_every=10")
    assert r.returncode == 2 and "corrupt checkpoint (checksum mismatch)" in error_line(r)
    assert snapshot(tmp_path) == before


def test_a_teacher_replaced_between_a_kill_and_the_resume_is_refused(tmp_path, fm_run, tiny_cfg):
    other = tmp_path / "other"
    r = cli("train", tiny_cfg, "--out", other, "--quiet", "train.steps=30", "train.ckpt_every=10", "seed=4")
    assert r.returncode == 0, r.stderr
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    shutil.copytree(fm_run, teacher)
    cfg = tmp_path / "lmd.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "objective": {"method": "lmd"},
                                   "teacher": {"kind": "run", "path": str(teacher)},
                                   "train": {**TINY["train"], "steps": 6, "ckpt_every": 3}}))
    r = cli("train", cfg, "--out", student, "--quiet", "--resume", fault=True)  # FAULT_KILL_AT_STEP unset: runs
    assert r.returncode == 0, r.stderr
    assert cli("train", cfg, "--out", student, "--quiet", "--resume").returncode == 0  # unchanged teacher: fine
    for name in ("config.yaml", "checkpoint.safetensors"):
        shutil.copy(other / name, teacher / name)
    before = snapshot(student)
    r = forked_cli("train", cfg, "--out", student, "--quiet", "--resume", "train.steps=6")
    assert r.returncode == 2, r.stderr
    assert re.search(r"the teacher changed since this run started \(config_sha256, checkpoint_sha256 differ",
                     error_line(r))
    assert snapshot(student) == before


def test_a_failed_first_start_does_not_block_the_same_command(tmp_path, tiny_cfg, fm_run):
    """A first `train` (no --resume) that fails on a full disk leaves a run without a checkpoint; the same
    command, once there is room, starts it again and ends as an undisturbed run."""
    run = tmp_path / "run"
    args = ("train", tiny_cfg, "--out", run, "--quiet", "train.steps=30", "train.ckpt_every=10")
    r = forked_cli(*args, max_file_size=20_000)
    assert r.returncode == 1 and "write failed" in error_line(r)
    r = forked_cli(*args)
    assert r.returncode == 0, r.stderr
    assert state_diff(load_state(fm_run / "checkpoint.safetensors"), load_state(run / "checkpoint.safetensors")) == []


def test_too_many_skipped_steps_stop_with_exit_3(tmp_path, tiny_cfg):
    run = tmp_path / "run"
    r = cli("train", tiny_cfg, "--out", run, "--quiet", "objective.method=nan_fm", "train.nonfinite=skip",
            f"objective.nan_at={list(range(1, 41))}", "train.steps=50", fault=True)
    assert r.returncode == 3
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("flowmaps: error:")]
    assert line == [f"flowmaps: error: 11 of 11 steps skipped for non-finite losses or gradients (more than "
                    f"train.max_skipped=0.1); training stopped, the weights of the last good step are kept in "
                    f"{run / 'checkpoint.safetensors'}"]


def test_an_endpoint_run_teaches_pairs_but_not_a_velocity(tmp_path, fm_run, tiny_cfg):
    """Decided: lines matching's endpoint model has no velocity field to distill (refused as `teacher.kind:
    run`), but its own few-step sampler can make pairs (`flowmaps pairs` with the map solver)."""
    store = _store(tmp_path, fm_run)
    lmm = tmp_path / "lmm"
    r = cli("train", tiny_cfg, "--out", lmm, "--quiet", f"data={{kind: pairs, path: {store}}}",
            "objective.method=lmm", "train.steps=2")
    assert r.returncode == 0, r.stderr
    r = forked_cli("train", tiny_cfg, "--out", tmp_path / "lmd", "--quiet", "objective.method=lmd",
                   f"teacher={{kind: run, path: {lmm}}}")
    assert r.returncode == 2 and "is an endpoint model (lmm)" in error_line(r)
    assert not (tmp_path / "lmd").exists()
    r = forked_cli("pairs", lmm, "--n", "16", "--out", tmp_path / "lmm_pairs", "--solver", "map", "--steps", "2",
                   "--quiet")
    assert r.returncode == 0, r.stderr
