import os

import numpy as np
import pytest

import tfdiff
from device.digest import weights_digest
from device import format as wire
from device.format import Entry


def sample_diff(method="sparse"):
    rng = np.random.default_rng(0)
    if method == "sparse":
        indices = np.sort(rng.choice(5000, 300, replace=False))
        indices[-1] = 4999
        entries = [Entry("enc/lstm/0/kernel", (50, 100), "sparse", rng.normal(size=300).astype(np.float16), indices),
                   Entry("enc/lstm/2/bias", (400,), "sparse", np.float16([1.5]), np.array([0])),
                   Entry("joint/1/bias", (7,), "sparse", np.zeros(0, np.float16), np.zeros(0, np.int64))]
        return tfdiff.Diff("sparse", entries, bytes(range(32)), bytes(range(1, 33)), generation=3)
    if method == "lowrank":
        entries = [Entry("conv/0/kernel", (3, 4, 10), "lowrank", rng.normal(size=2 * 22).astype(np.float16), inner=2),
                   Entry("dense/0/kernel", (20, 30), "lowrank", rng.normal(size=50).astype(np.float32), inner=1)]
        return tfdiff.Diff("lowrank", entries, b"a" * 32, b"b" * 32, generation=2)
    if method == "seed":
        entries = [Entry("conv/0/kernel", (3, 4, 10), "seed", rng.normal(size=3 + 10).astype(np.float16), seed=7,
                         inner=3)]
        return tfdiff.Diff("seed", entries, b"a" * 32, b"b" * 32, generation=2)
    entries = [Entry("dense/0/kernel", (20, 30), "hash", rng.normal(size=60).astype(np.float16), None, 11, 3)]
    return tfdiff.Diff("hash", entries, b"a" * 32, b"b" * 32, generation=1, seed=11, num_hashes=3)


def assert_same(a, b):
    assert (a.method, a.generation, a.seed, a.num_hashes, a.base_digest, a.target_digest) == \
           (b.method, b.generation, b.seed, b.num_hashes, b.base_digest, b.target_digest)
    for x, y in zip(a.entries, b.entries, strict=True):
        assert (x.name, x.shape, x.method, x.inner, x.seed) == (y.name, y.shape, y.method, y.inner, y.seed)
        assert x.values.dtype == y.values.dtype
        np.testing.assert_array_equal(x.values, y.values)
        if x.indices is not None:
            np.testing.assert_array_equal(x.indices, y.indices)


@pytest.mark.parametrize("method", ["sparse", "hash", "lowrank", "seed"])
def test_save_load_round_trip_is_exact(tmp_path, method):
    diff = sample_diff(method)
    path = tmp_path / "d.tfdiff"
    diff.save(path)
    again = tfdiff.Diff.load(path)
    assert isinstance(again, tfdiff.Diff)
    assert_same(diff, again)
    assert again.to_bytes() == path.read_bytes() == diff.to_bytes()


def test_gap_codec_round_trips_large_gaps():
    indices = np.array([0, 1, 127, 128, 300, 2**14 + 5, 2**21 + 9, 2**28 + 1, 2**31 + 7])
    block = wire.encode_gaps(indices)
    np.testing.assert_array_equal(wire.decode_gaps(block, indices.size), indices)


