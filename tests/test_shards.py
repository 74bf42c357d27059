"""The sharded store every store is made of: fields of any dtype, resumable writes, verification once, refusal
of another store's settings."""

import json

import numpy as np
import pytest

from flowmaps.errors import StoreError
from flowmaps.io.shards import (
    VERIFIED,
    ShardReader,
    manifest,
    open_for_writing,
    shard_count,
    shard_file,
    verify,
    write_manifest,
    write_shard,
)


def _make(root, n=10, size=4, stop=None, **about):
    want = manifest("images", n, size, {"x": ((1, 2, 2), "uint8"), "label": ((), "int64")}, source="test", **about)
    lock, m = open_for_writing(root, want, repair=False)
    try:
        for k in range(shard_count(m))[:stop]:
            if str(k) in m["shards"]:
                continue
            start, rows = k * size, min(size, n - k * size)
            x = (np.arange(start, start + rows, dtype=np.uint8)[:, None, None, None] * np.ones((1, 1, 2, 2), np.uint8))
            m["shards"][str(k)] = write_shard(root, k, start, {"x": x, "label": np.arange(start, start + rows) % 3})
        m["complete"] = len(m["shards"]) == shard_count(m)
        write_manifest(root, m)
    finally:
        lock.close()
    return m


def test_fields_round_trip_and_resume(tmp_path):
    _make(tmp_path / "s", stop=1)
    with pytest.raises(StoreError, match="incomplete store"):
        ShardReader(tmp_path / "s", "images")
    m = _make(tmp_path / "s")  # resumes: shard 0 is kept, 1 and 2 are made
    assert m["complete"] and sorted(m["shards"]) == ["0", "1", "2"]
    r = ShardReader(tmp_path / "s", "images")
    rows = r.get(np.array([9, 0, 5, 5]))
    assert rows["x"].dtype == np.uint8 and rows["x"][:, 0, 0, 0].tolist() == [9, 0, 5, 5]
    assert rows["label"].tolist() == [0, 0, 2, 2]
    with pytest.raises(StoreError, match="a store of images, not of pairs"):
        ShardReader(tmp_path / "s", "pairs")
    with pytest.raises(StoreError, match="was made with source='test', this run asks source='other'"):
        open_for_writing(tmp_path / "s", {**m, "source": "other"}, repair=False)


def test_verified_once_then_again_when_a_file_changes(tmp_path):
    _make(tmp_path / "s")
    ShardReader(tmp_path / "s", "images")
    stamps = json.loads((tmp_path / "s" / VERIFIED).read_text())
    assert sorted(stamps) == ["0", "1", "2"]
    path = tmp_path / "s" / shard_file(1, "label")
    a = np.load(path)
    a[0] += 1  # same shape and dtype, other content: its size and mtime change the stamp
    np.save(path, a)
    with pytest.raises(StoreError, match=r"shard-00001\.label\.npy: sha256 mismatch"):
        ShardReader(tmp_path / "s", "images")
    assert verify(tmp_path / "s") == {1: "shard-00001.label.npy (sha256 mismatch (corrupt))"}
