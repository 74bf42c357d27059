"""Reliability, driven through the command line: SIGKILL and exact resume, non-finite guards, loads that
never unpickle, and one clear line (with nothing on disk touched) for every bad input.

Training runs are fresh ``python -m flowmaps`` (or ``tests/fault_cli.py``) subprocesses, killed with real
signals. A fresh interpreter pays ~2 s of CPU for the torch import, so the many bad-input cases run the same
``flowmaps.app.cli.main(argv)`` that the ``flowmaps`` console entry runs, each in its own forked process with
its own stderr and exit status (``clitools.forked_cli``). Runs are tiny: a 2-layer MLP of width 32 on the
checkerboard for at most 200 steps.
"""

from __future__ import annotations

import pickle
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from clitools import ROOT, ckpt_step, cli, error_line, forked_cli, launch, metric_rows, snapshot, wait_for
from flowmaps.errors import CheckpointError
from flowmaps.io.checkpoint import load_state, save_state, state_diff
from flowmaps.io.files import lock_folder
from flowmaps.io.shards import read_manifest
from flowmaps.pairs.store import verify_store
from flowmaps.run.config import dump_config, parse_config

# ----- kill -9 and resume ----------------------------------------------------------------------------------


def test_kill9_at_any_point_then_same_command_resumes_bit_identical(tmp_path, tiny_cfg):
    """SIGKILL at startup, then inside a step past a checkpoint; the same command finishes the run with the
    weights, EMA, optimizer, objective state and train_state, RNG and metrics of an uninterrupted run."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    args = ["train", tiny_cfg, "objective.method=critic_fm", "--quiet", "--resume", "--out"]
    r = cli(*args, ref, fault=True)
    assert r.returncode == 0, r.stderr

    # kill 1: as soon as the run directory exists (inside step 21 at the latest, should the signal come late)
    p = launch(*args, run, fault=True, FAULT_KILL_AT_STEP="20")
    wait_for(lambda: (run / "config.yaml").exists(), p)
    p.send_signal(signal.SIGKILL)
    assert p.wait() == -signal.SIGKILL
    assert ckpt_step(run) == 0  # loadable if present, and before the first checkpoint at step 25

    # kill 2: mid-training, inside step 64, with steps 51-63 logged past the checkpoint at step 50 (the process
    # kills itself at that exact point: an outside kill can race a checkpoint on a fast machine)
    p = launch(*args, run, fault=True, FAULT_KILL_AT_STEP="63")
    assert p.wait() == -signal.SIGKILL
    at = ckpt_step(run)
    assert at == 50 and int(metric_rows(run)[-1]["step"]) == 63

    r = cli(*args, run, fault=True)
    assert r.returncode == 0, r.stderr
    assert f"resuming {run} from step {at}" in r.stderr

    a, b = load_state(ref / "checkpoint.safetensors"), load_state(run / "checkpoint.safetensors")
    assert state_diff(a, b) == []
    assert int(b["step"]) == 200 and int(b["objective"]["calls"]) == 200 and b["aux_optim"]["critic"]["state"]
    drop = lambda rows: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]  # noqa: E731
    elapsed = [float(r["elapsed_s"]) for r in metric_rows(run)]
    assert elapsed == sorted(elapsed)  # the resumed clock continues from the kept rows' wall time
    rows = drop(metric_rows(run))
    assert [int(r["step"]) for r in rows] == list(range(1, 201))  # cut back to the checkpoint, then continued
    assert rows == drop(metric_rows(ref))
    assert (run / "config.yaml").read_bytes() == (ref / "config.yaml").read_bytes()
    assert not [q for q in run.iterdir() if q.name.endswith(".tmp")]


def test_resume_of_a_finished_run_changes_nothing(fm_run, tiny_cfg):
    before = snapshot(fm_run)
    r = forked_cli("train", tiny_cfg, "--out", fm_run, "--quiet", "--resume", "train.steps=30", "train.ckpt_every=10")
    assert r.returncode == 0, r.stderr
    assert "from step 30" in r.stderr and snapshot(fm_run) == before


def test_full_disk_one_line_previous_files_kept_then_same_command_finishes(tmp_path, tiny_cfg, fm_run):
    """A checkpoint write that fails (file size limit, as on a full disk) exits 1 with one line, leaves no
    temporary file; the same command, once there is room, finishes the run exactly as an undisturbed one."""
    run = tmp_path / "run"
    args = ("train", tiny_cfg, "--out", run, "--quiet", "--resume", "train.steps=30", "train.ckpt_every=10")
    r = forked_cli(*args, max_file_size=20_000)
    assert r.returncode == 1
    assert re.fullmatch(rf"flowmaps: error: {re.escape(str(run / 'checkpoint.safetensors'))}: write failed "
                        r"\(.*File too large.*\); nothing was written", error_line(r))
    assert sorted(p.name for p in run.iterdir()) == [".lock", "config.yaml", "metrics.csv", "tb"]
    r = forked_cli(*args)
    assert r.returncode == 0, r.stderr
    assert state_diff(load_state(fm_run / "checkpoint.safetensors"), load_state(run / "checkpoint.safetensors")) == []


def test_a_run_directory_in_use_is_refused(tmp_path, fm_run, tiny_cfg):
    """While one process holds the run directory, a second one on the same --out stops with one line."""
    run = tmp_path / "run"
    shutil.copytree(fm_run, run)
    before = snapshot(run)
    lock = lock_folder(run, "held by the test")
    try:
        r = forked_cli("train", tiny_cfg, "--out", run, "--quiet", "--resume", "train.steps=30", "train.ckpt_every=10")
    finally:
        lock.close()
    assert r.returncode == 2
    assert error_line(r) == f"flowmaps: error: {run}: another process is training into this run directory"
    assert snapshot(run) == before


def _pairs_args(teacher: Path, out: Path) -> list:
    return ["pairs", teacher, "--n", "600", "--out", out, "--shard-size", "50", "--batch-size", "25",
            "--solver", "rk4", "--steps", "40", "--quiet"]


def test_kill9_during_pair_generation_then_resume_gives_the_reference_store(tmp_path, fm_run):
    """SIGKILL `flowmaps pairs` at startup, between shards and inside a shard write; the same command then ends
    with exactly N distinct indices, every shard's checksum and noise verified, equal to an uninterrupted store."""
    ref, out = tmp_path / "ref", tmp_path / "out"
    r = forked_cli(*_pairs_args(fm_run, ref))
    assert r.returncode == 0, r.stderr
    shards = lambda: len(read_manifest(out)["shards"]) if (out / "manifest.json").exists() else 0  # noqa: E731
    temp = lambda: out.exists() and any(q.name.endswith(".tmp") for q in out.iterdir())  # noqa: E731
    kills = [lambda: (out / "manifest.json").exists(),  # before any shard
             lambda: shards() >= 2,  # between shards
             temp]  # inside a shard's atomic write
    for cond in kills:
        p = launch(*_pairs_args(fm_run, out), fault=True, FAULT_SLOW_WRITE="0.3")
        wait_for(cond, p)
        p.send_signal(signal.SIGKILL)
        assert p.wait() == -signal.SIGKILL
        assert verify_store(out, full=True) == {}  # what the manifest lists is intact after every kill
    assert not read_manifest(out)["complete"]
    r = forked_cli(*_pairs_args(fm_run, out))
    assert r.returncode == 0, r.stderr
    m = read_manifest(out)
    assert m["complete"] and sum(e["rows"] for e in m["shards"].values()) == 600
    assert sorted(e["start"] for e in m["shards"].values()) == list(range(0, 600, 50))  # every index once
    assert verify_store(out, full=True, check_noise=True) == {}
    assert {k: v for k, v in snapshot(out).items() if k != "manifest.json"} == \
        {k: v for k, v in snapshot(ref).items() if k != "manifest.json"}  # shards bit-identical, no temp left