def corruptions(data):
    yield "empty", b"", "bad magic"
    yield "wrong magic", b"XXDIFF" + data[6:], "bad magic"
    yield "wrong version", data[:6] + (7).to_bytes(2, "little") + data[8:], "version 7"
    for cut in (10, 100, len(data) // 2, len(data) - 1):
        yield f"truncated at {cut}", data[:cut], "truncated|checksum"
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    yield "flipped byte", bytes(flipped), "checksum"
    yield "appended junk", data + b"\0" * 5, "checksum"


@pytest.mark.parametrize("method", ["sparse", "hash", "lowrank", "seed"])
def test_bad_files_raise_diff_format_error_and_write_nothing(tmp_path, method):
    data = sample_diff(method).to_bytes()
    for label, bad, message in corruptions(data):
        path = tmp_path / "bad.tfdiff"
        path.write_bytes(bad)
        before = sorted(os.listdir(tmp_path))
        with pytest.raises(tfdiff.DiffFormatError, match=message):
            tfdiff.Diff.load(path)
        assert sorted(os.listdir(tmp_path)) == before, label
        assert path.read_bytes() == bad


def test_internally_inconsistent_entry_is_rejected_with_a_reason():
    diff = sample_diff("sparse")
    diff.entries[0].indices = diff.entries[0].indices + 10  # past the weight's end
    with pytest.raises(tfdiff.DiffFormatError, match="outside shape"):
        wire.decode(diff.to_bytes())


@pytest.mark.parametrize("inner,count,dtype", [(0, 0, np.float16), (11, 11 * 22, np.float16),
                                               (2, 43, np.float16), (2, 44, np.int8)])
def test_low_rank_factors_that_do_not_fit_their_weight_are_refused(inner, count, dtype):
    """r in [1, min(rows, columns)], r (rows + columns) values, float: else the file is refused before any patch."""
    entry = Entry("conv/0/kernel", (3, 4, 10), "lowrank", np.ones(count, dtype), inner=inner)
    data = tfdiff.Diff("lowrank", [entry], b"a" * 32, b"b" * 32, generation=2).to_bytes()
    with pytest.raises(tfdiff.DiffFormatError, match="entry conv/0/kernel: low-rank factors"):
        wire.decode(data)


@pytest.mark.parametrize("inner,count,dtype", [(0, 10, np.float16), (11, 21, np.float16), (3, 12, np.float16),
                                               (3, 13, np.int8)])
def test_seed_scalings_that_do_not_fit_their_weight_are_refused(inner, count, dtype):
    """r in [1, min(rows, columns, 1024)] (the device's work per element is bounded), r + columns float values."""
    entry = Entry("conv/0/kernel", (3, 4, 10), "seed", np.ones(count, dtype), seed=7, inner=inner)
    data = tfdiff.Diff("seed", [entry], b"a" * 32, b"b" * 32, generation=2).to_bytes()
    with pytest.raises(tfdiff.DiffFormatError, match="entry conv/0/kernel: seed-basis scalings"):
        wire.decode(data)


def test_missing_file_is_a_format_error(tmp_path):
    with pytest.raises(tfdiff.DiffFormatError, match="cannot read"):
        tfdiff.Diff.load(tmp_path / "nope.tfdiff")


def test_digest_depends_on_names_shapes_and_bits():
    w = {"a/0/kernel": np.ones((2, 3), np.float32)}
    d = weights_digest(w)
    assert d == weights_digest({"a/0/kernel": np.ones((2, 3), np.float64)})
    assert d != weights_digest({"a/0/kernel": np.ones((3, 2), np.float32)})
    assert d != weights_digest({"b/0/kernel": np.ones((2, 3), np.float32)})
    assert d != weights_digest({"a/0/kernel": np.nextafter(np.ones((2, 3), np.float32), 2)})


def test_saved_files_get_normal_permissions_and_keep_existing_ones(tmp_path):
    path = tmp_path / "d.tfdiff"
    sample_diff().save(path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    os.chmod(path, 0o640)
    sample_diff("hash").save(path)
    assert path.stat().st_mode & 0o777 == 0o640


def test_entries_are_entropy_coded_and_a_bomb_is_refused():
    import lzma
    from device import format as wire
    rng = np.random.default_rng(0)
    indices = np.sort(rng.choice(100000, 4000, replace=False))
    values = (rng.normal(0, 0.01, 4000)).astype(np.float16)
    diff = wire.DiffFile("sparse", [wire.Entry("w", (100000,), "sparse", values, indices)], b"a" * 32, b"b" * 32)
    data = diff.to_bytes()
    raw = wire.encode_entry(diff.entries[0])
    assert len(data) < len(raw)  # coded smaller than the raw entries
    assert len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)) > 0.97 * len(data)  # xz finds nothing left
    assert wire.decode(data).entries[0].values.tobytes() == values.tobytes()
    # All zeros compress a thousandfold: written raw, since readers refuse such inflation.
    zeros = wire.DiffFile("hash", [wire.Entry("t", (500000,), "hash", np.zeros(200000, np.float16), None, 1, 3)],
                          b"a" * 32, b"b" * 32)
    assert wire.decode(zeros.to_bytes()).entries[0].values.size == 200000
    raw = wire.encode_entry(zeros.entries[0])
    bomb = zeros._encoded(raw, (1, lzma.compress(raw, format=lzma.FORMAT_RAW, filters=wire._LZMA_FILTERS)))
    with pytest.raises(wire.DiffFormatError, match="refusing to inflate"):
        wire.decode(bomb)
