"""The command line's surface: every verb's --help lists its options, --version, `info`, and the default sampler of
`sample` and `eval` for each model form (a velocity model is not sampled with one Euler step)."""

import json
import os
import re

import pytest

from flowmaps import __version__
from flowmaps.app.cli import build_parser, main
from flowmaps.core.sampling import SOLVERS

SAMPLER = ["--steps", "--grid", "--edm-grid", "--device", "--ema", "--batch-size"]
OPTIONS = {
    "train": ["--out", "--resume", "--device", "--quiet"],
    "pairs": ["--n", "--out", "--solver", "--steps", "--seed", "--shard-size", "--batch-size", "--repair",
              "--verify", "--device", "--quiet", "--guidance", "--prediction", "--null-class", "--sigma0"],
    "prepare": ["--out", "--set", "--split", "--size", "--key", "--label-key", "--shard-size", "--workers",
                "--repair", "--verify", "--quiet"],
    "sample": [*SAMPLER, "--n", "--solver", "--seed", "--class", "--out", "--force", "--guidance", "--prediction",
               "--null-class", "--sigma0"],
    "eval": [*SAMPLER, "--n", "--solver", "--features", "--ref", "--quiet"],
    "info": [],
    "encode": ["--vae", "--out", "--shard-size", "--batch-size", "--repair", "--device", "--quiet"],
    "demo": ["--out", "--fast", "--device", "--quiet"],
}


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    return capsys.readouterr().out


def test_every_verb_and_its_options_are_in_the_help(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks inside the texts compared (argparse breaks at hyphens)
    verbs = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert set(verbs) == set(OPTIONS)
    top = _help(["--help"], capsys)
    assert all(v in top for v in OPTIONS)
    for verb, options in OPTIONS.items():
        text = _help([verb, "--help"], capsys)
        declared = {o for a in verbs[verb]._actions for o in a.option_strings if o.startswith("--")} - {"--help"}
        assert declared == set(options), verb
        assert all(o in text for o in options), verb
    sample = " ".join(_help(["sample", "--help"], capsys).split())
    for name, solver in SOLVERS.items():  # every solver and what N means for it
        assert f"{name}: {' '.join(solver.help.split())}" in sample
    assert _help(["--version"], capsys).strip() == f"flowmaps {__version__}"


RECIPE = """seed: 0
data: {kind: gmm, dim: 2, components: 4, std: 0.2}
model: {net: mlp, width: 16, depth: 2, time_dim: 8}
objective: {method: fm}
train: {steps: 4, batch_size: 32, log_every: 2, ckpt_every: 4}
eval: {n: 200, steps: [1, 2]}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("forms")
    (root / "r.yaml").write_text(RECIPE)
    train = ["train", str(root / "r.yaml"), "--quiet", "--out"]
    assert main([*train, str(root / "velocity")]) == 0
    assert main([*train, str(root / "flowmap"), "objective={method: lsd}"]) == 0
    assert main(["pairs", str(root / "velocity"), "--n", "64", "--out", str(root / "pairs"), "--solver", "euler",
                 "--steps", "2", "--quiet"]) == 0
    assert main([*train, str(root / "endpoint"), f"data={{kind: pairs, path: {root / 'pairs'}}}",
                 "objective={method: lmm, time: uniform}"]) == 0
    return root


@pytest.mark.parametrize("form,solver,nfe,evaluated", [
    ("velocity", "heun", 36, ["euler", "euler", "heun", "heun", "adaptive"]),
    ("flowmap", "map", 1, ["map", "map"]),
    ("endpoint", "map", 1, ["map", "map", "renoise", "renoise"]),
])
def test_default_sampler_and_evaluation_per_model_form(runs, capsys, form, solver, nfe, evaluated):
    capsys.readouterr()
    assert main(["sample", str(runs / form), "--n", "50", "--out", str(runs / f"{form}.npy")]) == 0
    assert re.search(rf"50 samples, solver {solver}, NFE {nfe} ->", capsys.readouterr().out)
    assert main(["eval", str(runs / form)]) == 0
    rows = json.loads((runs / form / "eval.json").read_text())
    assert [r["solver"] for r in rows] == evaluated


def test_info_names_the_run(runs, capsys):
    capsys.readouterr()
    assert main(["info", str(runs / "flowmap")]) == 0
    out = capsys.readouterr().out
    assert "method: lsd" in out and "steps: 4 of 4 done, 0 skipped" in out and "last metrics: step 4" in out
    assert "last evaluation (eval.md)" in out or not (runs / "flowmap" / "eval.md").exists()


def test_quiet_waits_respects_what_the_user_set(monkeypatch):
    from flowmaps.app.cli import quiet_waits

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    quiet_waits()
    assert os.environ["GOMP_SPINCOUNT"] == "1000" and "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.delenv("GOMP_SPINCOUNT")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    quiet_waits()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE" and "GOMP_SPINCOUNT" not in os.environ
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setenv("GOMP_SPINCOUNT", "300000")
    quiet_waits()
    assert os.environ["GOMP_SPINCOUNT"] == "300000" and "OMP_WAIT_POLICY" not in os.environ