def test_a_pair_store_in_use_is_refused(tmp_path, fm_run):
    out = tmp_path / "store"
    out.mkdir()
    lock = lock_folder(out, "held by the test")
    try:
        r = forked_cli(*_pairs_args(fm_run, out))
    finally:
        lock.close()
    assert r.returncode == 2
    assert error_line(r) == f"flowmaps: error: {out}: another process is writing this pair store"
    assert [q.name for q in out.iterdir()] == [".lock"]


# ----- non-finite loss and gradients ------------------------------------------------------------------------


def test_nonfinite_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(tmp_path, tiny_cfg):
    run = tmp_path / "run"
    r = cli("train", tiny_cfg, "--out", run, "--quiet", "objective.method=nan_fm", "objective.nan_at=[12]",
            "train.steps=20", "train.ckpt_every=5", fault=True)
    assert r.returncode == 3
    ckpt = run / "checkpoint.safetensors"
    assert error_line(r) == (f"flowmaps: error: non-finite loss at step 12; the last good checkpoint is kept in "
                             f"{ckpt} (train.nonfinite=skip skips such steps)")
    state = load_state(ckpt)
    assert int(state["step"]) == 10
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values())


def test_nonfinite_gradient_skip_counts_logs_and_leaves_weights_untouched(tmp_path, tiny_cfg):
    """Steps 3 and 10 have a finite loss but NaN gradients: both are skipped, counted and logged, and the
    final weights, EMA and optimizer equal those of a 9-step run that skipped only step 3."""
    base = ["train", tiny_cfg, "--quiet", "objective.method=nan_fm", "train.nonfinite=skip",
            "train.schedule=constant", "train.warmup=0"]
    r10 = cli(*base, "--out", tmp_path / "a", "objective.nan_grad_at=[3,10]", "train.steps=10", fault=True)
    r9 = cli(*base, "--out", tmp_path / "b", "objective.nan_grad_at=[3]", "train.steps=9", fault=True)
    assert r10.returncode == 0 and r9.returncode == 0, r10.stderr + r9.stderr
    warnings = re.findall(r"non-finite (\w+) at step (\d+); step skipped \((\d+) so far\)", r10.stderr)
    assert warnings == [("gradient", "3", "1"), ("gradient", "10", "2")]
    assert [int(r["skipped"]) for r in metric_rows(tmp_path / "a")] == [0, 0, 1, 1, 1, 1, 1, 1, 1, 2]
    a, b = load_state(tmp_path / "a" / "checkpoint.safetensors"), load_state(tmp_path / "b" / "checkpoint.safetensors")
    assert int(a["skipped"]) == 2 and int(a["step"]) == 10
    assert state_diff(a["model"], b["model"]) == [] and state_diff(a["ema"], b["ema"]) == []
    assert state_diff(a["optim"], b["optim"]) == []


