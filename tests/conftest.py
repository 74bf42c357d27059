"""Shared fixtures: one CPU thread and fixed seeds keep the suite fast and repeatable on small machines; a tiny
config and a finished tiny run for the command-line tests; a tiny random feature extractor ``tiny`` (where
Inception's weights are absent, image metrics are tested with it)."""

from pathlib import Path

import pytest
import torch
import yaml

from clitools import TINY, cli
from flowmaps.core.metrics.frechet import Extractor, register_extractor


def tiny_extractor(weights=None, device="cpu") -> Extractor:
    """A fixed random convolution, tanh, 2×2 average pooling: 32-d features of any image size and channel count."""
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.5)
        conv.bias.zero_()

    def fn(x):
        x = x.float().expand(-1, 3, -1, -1) if x.shape[1] == 1 else x.float()
        return {"features": torch.nn.functional.adaptive_avg_pool2d(torch.tanh(conv(x)), 2).flatten(1)}

    return Extractor("tiny", "tiny:conv8-seed0", fn, 64)


register_extractor("tiny", tiny_extractor)


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
