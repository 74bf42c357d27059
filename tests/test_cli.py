"""The command line as a user drives it: train → sample → eval, and one clear line for each mistake."""

import json

import numpy as np
import pytest

from flowmaps.app.cli import main

RECIPE = """seed: 0
data: {kind: gmm, dim: 2, components: 4, std: 0.2}
model: {net: mlp, width: 32, depth: 2}
objective: {method: fm}
train: {steps: 30, batch_size: 128, log_every: 10, ckpt_every: 10}
eval: {n: 500, steps: [1, 4]}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "tiny.yaml").write_text(RECIPE)
    assert main(["train", str(root / "tiny.yaml"), "--out", str(root / "run"), "--quiet", "train.lr=2e-3"]) == 0
    return root


def test_train_writes_a_run_directory(run):
    names = {p.name for p in (run / "run").iterdir()}
    assert {"config.yaml", "checkpoint.safetensors", "metrics.csv"} <= names


def test_sample_and_eval(run, capsys):
    out = run / "x.npy"
    assert main(["sample", str(run / "run"), "--steps", "4", "--n", "300", "--out", str(out)]) == 0
    x = np.load(out)
    assert x.shape == (300, 2) and np.isfinite(x).all()
    assert "solver heun, NFE 8" in capsys.readouterr().out  # a velocity model's default sampler: 2 NFE a step
    assert main(["sample", str(run / "run"), "--steps", "2", "--n", "300", "--out", str(run / "x.png")]) == 0
    assert (run / "x.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["eval", str(run / "run"), "--steps", "1,2", "--n", "400"]) == 0
    rows = json.loads((run / "run" / "eval.json").read_text())
    assert [(r["solver"], r["steps"], r["nfe"]) for r in rows] == [
        ("euler", 1, 1), ("euler", 2, 2), ("heun", 1, 2), ("heun", 2, 4), ("adaptive", None, rows[-1]["nfe"])]
    assert all(np.isfinite(r["kl"]) and np.isfinite(r["w2"]) for r in rows)


@pytest.mark.parametrize("argv,match", [
    (["train", "{root}/tiny.yaml", "--out", "{root}/run"], "run directory exists"),
    (["train", "{root}/tiny.yaml", "--out", "{root}/other", "train.steps=-1"], "train.steps"),
    (["train", "{root}/missing.yaml"], "no such config file"),
    (["sample", "{root}/run", "--out", "{root}/x.txt"], "must end in .npy or .png"),
    (["sample", "{root}/nowhere", "--out", "{root}/y.npy"], "not a run directory"),
    (["sample", "{root}/run", "--out", "{root}/z.npy", "--solver", "magic"], "unknown solver"),
])
def test_user_errors_are_one_line_and_exit_2(run, capsys, argv, match):
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    assert main([a.format(root=run) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flowmaps: error:") and match in err and "\n" not in err
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p in before} == before


@pytest.mark.parametrize("argv", [["eval", "{root}/run", "--steps", "0,2"],
                                  ["sample", "{root}/run", "--out", "{root}/z.npy", "--n", "0"]])
def test_bad_numbers_are_refused_by_the_parser(run, capsys, argv):
    with pytest.raises(SystemExit) as e:
        main([a.format(root=run) for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("flowmaps: error:") and ">= 1" in err
