"""Golden files lock the formats (diff file v2 and v1, weight map, patch arithmetic, journal), as in detools.

They were made once by tests/golden/make.py; a change that alters any byte
here changes the format and needs a version bump (docs/FORMAT.md). The v1
files (v1-*.tfdiff, made by make.py at commit bbab339) are the same diffs in
the old layout: today's reader must still read and apply them. The journals
(METHOD.tfdiff-journal: format 4; v3-METHOD.tfdiff-journal: format 3, made
by the applier before format 4) are what an apply of the golden diff to the
golden base, killed at its commit point, leaves. The int8-* files are the
same for an int8 model (weight map version 2, int8 entries, 1-byte journal
values). lowrank.tfdiff and lowrank-patched.tflite lock the low-rank entry
(method code 3) and its arithmetic; seed.tfdiff, seed-patched.tflite and
seed-basis.json the seed-basis entry (method code 4) and its generator.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import zlib

import pytest

import numpy as np

from device import applier, tflite
from device.format import decode
from tests.golden.make import base_of

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")


@pytest.mark.parametrize("method,prefix", [("sparse", ""), ("hash", ""), ("sparse", "v1-"), ("hash", "v1-"),
                                           ("int8-sparse", ""), ("lowrank", ""), ("seed", "")])
def test_golden_diffs_decode_reencode_and_patch_byte_for_byte(method, prefix, tmp_path):
    path = os.path.join(GOLDEN, f"{prefix}{method}.tfdiff")
    data = open(path, "rb").read()
    diff = decode(data)
    assert diff.method == method.removeprefix("int8-") and diff.generation == 1
    assert diff.version == (1 if prefix else 2)
    if not prefix:  # v2 diffs name the graph they are for: the golden base model's
        assert diff.graph_digest == tflite.graph_digest_of(os.path.join(GOLDEN, base_of(method)))
    assert diff.to_bytes() == data
    model = tmp_path / "model.tflite"
    shutil.copyfile(os.path.join(GOLDEN, base_of(method)), model)
    # apply checks the model's weights digest against the diff's base before writing
    result = applier.apply(model, path, allow_unsigned=True)
    assert result.status == "applied" and result.patched_elements > 0
    assert model.read_bytes() == open(os.path.join(GOLDEN, f"{method}-patched.tflite"), "rb").read()


def test_todays_converter_makes_the_golden_base_byte_for_byte():
    """A change to how a model is converted (the converter's owner of the variables, its options) changes
    the graph every deployed device holds and every diff's graph digest: it must show here."""
    import device
    from tests.golden.make import golden_model
    assert device.convert(golden_model()) == open(os.path.join(GOLDEN, "base.tflite"), "rb").read()


def test_positions_of_a_subset_equal_the_whole_weights_positions():
    """The applier finds a sparse diff's elements without enumerating the weight; same offsets as enumerating."""
    import numpy as np
    rng = np.random.default_rng(0)

    def check(model):
        weight_map = model.weight_map()
        for name in weight_map.names():
            every = model.byte_positions(name)
            some = np.sort(rng.choice(every.size, max(1, every.size // 7), replace=False))
            assert np.array_equal(model.positions_of(name, some), every[some]), name
            assert np.array_equal(model.positions_of(name, np.arange(every.size)), every), name
        return len(weight_map.names())
    assert tflite.read_mapped(os.path.join(GOLDEN, "base.tflite"), check) >= 5


def test_the_int8_base_has_a_version_2_weight_map_and_the_diff_int8_entries():
    def weight_map(model):
        return model.weight_map()
    wmap = tflite.read_mapped(os.path.join(GOLDEN, "int8-base.tflite"), weight_map)
    assert {wmap.dtype(name) for name in wmap.names()} == {"int8", "float32"}
    encoded = wmap.to_bytes()
    assert json.loads(zlib.decompress(encoded))["version"] == 2
    assert encoded in open(os.path.join(GOLDEN, "int8-base.tflite"), "rb").read()  # re-encoded byte for byte
    entries = decode(open(os.path.join(GOLDEN, "int8-sparse.tfdiff"), "rb").read()).entries
    assert {e.values.dtype for e in entries} == {np.dtype(np.int8), np.dtype(np.float16)}


@pytest.mark.parametrize("method", ["sparse", "hash", "int8-sparse"])
def test_the_journal_is_written_byte_for_byte_and_replays_and_rolls_back(method, tmp_path):
    golden = open(os.path.join(GOLDEN, f"{method}.tfdiff-journal"), "rb").read()
    base = open(os.path.join(GOLDEN, base_of(method)), "rb").read()
    model = tmp_path / "model.tflite"
    model.write_bytes(base)
    diff = os.path.join(GOLDEN, f"{method}.tfdiff")
    proc = subprocess.run([sys.executable, "-m", "device", "apply", str(model), diff, "--allow-unsigned",
                           "--strategy", "inplace"], capture_output=True,
                          env=dict(os.environ, TFDIFF_CRASH_AT="journal-committed"),
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == -signal.SIGKILL
    assert open(str(model) + applier.JOURNAL_SUFFIX, "rb").read() == golden
    # today's journal, and the one the previous version wrote (there was no int8 golden file then)
    for prefix in ("", "v3-") if method in ("sparse", "hash") else ("",):
        model.write_bytes(base)
        shutil.copyfile(os.path.join(GOLDEN, f"{prefix}{method}.tfdiff-journal"), str(model) + applier.JOURNAL_SUFFIX)
        assert applier.recover(model, allow_unsigned=True)
        assert model.read_bytes() == open(os.path.join(GOLDEN, f"{method}-patched.tflite"), "rb").read()
        assert applier.installed_generation(model) == 1
        assert applier.rollback(model, allow_unsigned=True) == 0  # the journal was kept as the undo record
        assert model.read_bytes() == base


def test_the_seed_bases_are_the_pinned_numbers():
    """The generator a seed diff's device regenerates its bases with: pinned, and recomputed in plain Python."""
    from device.hashing import hash_key, random_basis

    def fmix32(h):
        h ^= h >> 16
        h = (h * 0x85EBCA6B) & 0xFFFFFFFF
        h ^= h >> 13
        h = (h * 0xC2B2AE35) & 0xFFFFFFFF
        return h ^ (h >> 16)

    pinned = json.load(open(os.path.join(GOLDEN, "seed-basis.json")))
    for (seed, k), key in (((0, 0), "seed 0, stream 0"), ((7, 1), "seed 7, stream 1")):
        assert random_basis(8, seed, k).tolist() == pinned[key]
        by_hand = [(fmix32(p ^ hash_key(seed, k)) % 2**24) / 2**23 - 1 for p in range(8)]
        assert pinned[key] == by_hand

