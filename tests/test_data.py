import numpy as np
import pytest
import torch

from flowmaps.data.toy import TOY, sample_toy, toy_bounds
from flowmaps.errors import DataError
from flowmaps.io.arrays import load_array, save_array


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_toy_registry_has_the_four_2d_sets():
    assert set(TOY) == {"checker", "8gaussians", "moons", "spirals", "rings", "wave", "clusters"}


@pytest.mark.parametrize("name", sorted(TOY))
def test_toy_shape_dtype_bounds_and_reproducible(name):
    x = sample_toy(name, 5000, _gen(1))
    assert x.shape == (5000, 2) and x.dtype == torch.float32
    assert torch.equal(x, sample_toy(name, 5000, _gen(1)))
    assert not torch.equal(x, sample_toy(name, 5000, _gen(2)))
    lo, hi = toy_bounds(name)
    assert ((x >= lo) & (x <= hi)).all(dim=1).float().mean() > 0.999


def test_unknown_toy_name_lists_valid_names():
    with pytest.raises(ValueError, match="checker.*moons"):
        sample_toy("gmm", 10)
    with pytest.raises(ValueError, match="spirals"):
        toy_bounds("swissroll")


def test_toy_kwargs_reach_the_sampler():
    x = sample_toy("8gaussians", 4000, _gen(0), radius=3.0, std=0.01)
    assert torch.allclose(x.norm(dim=1).mean(), torch.tensor(3.0), atol=0.01)


def test_checker_in_the_8_squares_and_uniform():
    n = 80_000
    x = sample_toy("checker", n, _gen(3))
    assert toy_bounds("checker") == (-1.0, 1.0)
    assert ((x >= -1) & (x < 1)).all()
    cell = torch.floor((x + 1) / 0.5).long()
    assert ((cell[:, 0] + cell[:, 1]) % 2 == 0).all()
    counts = torch.bincount(cell[:, 1] * 4 + cell[:, 0], minlength=16).double()
    occupied = counts[counts > 0]
    assert len(occupied) == 8
    chi2 = float(((occupied - n / 8) ** 2 / (n / 8)).sum())
    assert chi2 < 24.3  # chi-square with 7 dof, p = 0.001
    # uniform inside a square: the offset within its cell is U[0, 0.5)^2 on a 5x5 sub-grid
    u = (x + 1) / 0.5 - cell
    sub = torch.bincount((u[:, 0] * 5).long() * 5 + (u[:, 1] * 5).long(), minlength=25).double()
    chi2_in = float(((sub - n / 25) ** 2 / (n / 25)).sum())
    assert chi2_in < 51.2  # chi-square with 24 dof, p = 0.001


@pytest.mark.parametrize("dims", [(7, 3), (5, 2, 3, 3)])
def test_npy_round_trip(tmp_path, dims):
    a = np.random.default_rng(0).normal(size=dims)
    save_array(tmp_path / "a.npy", torch.from_numpy(a))
    x = load_array(tmp_path / "a.npy")
    assert x.dtype == torch.float32 and x.shape == dims
    assert np.allclose(x.numpy(), a, atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]  # no temp file left behind


def test_npz_round_trip_with_and_without_key(tmp_path):
    a = np.arange(12, dtype=np.int64).reshape(6, 2)
    np.savez(tmp_path / "one.npz", data=a)
    assert torch.equal(load_array(tmp_path / "one.npz"), torch.from_numpy(a).float())
    np.savez(tmp_path / "two.npz", a=a, b=2 * a)
    assert torch.equal(load_array(tmp_path / "two.npz", key="b"), torch.from_numpy(2 * a).float())


def _write_cases(d):
    np.save(d / "nan.npy", np.array([[0.0, 1.0], [2.0, np.nan], [np.inf, 0.0]]))
    np.save(d / "obj.npy", np.array([[{"a": 1}, None]], dtype=object), allow_pickle=True)
    np.save(d / "flat.npy", np.zeros(5))
    np.save(d / "empty.npy", np.zeros((0, 2)))
    np.save(d / "zero_dim.npy", np.zeros((3, 0)))
    np.save(d / "text_dtype.npy", np.array([["a", "b"]]))
    (d / "text.npy").write_text("this is not an array\n")
    (d / "data.csv").write_text("1,2\n3,4\n")
    np.savez(d / "many.npz", a=np.zeros((2, 2)), b=np.ones((2, 2)))
    np.savez(d / "one.npz", a=np.zeros((2, 2)))
    return [
        ("nan.npy", None, r"2 non-finite.*row 1"),
        ("obj.npy", None, "unreadable"),
        ("flat.npy", None, "ndim 1"),
        ("empty.npy", None, "empty"),
        ("zero_dim.npy", None, "empty"),
        ("text_dtype.npy", None, "dtype"),
        ("text.npy", None, "unreadable"),
        ("data.csv", None, "extension"),
        ("missing.npy", None, "no such file"),
        ("many.npz", None, r"'a', 'b'"),
        ("one.npz", "c", r"no array named 'c'"),
    ]


def test_every_data_error_names_the_file(tmp_path):
    for name, key, pattern in _write_cases(tmp_path):
        with pytest.raises(DataError, match=pattern) as e:
            load_array(tmp_path / name, key=key)
        msg = str(e.value)
        assert name in msg and "\n" not in msg, msg
