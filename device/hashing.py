"""The hash that places weight positions into a HashDiff table.

One definition serves training (TensorFlow tensors) and folding/applying
(numpy arrays), so the two can never disagree. Everything is unsigned 32-bit
arithmetic, which wraps identically on every platform:

    key_k   = fmix32((seed * 0x9E3779B1 + k + 1) mod 2**32)
    h_k(p)  = fmix32(p XOR key_k) mod table_size

where p is the element's row-major position in the Keras weight and fmix32 is
MurmurHash3's 32-bit finalizer. Test vectors live in tests/test_hashing.py.

Example:

>>> import numpy as np
>>> hash_positions(np.arange(4, dtype=np.uint32), seed=0, k=0, table_size=10).tolist()
[1, 3, 6, 5]
"""
import numpy as np

_MASK32 = 0xFFFFFFFF


def _fmix32_int(h):
    """fmix32 on a Python int, for the per-(seed, k) key."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK32
    h ^= h >> 16
    return h


def hash_key(seed, k):
    """The 32-bit key of hash function number `k` under generation `seed`."""
    return _fmix32_int((int(seed) * 0x9E3779B1 + int(k) + 1) & _MASK32)


class NumpyOps:
    """uint32 primitives on numpy arrays; TensorFlow has its twin in tfdiff."""

    @staticmethod
    def const(value):
        return np.uint32(value)

    xor = staticmethod(np.bitwise_xor)
    shift_right = staticmethod(np.right_shift)
    multiply = staticmethod(np.multiply)
    mod = staticmethod(np.remainder)


def hash_positions(positions, seed, k, table_size, ops=NumpyOps):
    """Table index of each uint32 position under hash function `k`.

    Args:
        positions: uint32 array (numpy, or a tensor when `ops` is TF's).
        seed: generation seed, a non-negative int below 2**32.
        k: which of the K hash functions, 0-based.
        table_size: number of entries in the table, 1 to 2**32 - 1.
        ops: the uint32 primitives of the array library in use.
    """
    c = ops.const
    h = ops.xor(positions, c(hash_key(seed, k)))
    h = ops.xor(h, ops.shift_right(h, c(16)))
    h = ops.multiply(h, c(0x85EBCA6B))
    h = ops.xor(h, ops.shift_right(h, c(13)))
    h = ops.multiply(h, c(0xC2B2AE35))
    h = ops.xor(h, ops.shift_right(h, c(16)))
    return ops.mod(h, c(table_size))


def random_basis(count, seed, k):
    """`count` float32 values, uniform on [-1, 1) in steps of 2**-23, the k-th stream of `seed`.

    value(p) = h_k(p) * 2**-23 - 1 with table size 2**24: exact in float32,
    so the server and every device draw the same numbers (a SeedDiff's bases).

    >>> random_basis(4, seed=0, k=0).tolist()
    [0.8700121641159058, 0.11572825908660889, -0.017210006713867188, -0.8997889757156372]
    """
    positions = np.arange(count, dtype=np.uint32)
    return hash_positions(positions, seed, k, 1 << 24).astype(np.float32) * np.float32(2.0 ** -23) - np.float32(1.0)