def test_nonfinite_weights_are_never_checkpointed(tmp_path, tiny_cfg):
    """Finite loss and gradient, but a step that overflows the weights (RAdam's first, unnormalized steps with
    gradients ~1e15 and lr 1e25): training stops before the checkpoint."""
    run = tmp_path / "run"
    r = cli("train", tiny_cfg, "--out", run, "--quiet", "objective.method=nan_fm", "objective.scale=1e15",
            "train.lr=1e25", "train.optimizer=radam", "train.grad_clip=null", "train.warmup=0",
            "train.schedule=constant", "train.steps=3", "train.ckpt_every=1", fault=True)
    assert r.returncode == 3
    assert error_line(r) == "flowmaps: error: non-finite weights after step 1; no checkpoint was written yet"
    assert not (run / "checkpoint.safetensors").exists()


# ----- loads never unpickle ---------------------------------------------------------------------------------


class Payload:
    """Unpickling this writes a marker file: what a malicious checkpoint or data file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


def test_the_payload_is_live(tmp_path):
    """The payload below does run code when unpickled; the next test shows flowmaps never unpickles it."""
    pickle.loads(pickle.dumps(Payload(tmp_path / "marker")))
    assert (tmp_path / "marker").exists()


@pytest.mark.parametrize("case", ["pickle_checkpoint", "torch_save_checkpoint", "object_npy_data"])
def test_files_with_code_are_refused_and_never_run(case, tmp_path, fm_run, tiny_cfg):
    marker = tmp_path / "marker"
    run = tmp_path / "run"
    shutil.copytree(fm_run, run)
    ckpt = run / "checkpoint.safetensors"
    if case == "pickle_checkpoint":
        ckpt.write_bytes(pickle.dumps({"model": Payload(marker)}))
        r, expect = forked_cli("sample", run, "--out", tmp_path / "x.npy"), "it is a Python pickle"
    elif case == "torch_save_checkpoint":
        torch.save({"model": Payload(marker)}, ckpt)
        r = forked_cli("train", tiny_cfg, "--out", run, "--resume", "--quiet", "train.steps=30", "train.ckpt_every=10")
        expect = "torch.save format"
    else:
        np.save(tmp_path / "d.npy", np.array([[Payload(marker), 1.0]], dtype=object), allow_pickle=True)
        data = f"data.path={tmp_path / 'd.npy'}"
        r = forked_cli("train", tiny_cfg, "--out", tmp_path / "new", "data={kind: array}", data)
        expect = "unreadable or corrupt .npy"
    assert r.returncode == 2 and expect in error_line(r)
    assert not marker.exists()
    assert not (tmp_path / "x.npy").exists() and not (tmp_path / "new").exists()


def test_no_unpickling_load_in_the_source():
    """Every load in the package goes through safetensors, ``allow_pickle=False`` or ``weights_only=True``."""
    bad = []
    for p in (ROOT / "src" / "flowmaps").rglob("*.py"):
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if (re.search(r"\bpickle\.loads?\(|import pickle|allow_pickle=True|\bdill\b|cloudpickle", line)
                    or ("torch.load(" in line and "weights_only=True" not in line)):
                bad.append(f"{p.relative_to(ROOT)}:{i}: {line.strip()}")
    assert bad == []


def test_corrupt_checkpoint_is_named(tmp_path, fm_run):
    """A flipped byte in the tensor data fails the checksum; a truncated file fails to parse."""
    run = tmp_path / "run"
    shutil.copytree(fm_run, run)
    ckpt = run / "checkpoint.safetensors"
    data = bytearray(ckpt.read_bytes())
    data[-3] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_state(ckpt)
    ckpt.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(CheckpointError, match=f"{re.escape(str(ckpt))}: refused"):
        load_state(ckpt)


# ----- bad inputs: one line, non-zero exit, nothing on disk touched -----------------------------------------


def _write_bad_inputs(d: Path, fm_run: Path, tiny_cfg: Path) -> dict[str, Path]:
    """The files some cases read: bad data arrays, a run whose checkpoint came from another config."""
    np.save(d / "nan.npy", np.array([[0.0, 1.0], [np.nan, 0.0]], dtype=np.float32))
    np.save(d / "empty.npy", np.zeros((0, 2), dtype=np.float32))
    np.save(d / "flat.npy", np.zeros(5, dtype=np.float32))
    (d / "typo.yaml").write_text(tiny_cfg.read_text().replace("ckpt_every", "ckpt_evry"))
    other = d / "other_ckpt"
    shutil.copytree(fm_run, other)
    state = load_state(other / "checkpoint.safetensors")
    tree = yaml.safe_load(state["config"])
    tree["model"]["width"] = 16
    state["config"] = dump_config(parse_config(tree))
    save_state(other / "checkpoint.safetensors", state)
    (d / "foreign").mkdir()
    (d / "foreign" / "notes.txt").write_text("mine")
    np.save(d / "exists.npy", np.zeros((2, 2), dtype=np.float32))
    return {"other": other}


NEW = ["train", "{cfg}", "--out", "{d}/new"]  # a new run of the tiny config
RUN = ["train", "{cfg}", "--out", "{run}", "train.steps=30", "train.ckpt_every=10"]  # the existing run's command
ARRAY = NEW + ["data={{kind: array}}"]
BAD_INPUTS = {
    # name: (command line, expected part of the one-line error)
    "unknown config key": (["train", "{d}/typo.yaml", "--out", "{d}/new"],
                           r"train\.ckpt_evry: Extra inputs are not permitted"),
    "unknown override key": (NEW + ["model.widht=3"], r"model\.widht: Extra inputs"),
    "unknown method": (NEW + ["objective.method=nope"], r"unknown objective method 'nope'"),
    "unknown objective option": (NEW + ["objective.coupling=magic"], r"coupling"),
    "steps < 1": (NEW + ["train.steps=0"], r"train\.steps: Input should be greater than or equal to 1"),
    "wrong type": (NEW + ["train.lr=fast"], r"train\.lr: Input should be a valid number"),
    "times outside [0, 1]": (["sample", "{run}", "--grid", "0,0.5,1.5", "--out", "{d}/s.npy"],
                             r"times must lie in \[0, 1\]"),
    "grid not increasing": (["sample", "{run}", "--grid", "0,0.6,0.4,1", "--out", "{d}/s.npy"],
                            r"strictly increasing"),
    "sample steps < 1": (["sample", "{run}", "--steps", "0", "--out", "{d}/s.npy"],
                         r"--steps: expected an integer >= 1"),
    "eval steps < 1": (["eval", "{run}", "--steps", "0,2"], r"steps must be >= 1"),
    "data with NaN": (ARRAY + ["data.path={d}/nan.npy"], r"nan\.npy: 1 non-finite"),
    "empty data": (ARRAY + ["data.path={d}/empty.npy"], r"empty\.npy: empty array"),
    "data of the wrong shape": (ARRAY + ["data.path={d}/flat.npy"], r"expected \(N, \*dims\)"),
    "model for another shape": (NEW + ["model={{net: unet}}"],
                                r"model\.net=unet needs image data of shape \(C, H, W\); the data has shape \(2,\)"),
    "checkpoint from another config": (["train", "{cfg}", "--out", "{other}", "--resume", "train.steps=30",
                                        "train.ckpt_every=10"],
                                       r"written by another config \(model\.width: 16 != 32\)"),
    "checkpoint from another config (sample)": (["sample", "{other}", "--out", "{d}/s.npy"],
                                                r"written by another config"),
    "run directory exists": (RUN, r"run directory exists; pass --resume"),
    "resume with another config": (RUN + ["--resume", "train.steps=31"], r"config differs .*train\.steps: 30 != 31"),
    "directory that is not a run": (["train", "{cfg}", "--out", "{d}/foreign"], r"exists and is not a flowmaps run"),
    "sample output exists": (["sample", "{run}", "--out", "{d}/exists.npy"], r"exists; pass --force"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_one_line_nonzero_exit_nothing_touched(name, tmp_path, fm_run, tiny_cfg):
    d = tmp_path / "inputs"
    d.mkdir()
    paths = _write_bad_inputs(d, fm_run, tiny_cfg)
    run = tmp_path / "run"
    shutil.copytree(fm_run, run)
    args, expect = BAD_INPUTS[name]
    fill = {"d": d, "cfg": tiny_cfg, "run": run, **paths}
    before = snapshot(tmp_path)
    r = forked_cli(*[a.format(**fill) for a in args])
    assert r.returncode == 2
    assert re.search(expect, error_line(r)), r.stderr
    assert snapshot(tmp_path) == before  # nothing written, created or overwritten


def test_bad_input_through_a_fresh_interpreter(tmp_path, tiny_cfg):
    """The same contract from a fresh ``python -m flowmaps.app.cli``, as a user types it."""
    r = cli("train", tiny_cfg, "--out", tmp_path / "new", "train.steps=0")
    assert r.returncode == 2 and "train.steps: Input should be greater than or equal to 1" in error_line(r)
    assert list(tmp_path.iterdir()) == []
