"""The flow-map wrapper: X_{s,s} = id, kinds, preconditioning, and the MLP's two-time conditioning."""

import pytest
import torch

from flowmaps.core.models import FlowMap
from flowmaps.core.nets.mlp import MLP
from flowmaps.core.paths import interpolant


def model(form="flowmap", classes=0):
    torch.manual_seed(0)
    net = MLP(3, 64, width=32, depth=2, num_classes=classes)
    for p in net.parameters():  # the zero-initialised output layer would hide the conditioning
        torch.nn.init.normal_(p, std=0.3)
    return FlowMap(net, interpolant("linear"), sigma0=0.5, sigma_data=2.0, form=form, time_dim=32)


def test_identity_on_the_diagonal_and_conditioning():
    m = model()
    x, s, t = torch.randn(8, 3), torch.rand(8), torch.rand(8)
    assert torch.equal(m(x, s, s), x)
    assert not torch.allclose(m.v(x, s, t), m.v(x, s, t.flip(0)))  # depends on t - s
    assert not torch.allclose(m.v(x, s, t), m.v(x, s.flip(0), t))  # and on s


def test_kinds_define_the_step():
    x, s, u = torch.randn(4, 3), torch.full((4,), 0.2), torch.full((4,), 0.6)
    fm, vel, end = model("flowmap"), model("velocity"), model("endpoint")
    assert torch.allclose(fm.step(x, s, u), fm(x, s, u))
    assert torch.allclose(vel.step(x, s, u), x + 0.4 * vel.v(x, s, s))
    # an endpoint model walks the straight line to its predicted endpoint
    f = end.endpoint(x, s)
    assert torch.allclose(end.step(x, s, u), x + 0.4 * (f - x) / 0.8, atol=1e-6)
    with pytest.raises(ValueError, match="unknown model form"):
        FlowMap(MLP(3, 64), interpolant("linear"), form="score")


def test_class_conditioning_changes_the_output():
    m = model(classes=3)
    x, t = torch.randn(4, 3), torch.rand(4)
    a = m.velocity(x, t, torch.zeros(4, dtype=torch.long))
    b = m.velocity(x, t, torch.full((4,), 2, dtype=torch.long))
    assert not torch.allclose(a, b)


def test_zero_initialised_output_starts_at_the_identity_map():
    m = FlowMap(MLP(3, 64), interpolant("linear"), form="flowmap")
    x = torch.randn(5, 3)
    assert torch.equal(m(x, torch.zeros(5), torch.ones(5)), x)
