"""Minibatch couplings: exact OT equals brute force; every coupling is a true permutation."""

import itertools

import pytest
import torch

from flowmaps.core.couplings import couple, ot_permutation, sinkhorn_permutation


@pytest.mark.parametrize("seed", range(5))
def test_exact_ot_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    x0, x1 = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    cost = torch.cdist(x0.double(), x1.double()).pow(2)
    best = min(sum(float(cost[i, p[i]]) for i in range(6)) for p in itertools.permutations(range(6)))
    perm = ot_permutation(x0, x1)
    assert sorted(perm.tolist()) == list(range(6))
    assert sum(float(cost[i, perm[i]]) for i in range(6)) == pytest.approx(best, rel=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_exact_ot_equals_the_hungarian_algorithm_at_batch_size(ties):
    from scipy.optimize import linear_sum_assignment

    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(512, 2, generator=g), torch.randn(512, 2, generator=g)
    if ties:  # repeated points: many optimal plans, some not permutations
        x0, x1 = x0.round(), x1[torch.arange(512) % 8]
    cost = torch.cdist(x0.double(), x1.double()).pow(2).numpy()
    rows, cols = linear_sum_assignment(cost)
    perm = ot_permutation(x0, x1)
    assert sorted(perm.tolist()) == list(range(512))
    assert cost[range(512), perm.numpy()].sum() == pytest.approx(cost[rows, cols].sum(), rel=1e-12)


def test_sinkhorn_is_a_permutation_and_approaches_ot_at_small_reg():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g)
    cost = lambda p: float((x0 - x1[p]).pow(2).sum())  # noqa: E731
    exact, ind = cost(ot_permutation(x0, x1)), cost(torch.arange(64))
    sharp = sinkhorn_permutation(x0, x1, reg=0.05, generator=torch.Generator().manual_seed(1))
    blurry = sinkhorn_permutation(x0, x1, reg=5.0, generator=torch.Generator().manual_seed(1))
    for p in (sharp, blurry):
        assert sorted(p.tolist()) == list(range(64))
    assert cost(sharp) < 1.5 * exact < ind / 4
    assert cost(blurry) > cost(sharp)


def test_couple_keeps_x0_and_permutes_x1():
    x0, x1 = torch.randn(16, 4), torch.randn(16, 4)
    label = torch.arange(16) * 3
    for coupling in ("independent", "ot", "sinkhorn"):
        a, b, c = couple(coupling, x0, x1, label)
        assert torch.equal(a, x0)
        idx = (b[:, None, :] == x1[None]).all(-1).float().argmax(1)
        assert torch.equal(x1[idx], b) and sorted(idx.tolist()) == list(range(16))
        assert torch.equal(c, label[idx])  # the labels follow their data
        assert couple(coupling, x0, x1)[2] is None
    with pytest.raises(ValueError, match="unknown coupling"):
        couple("greedy", x0, x1)


def test_a_partial_coupling_plans_its_share_exactly_and_leaves_the_rest_independent():
    torch.manual_seed(0)
    x0, x1 = torch.randn(40, 2), torch.randn(40, 2) + 3
    a, b, _ = couple("ot", x0, x1, frac=0.25)
    assert torch.equal(a, x0) and torch.equal(b[10:], x1[10:])  # the rest keeps its independent pairs
    assert torch.equal(b[:10], x1[:10][ot_permutation(x0[:10], x1[:10])])  # the share: exact OT among itself
    assert torch.equal(couple("ot", x0, x1, frac=0.01)[1], x1)  # a share under two points pairs nothing


def test_a_blocked_coupling_plans_each_block_exactly_among_itself():
    torch.manual_seed(0)
    x0, x1 = torch.randn(50, 2), torch.randn(50, 2) + 3
    label = torch.arange(50)
    a, b, c = couple("ot", x0, x1, label, block=16)
    assert torch.equal(a, x0) and torch.equal(c.sort().values, label)  # still a permutation of the batch
    for i in range(0, 48, 16):  # every full block: exact OT among its own points
        assert torch.equal(b[i:i + 16], x1[i:i + 16][ot_permutation(x0[i:i + 16], x1[i:i + 16])])
    assert torch.equal(b[48:], x1[48:][ot_permutation(x0[48:], x1[48:])])  # the short last block too
    assert torch.equal(couple("ot", x0, x1, block=50)[1], couple("ot", x0, x1)[1])  # one block: the plain plan
    cost = lambda y: (x0 - y).pow(2).sum()  # noqa: E731
    assert cost(couple("ot", x0, x1)[1]) <= cost(b) < cost(x1)  # between the full plan and no plan
    _, d, _ = couple("ot", x0, x1, frac=0.5, block=10)  # blocks cover the coupled share only
    assert torch.equal(d[25:], x1[25:]) and torch.equal(d[20:25], x1[20:25][ot_permutation(x0[20:25], x1[20:25])])


def test_blocks_planned_side_by_side_on_several_threads_pair_as_on_one():
    torch.manual_seed(1)
    x0, x1 = torch.randn(97, 2), torch.randn(97, 2)  # six blocks of 16 and a last one of one point
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = couple("ot", x0, x1, block=16)[1]
        torch.set_num_threads(4)
        side_by_side = couple("ot", x0, x1, block=16)[1]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(serial, side_by_side) and torch.equal(serial[96], x1[96])
