"""Every bad config is one line, exit status 2, and nothing written: a typo at every level and in every nested
options model, wrong types and ranges, and combinations that cannot run (docs/guarantees.md lists them)."""

from __future__ import annotations

import hashlib
import re

import pytest

from flowmaps.app.cli import main

BASE = """seed: 0
data: {kind: toy, name: checker}
model: {net: mlp, width: 16, depth: 2, time_dim: 8}
objective: {method: fm}
train: {steps: 3, batch_size: 16, log_every: 1, ckpt_every: 3}
eval: {n: 100, steps: [1]}
"""
LMD = ["objective.method=lmd"]
PAIRS = ["data={kind: pairs, path: nowhere}"]

# name: (overrides on BASE, or a whole YAML text, and a regular expression the one line must match)
BAD_CONFIGS: dict[str, tuple[list[str] | str, str]] = {
    # typos, at every level and in every nested options model
    "top-level typo": (["seedd=1"], r"seedd: Extra inputs are not permitted"),
    "data typo": (["data.nmae=moons"], r"data\.nmae: Extra inputs"),
    "toy option that gmm has": (["data.dim=5"], r"data\.dim: Extra inputs"),
    "path without data.kind=array": (["data.path=x.npy"], r"data\.path: Extra inputs"),
    "removed data.options": (["data.options={labels: true}"], r"data\.options: Extra inputs"),
    "images typo": (["data={kind: images, name: digits, szie: 16}"], r"data\.szie: Extra inputs"),
    "path typo": (["path.interp=trig"], r"path\.interp: Extra inputs"),
    "model typo": (["model.widht=3"], r"model\.widht: Extra inputs"),
    "UNet option on an MLP": (["model.channels=7"], r"model\.channels: Extra inputs"),
    "removed model.options": (["model.options={channels: 7}"], r"model\.options: Extra inputs"),
    "UNet typo": (["model={net: unet, chanels: 8}"], r"model\.chanels: Extra inputs"),
    "objective typo": (["objective.couplng=ot"], r"objective\.couplng: Extra inputs"),
    "option of another method": (["objective={method: fm, eta: 0.5}"], r"objective\.eta: Extra inputs"),
    "discriminator typo": (PAIRS + ["objective={method: lmm, adversarial: true, disc: {widht: 64}}"],
                           r"objective\.disc\.widht: Extra inputs"),
    "teacher typo": (LMD + ["teacher={kind: run, pth: runs/x}"], r"teacher\.pth: Extra inputs"),
    "train typo": (["train.stepz=3"], r"train\.stepz: Extra inputs"),
    "eval typo": (["eval.stpes=[1]"], r"eval\.stpes: Extra inputs"),
    # unknown variants and values
    "unknown data kind": (["data={kind: csv}"],
                          r"unknown data kind 'csv'; choose one of array, gmm, images, latents, pairs"),
    "unknown toy set": (["data.name=swissroll"], r"data\.name: Input should be 'checker'"),
    "unknown network": (["model={net: transformer}"], r"unknown model net 'transformer'; choose one of mlp, unet"),
    "unknown activation": (["model.act=tanh"], r"model\.act: Input should be 'gelu', 'silu' or 'relu'"),
    "unknown method": (["objective.method=nope"], r"unknown objective method 'nope'"),
    "unknown coupling": (["objective.coupling=greedy"], r"objective\.coupling: Input should be"),
    "unknown interpolant": (["path.interpolant=cubic"], r"path\.interpolant: Input should be 'linear' or 'trig'"),
    "unknown teacher kind": (LMD + ["teacher={kind: diffusion}"], r"unknown teacher kind 'diffusion'"),
    "unknown optimizer": (["train.optimizer=sgd"], r"train\.optimizer: Input should be"),
    "not a device": (["train.device=banana"], r"train\.device: 'banana' is not a device"),
    "a GPU this machine lacks": (["train.device=cuda:64"],
                                 r"device cuda:64: this (torch has no usable CUDA GPU|machine has \d+ CUDA GPU)"),
    "unknown features": (["eval.features=[clip]"], r"eval\.features: unknown feature extractor 'clip'; choose from"),
    # wrong types
    "number as text": (["train.lr=fast"], r"train\.lr: Input should be a valid number"),
    "section as a number": (["data=5"], r"data: expected a mapping with kind, got int"),
    "list as a number": (["eval.steps=3"], r"eval\.steps: Input should be a valid list"),
    # ranges
    "steps < 1": (["train.steps=0"], r"train\.steps: Input should be greater than or equal to 1"),
    "EMA decay of 1": (["train.ema=1.0"], r"train\.ema: EMA decays must lie in \[0, 1\), got 1\.0"),
    "negative base scale": (["path.sigma0=0"], r"path\.sigma0: Input should be greater than 0"),
    "time embedding too coarse": (["model.max_freq=0.5"], r"model\.max_freq: Input should be greater than or equal"),
    "negative mixture width": (["data={kind: gmm, std: -1}"], r"data\.std: Input should be greater than 0"),
    "diagonal fraction > 1": (["objective={method: lsd, eta: 1.5}"], r"objective\.eta: Input should be less than"),
    "UNet dropout 1": (["model={net: unet, dropout: 1.0}"], r"model\.dropout: Input should be less than 1"),
    "one evaluation sample": (["eval.n=1"], r"eval\.n: Input should be greater than or equal to 2"),
    "evaluation at 0 steps": (["eval.steps=[0, 2]"], r"eval\.steps: steps must be integers >= 1"),
    "EDM index past the grid": (PAIRS + ["objective={method: lmm, time: sot, sot_steps: [0, 30]}"],
                                r"EDM step indices must lie in 0\.\.17"),
    # combinations that cannot run
    "distillation without a teacher": (LMD, r"objective 'lmd' distills a teacher: set teacher\.kind"),
    "coupling on teacher pairs": (PAIRS + ["objective.coupling=ot"],
                                  r"objective\.coupling pairs fresh noise .* leave it independent"),
    "teacher for a method without one": (["teacher={kind: analytic}"], r"objective 'fm' uses no teacher"),
    "analytic teacher of a toy set": (LMD + ["teacher={kind: analytic}"],
                                      r"teacher\.kind=analytic .* needs data\.kind=gmm"),
    "run teacher without a path": (LMD + ["teacher={kind: run}"], r"teacher\.kind=run needs teacher\.path"),
    "lines matching without pairs": (["objective.method=lmm"], r"objective 'lmm' trains on teacher pairs"),
    "EDM on the trigonometric path": (["objective.method=edm", "path.interpolant=trig"],
                                      r"objective 'edm' is defined on the linear path"),
    "images without a path": (["data={kind: images, name: folder}"], r"name=folder needs path"),
    "digits with a path": (["data={kind: images, name: digits, path: x}"], r"name=digits .* reads no path"),
    "array without a path": (["data={kind: array}"], r"data\.kind=array needs data\.path"),
    "LPIPS without weights": (PAIRS + ["objective={method: lmm, distance: lpips}"], r"lpips_weights"),
    "EDM weight with uniform times": (PAIRS + ["objective={method: lmm, weight: edm, time: uniform}"],
                                      r"weight=edm with time=uniform"),
    "progressive maps on the square": (["objective={method: pfmm, square: true}", "data={kind: gmm}",
                                                  "teacher={kind: analytic}"], r"pfmm sets its own range"),
    # the command line and the YAML itself
    "override without =": (["train"], r"override 'train' must look like key\.sub=value"),
    "override into a value": (["seed.x=1"], r"override seed\.x: seed is not a section"),
    "override that is not YAML": (["model.width=[1,"], r"override 'model\.width=\[1,': not a YAML value"),
    "duplicated YAML key": (BASE + "data: {kind: gmm}\n", r"not valid YAML \(.*duplicate key 'data'"),
    "YAML that is not a mapping": ("- 1\n- 2\n", r"a config is a mapping of sections, got list"),
}


def _snapshot(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", list(BAD_CONFIGS))
def test_bad_config_is_one_line_exit_2_nothing_written(name, tmp_path, capsys):
    given, expect = BAD_CONFIGS[name]
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(given if isinstance(given, str) else BASE)
    overrides = [] if isinstance(given, str) else given
    before = _snapshot(tmp_path)
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--quiet", *overrides]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("flowmaps: error: "), err
    assert re.search(expect, lines[0]), lines[0]
    assert _snapshot(tmp_path) == before and not (tmp_path / "run").exists()


def test_the_table_has_at_least_thirty_cases():
    assert len(BAD_CONFIGS) >= 30
