"""The far-match probe: anchors chosen by content find a copy at any offset, and measure how far back it is."""

from __future__ import annotations

import random

from ipex_aot import farmatch


def test_a_shifted_copy_is_found_at_its_distance(tmp_path):
    rng = random.Random(3)
    data = rng.randbytes(1 << 20)
    (tmp_path / "a").write_bytes(data)
    (tmp_path / "b").write_bytes(rng.randbytes(12345))
    (tmp_path / "c").write_bytes(rng.randbytes(5) + data)  # the same bytes, 5 + 12345 bytes further on
    paths = [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    found = farmatch.match_distances(paths)
    size = 1 << 20
    in_a = found.positions < size
    in_c = found.positions >= size + 12345
    assert 700 < in_a.sum() < 1400  # about one anchor per KiB
    assert (found.distances[in_a] == -1).all()  # random data: nothing repeats inside a
    copies = found.distances[in_c]
    assert len(copies) == in_a.sum() and (copies == size + 12345 + 5).all()
    assert found.far(size + 12345, 2 * size + 12350, size) == 1.0
    assert found.far(size + 12345, 2 * size + 12350, size + 12350) == 0.0
    assert found.far(0, size, 0) == 0.0
    assert found == farmatch.match_distances(paths, jobs=2)  # threads never change it


def test_a_copy_across_chunks_and_zero_runs(tmp_path, monkeypatch):
    """Anchors near a chunk's end are found once; runs of zero bytes (padding) are no anchors."""
    monkeypatch.setattr(farmatch, "_CHUNK", 64 << 10)
    rng = random.Random(5)
    data = rng.randbytes(300 << 10)
    (tmp_path / "a").write_bytes(data + bytes(1 << 20) + data)
    found = farmatch.match_distances([tmp_path / "a"])
    assert (found.positions[1:] > found.positions[:-1]).all()
    first, second = found.positions < len(data), found.positions >= len(data) + (1 << 20)
    assert first.sum() == second.sum() > 200 and not (~first & ~second).any()
    assert (found.distances[second] == len(data) + (1 << 20)).all()
