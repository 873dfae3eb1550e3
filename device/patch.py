"""The float32 arithmetic of F_t (+) G: one definition for server and device.

`tfdiff.fold` on the server and `device.apply` on the device both call
`patched_values`, on arrays holding the same elements, so they produce the
same bits: every step is an elementwise IEEE float32 operation in a fixed
order, with no reductions whose order a library could choose.

    sparse: w' = w + float32(delta)
    hash:   w' = w + |w| * ((A[h_0(p)] + A[h_1(p)]) + ... + A[h_{K-1}(p)])
"""
import numpy as np

from .hashing import hash_positions


def patched_values(entry, base_values, positions):
    """New float32 values of some elements of one weight.

    Args:
        entry: a `device.format.Entry` (method "sparse" or "hash").
        base_values: float32 array, the current values of those elements.
        positions: int array, their row-major positions in the Keras weight;
            for sparse entries they must be positions the entry stores.

    Example:

    >>> import numpy as np
    >>> from device.format import Entry
    >>> e = Entry("w", (4,), "sparse", indices=np.array([1]), values=np.array([0.5], np.float16))
    >>> patched_values(e, np.float32([2.0]), np.array([1])).tolist()
    [2.5]
    """
    base_values = np.asarray(base_values, dtype=np.float32)
    if entry.method == "sparse":
        slot = np.searchsorted(entry.indices, positions)
        delta = entry.values[slot].astype(np.float32)
        return base_values + delta
    if entry.method == "hash":
        table = entry.values.astype(np.float32)
        positions = np.asarray(positions, dtype=np.uint32)
        total = None
        for k in range(entry.num_hashes):
            term = table[hash_positions(positions, entry.seed, k, table.size)]
            total = term if total is None else total + term
        return base_values + np.abs(base_values) * total
    raise ValueError(f"unknown diff method {entry.method!r}")


def patch_weight(entry, weight):
    """The whole weight after the entry: what fold computes, in Keras layout."""
    flat = np.asarray(weight, dtype=np.float32).reshape(-1).copy()
    positions = entry.indices if entry.method == "sparse" else np.arange(flat.size)
    flat[positions] = patched_values(entry, flat[positions], positions)
    return flat.reshape(np.shape(weight))
