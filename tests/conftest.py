"""Shared fixtures: one CPU thread and fixed seeds keep the suite fast and repeatable on small machines; a tiny
config and a finished tiny run for the command-line tests."""

from pathlib import Path

import pytest
import torch
import yaml

from clitools import TINY, cli


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    p.write_text(yaml.safe_dump(TINY))
    return p


@pytest.fixture(scope="module")
def fm_run(tmp_path_factory, tiny_cfg) -> Path:
    """A finished tiny flow-matching run (30 steps)."""
    run = tmp_path_factory.mktemp("runs") / "fm"
    r = cli("train", tiny_cfg, "--out", run, "--quiet", "train.steps=30", "train.ckpt_every=10")
    assert r.returncode == 0, r.stderr
    return run
