import numpy as np
import pytest

from device.hashing import hash_positions
from tfdiff.methods import TfOps

POSITIONS = [0, 1, 2, 3, 1000, 65535, 2**31, 2**32 - 1]
# Pinned outputs: a change here changes every hash diff ever shipped.
VECTORS = [
    ((0, 0, 10), [1, 3, 6, 5, 0, 3, 1, 4]),
    ((0, 1, 1000), [713, 731, 121, 496, 888, 807, 92, 318]),
    ((7, 2, 97), [66, 50, 24, 26, 7, 2, 29, 95]),
    ((123456789, 0, 2**31 - 1), [658801641, 1459285942, 928874307, 2119222826, 432648571,
                                  925886166, 1362879851, 914135689]),
]


def reference_hash(p, seed, k, m):
    """The documented definition, in plain Python integers."""
    def fmix32(h):
        h ^= h >> 16
        h = (h * 0x85EBCA6B) % 2**32
        h ^= h >> 13
        h = (h * 0xC2B2AE35) % 2**32
        return h ^ (h >> 16)
    key = fmix32((seed * 0x9E3779B1 + k + 1) % 2**32)
    return fmix32(p ^ key) % m


@pytest.mark.parametrize("args,expected", VECTORS)
def test_vectors_numpy_tf_and_reference_agree(args, expected):
    import tensorflow as tf
    seed, k, m = args
    positions = np.array(POSITIONS, dtype=np.uint32)
    assert [reference_hash(p, seed, k, m) for p in POSITIONS] == expected
    assert hash_positions(positions, seed, k, m).tolist() == expected
    tf_out = hash_positions(tf.constant(positions), seed, k, m, ops=TfOps)
    assert tf_out.numpy().tolist() == expected


def test_tf_matches_numpy_on_many_positions():
    import tensorflow as tf
    positions = np.random.default_rng(1).integers(0, 2**32, size=20000, dtype=np.uint64).astype(np.uint32)
    for seed, k, m in [(3, 0, 17), (3, 2, 4096), (2**32 - 1, 1, 999983)]:
        want = hash_positions(positions, seed, k, m)
        got = hash_positions(tf.constant(positions), seed, k, m, ops=TfOps).numpy()
        np.testing.assert_array_equal(got, want)
        assert want.max() < m


def test_reseeding_changes_collisions():
    positions = np.arange(10000, dtype=np.uint32)
    a = hash_positions(positions, 0, 0, 1000)
    b = hash_positions(positions, 1, 0, 1000)
    assert np.mean(a == b) < 0.01
    counts = np.bincount(a, minlength=1000)
    assert counts.min() > 0 and counts.max() < 30  # spread evenly, no empty slots
