"""Configs fail early with one line; checkpoints round-trip nested state without pickle."""

from pathlib import Path

import pytest
import torch

from flowmaps.errors import CheckpointError, ConfigError
from flowmaps.io.checkpoint import load_state, save_state
from flowmaps.run.config import dump_config, load_config, overrides, parse_config, training_diff

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_recipe_is_valid(path):
    cfg = load_config(path)
    assert parse_config(__import__("yaml").safe_load(dump_config(cfg))) == cfg


@pytest.mark.parametrize("overrides,match", [
    (["train.stepz=3"], "train.stepz: Extra inputs are not permitted"),
    (["train.steps=0"], "train.steps: Input should be greater than or equal to 1"),
    (["objective.method=magic"], "unknown objective method 'magic'"),
    (["objective.coupling=greedy"], "coupling"),
    (["data.kind=array"], "needs data.path"),
    (["eval.steps=[0,2]"], "eval.steps"),
    (["train"], "must look like key.sub=value"),
    (["objective={}"], "objective.method is missing"),
])
def test_bad_configs_are_one_clear_line(overrides, match):
    with pytest.raises(ConfigError, match=match) as err:
        parse_config({"objective": {"method": "fm"}}, overrides)
    assert "\n" not in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_checkpoint_round_trip(tmp_path):
    state = {"step": 7, "rng": [torch.get_rng_state()], "model": {"w": torch.randn(3, 2), "b": torch.zeros(2)},
             "optim": {"state": {0: {"exp_avg": torch.ones(2)}}, "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.99)}]},
             "config": "seed: 0\n", "none": None}
    save_state(tmp_path / "c.safetensors", state)
    back = load_state(tmp_path / "c.safetensors")
    assert back["step"] == 7 and back["config"] == "seed: 0\n" and back["none"] is None
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and torch.equal(back["rng"][0], state["rng"][0])
    assert torch.equal(back["optim"]["state"][0]["exp_avg"], torch.ones(2))
    assert back["optim"]["param_groups"][0]["betas"] == (0.9, 0.99)
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temporary left behind


def test_foreign_and_corrupt_checkpoints_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_state(tmp_path / "none.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(CheckpointError, match="it is a Python pickle"):
        load_state(junk)
    junk.write_bytes(b"plain text, not a checkpoint")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_state(junk)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not a flowmaps checkpoint"):
        load_state(tmp_path / "plain.safetensors")


def test_overrides_turn_the_recipe_into_the_run():
    recipe = load_config("configs/checker_lmd.yaml")
    run = load_config("configs/checker_lmd.yaml", ["objective.grid_steps=[1,2,4,8]", "objective.coupling=independent",
                                                  "train.steps=7", "train.log_every=3", "teacher.path=runs/t"])
    over = overrides(run, recipe)
    assert sorted(over) == ["objective.coupling=independent", "objective.grid_steps=[1,2,4,8]", "teacher.path=runs/t",
                            "train.steps=7"]  # log_every does not change the training
    assert not training_diff(load_config("configs/checker_lmd.yaml", over), run)
    assert overrides(recipe, recipe) == []
