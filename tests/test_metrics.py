import math

import pytest
import torch

from flowmaps.core.metrics import energy_distance, kl_histogram, straightness, trajectories, wasserstein2
from flowmaps.data.toy import sample_toy


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_kl_of_a_sample_against_itself_is_zero():
    x = sample_toy("checker", 10_000, _gen(0))
    assert kl_histogram(x, x) == 0.0


def test_kl_of_two_checker_samples_is_at_the_sampling_noise_level():
    a = sample_toy("checker", 64_000, _gen(1))
    b = sample_toy("checker", 64_000, _gen(2))
    assert 0.005 < kl_histogram(a, b) < 0.04


def test_kl_grows_with_a_shift():
    a = sample_toy("checker", 64_000, _gen(1))
    b = sample_toy("checker", 64_000, _gen(2))
    kls = [kl_histogram(a, b + torch.tensor([s, 0.0])) for s in (0.0, 0.05, 0.2)]
    assert kls[0] < kls[1] < kls[2]


def test_kl_penalizes_samples_outside_bounds():
    a = sample_toy("checker", 64_000, _gen(1))
    b = sample_toy("checker", 64_000, _gen(2))
    spilled = b.clone()
    spilled[: len(b) // 4] = 5.0  # a quarter of the model's mass leaves [-1, 1]^2
    base = kl_histogram(a, b)
    assert kl_histogram(a, spilled) > base + 0.9 * math.log(4 / 3)


def test_kl_requires_2d_points():
    with pytest.raises(ValueError, match="shape"):
        kl_histogram(torch.zeros(10, 3), torch.zeros(10, 3))


def test_w2_of_a_set_against_itself_is_zero():
    x = torch.randn(500, 3, generator=_gen(0))
    assert wasserstein2(x, x) < 1e-6


def test_w2_of_a_translation_is_the_shift_norm():
    x = torch.randn(400, 3, generator=_gen(0), dtype=torch.float64)
    m = torch.tensor([0.3, -1.2, 0.5], dtype=torch.float64)
    assert wasserstein2(x, x + m) == pytest.approx(float(m.norm()), rel=1e-9)


def test_w2_in_1d_is_the_sorted_matching():
    x = torch.randn(300, generator=_gen(0), dtype=torch.float64)
    y = 0.5 * torch.rand(300, generator=_gen(1), dtype=torch.float64) + 1.0
    exact = float((x.sort().values - y.sort().values).square().mean().sqrt())
    assert wasserstein2(x, y) == pytest.approx(exact, rel=1e-9)


def test_w2_uses_only_the_first_max_n_samples():
    x = torch.randn(300, 2, generator=_gen(0), dtype=torch.float64)
    y = torch.cat([x[:100], x[100:] + 10.0])
    assert wasserstein2(x, y, max_n=100) < 1e-6


def test_energy_distance_zero_on_itself_positive_otherwise():
    x = torch.randn(1500, 2, 2, generator=_gen(0))
    y = torch.randn(1500, 2, 2, generator=_gen(1))
    assert energy_distance(x, x) == 0.0
    assert energy_distance(x, y + 0.5) > 10 * energy_distance(x, y) > 0.0


def test_straightness_zero_for_constant_and_zero_fields():
    x0 = torch.randn(64, 3, generator=_gen(0), dtype=torch.float64)
    c = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    assert straightness(lambda x, t: c.expand_as(x), x0) < 1e-10
    assert straightness(lambda x, t: torch.zeros_like(x), x0) < 1e-10


def test_straightness_positive_for_a_rotation():
    x0 = torch.randn(64, 2, generator=_gen(0), dtype=torch.float64)
    j = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    assert straightness(lambda x, t: x @ j.T, x0) > 0.1


def test_straightness_closed_form_for_a_time_dependent_field():
    # v = a (1 - 2t): X_1 - X_0 = 0, so S = a^2 ∫ (1 - 2t)^2 dt = a^2 / 3.
    a = 1.7
    x0 = torch.randn(16, 1, generator=_gen(0), dtype=torch.float64)
    s = straightness(lambda x, t: (a * (1 - 2 * t)).unsqueeze(1).expand_as(x), x0, steps=500)
    assert s == pytest.approx(a**2 / 3, rel=1e-4)


def test_trajectories_shape_and_exact_solution():
    x0 = torch.randn(8, 2, 3, generator=_gen(0), dtype=torch.float64)
    xs = trajectories(lambda x, t: -x, x0, steps=100)
    assert xs.shape == (101, 8, 2, 3)
    assert torch.equal(xs[0], x0)
    assert torch.allclose(xs[-1], x0 * math.exp(-1.0), rtol=0, atol=1e-6)
