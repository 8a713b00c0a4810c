"""The far-match probe: anchors chosen by content find a copy at any offset, and measure how far back it is."""

from __future__ import annotations

import random
import subprocess

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


def _shared_library(tmp_path, count: int = 400):
    """A real gcc-linked shared object: its .dynsym near the start, its .symtab (the same symbols) near the end."""
    src = tmp_path / "lib.c"
    src.write_text("".join(f"int exported_function_{i}(int x) {{ return x * {i} + {i * 7}; }}\n" for i in range(count)))
    lib = tmp_path / "lib.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O0", "-o", str(lib), str(src)], check=True, capture_output=True)
    return lib


def _section(path, name):
    out = subprocess.run(["readelf", "-SW", str(path)], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        fields = line.replace("[ ", "[").split()
        if len(fields) > 5 and fields[1] == name:
            return int(fields[4], 16), int(fields[5], 16)
    raise AssertionError(f"{name} not in {path}")


def test_a_symbol_table_is_far_where_its_dynamic_twin_is(tmp_path):
    """.symtab repeats .dynsym's records with other name offsets: no 32 equal bytes, so the anchors miss it;
    the section table marks it far for any window shorter than the distance between the two (binutils' readelf
    checks the offsets)."""
    lib = _shared_library(tmp_path)
    symtab, dynsym = _section(lib, ".symtab"), _section(lib, ".dynsym")
    other = tmp_path / "data"
    other.write_bytes(random.Random(7).randbytes(5000))
    found = farmatch.match_distances([other, lib])
    (start, end, distance), = found.tables
    assert distance == symtab[0] - dynsym[0] > 0
    assert start == (5000 + symtab[0]) // 16 * 16 and end >= 5000 + sum(symtab)
    assert found.far(start, end, distance - 1) == 1.0 and found.far(start, end, distance) == 0.0
    assert found.far(start, end + (end - start), distance - 1) >= 0.5  # half of this stretch is the table
    assert farmatch.symbol_tables([other]) == []  # not ELF: no tables
    stripped = tmp_path / "stripped.so"
    subprocess.run(["strip", "-o", str(stripped), str(lib)], check=True)
    assert farmatch.symbol_tables([stripped]) == []  # no .symtab left
