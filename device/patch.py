"""The arithmetic of F_t (+) G: one definition for server and device.

`tfdiff.fold` on the server and `device.apply` on the device both call
`patched_values`, on arrays holding the same elements, so they produce the
same bits: every step is an elementwise IEEE float32 operation in a fixed
order, with no reductions whose order a library could choose.

    sparse: w' = w + float32(delta)
    hash:   w' = w + |w| * ((A[h_0(p)] + A[h_1(p)]) + ... + A[h_{K-1}(p)])
    lowrank: w'[i, j] = w[i, j] + ((A[i, 0] * B[0, j] + A[i, 1] * B[1, j]) + ... + A[i, r-1] * B[r-1, j])
    seed:    w'[i, j] = w[i, j] + (((U[i, 0] * d[0]) * V[0, j] + ... + (U[i, r-1] * d[r-1]) * V[r-1, j]) * b[j])

(lowrank and seed: the weight seen as a matrix of `matrix_dims` rows and
columns, each product rounded to float32 before it is added, terms in order
of the inner index: no BLAS call, whose summation order varies by machine;
seed: U (rows x r) and V (r x columns) are `seed_bases`, drawn from the
entry's seed by device/hashing.py, and only d and b travel).

The int8 weights of a quantized model (`device.convert(..., quantize="int8")`)
take int8 deltas in quantized units, in integer arithmetic that saturates at
TFLite's symmetric weight range:

    sparse int8: q' = min(127, max(-127, q + delta))
    hash int8:   q' = min(127, max(-127, q + rint(|q| * ((A[h_0(p)] + A[h_1(p)]) + ... + A[h_{K-1}(p)]))))

(the hash sum and product in float32 as for float weights, rint rounding
half to even). Their scales never change, so the device needs none of them.
"""
import numpy as np

from .hashing import hash_positions, random_basis

INT8_LIMIT = 127  # TFLite's int8 weights are symmetric: -128 is never used


def patch_mismatch(entry, weight_dtype):
    """Why `entry` cannot patch a weight stored as `weight_dtype` ("float32" or "int8"), or None.

    A hash entry fits either kind (its table is float; the base digest tells
    the models apart); a sparse one must hold int8 deltas exactly for an int8 weight.
    """
    if weight_dtype == "int8" and entry.method == "sparse" and entry.values.dtype != np.int8:
        return (f"weight {entry.name} is int8 in this model, but the diff holds {entry.values.dtype} "
                f"{entry.method} values for it: a diff made for a float32 model")
    if weight_dtype == "int8" and entry.method in ("lowrank", "seed"):
        return (f"weight {entry.name} is int8 in this model, and {entry.method} diffs patch float32 weights only: "
                "a diff made for a float32 model")
    if weight_dtype != "int8" and entry.values.dtype == np.int8:
        return (f"weight {entry.name} is float32 in this model, but the diff holds int8 deltas for it: "
                "a diff made for an int8 model")
    return None


def patched_values(entry, base_values, positions):
    """New float32 values of some elements of one weight.

    Args:
        entry: a `device.format.Entry` (method "sparse", "hash", "lowrank" or "seed").
        base_values: the current values of those elements: float32, or
            int8 for a quantized weight (then the entry holds int8 deltas).
        positions: int array, their row-major positions in the Keras weight;
            for sparse entries they must be positions the entry stores.

    Example:

    >>> import numpy as np
    >>> from device.format import Entry
    >>> e = Entry("w", (4,), "sparse", indices=np.array([1]), values=np.array([0.5], np.float16))
    >>> patched_values(e, np.float32([2.0]), np.array([1])).tolist()
    [2.5]
    """
    int8 = np.asarray(base_values).dtype == np.int8
    problem = patch_mismatch(entry, "int8" if int8 else "float32")
    if problem:
        raise ValueError(problem)
    if entry.method == "sparse":
        # All of the entry's positions (fold and the applier pass them so) need no search.
        slot = slice(None) if positions is entry.indices else np.searchsorted(entry.indices, positions)
        if int8:
            total = np.asarray(base_values, dtype=np.int16) + entry.values[slot].astype(np.int16)
            return np.clip(total, -INT8_LIMIT, INT8_LIMIT).astype(np.int8)
        return np.asarray(base_values, dtype=np.float32) + entry.values[slot].astype(np.float32)
    if entry.method == "hash":
        base_values = np.asarray(base_values, dtype=np.float32)  # exact for int8
        table = entry.values.astype(np.float32)
        positions = np.asarray(positions, dtype=np.uint32)
        out = np.empty(base_values.shape, dtype=np.int8 if int8 else np.float32)
        # Block by block, so the hash's temporaries stay in the CPU's cache (elementwise: same bits).
        for start in range(0, positions.size, _BLOCK):
            block = slice(start, start + _BLOCK)
            out[block] = _hash_patched(entry, table, base_values[block], positions[block], int8)
        return out
    if entry.method in ("lowrank", "seed"):
        return _product_patched(entry, np.asarray(base_values, dtype=np.float32), np.asarray(positions, np.int64))
    raise ValueError(f"unknown diff method {entry.method!r}")


def changes_every_element(entry):
    """Whether the entry patches every element of its weight (hash, low-rank, seed), not listed positions."""
    return entry.method != "sparse"


def matrix_dims(shape):
    """(rows, columns) of a weight seen as a matrix: its last axis against all the others.

    A Dense kernel (in, out) stays as it is, a Conv1D kernel (k, in, out)
    is (k * in, out), an Embedding (vocab, dim) is itself; a vector (n,)
    is one row.
    """
    shape = tuple(int(d) for d in shape)
    cols = shape[-1] if shape else 1
    return (int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1), cols


def factors(entry):
    """(A, B) of a low-rank entry as float32 matrices: A is rows x inner, B inner x columns (row-major, A first)."""
    rows, cols = matrix_dims(entry.shape)
    values = entry.values.astype(np.float32)
    split = rows * entry.inner
    return values[:split].reshape(rows, entry.inner), values[split:].reshape(entry.inner, cols)


def seed_bases(shape, inner, seed):
    """(U, V), a seed entry's random bases: U rows x inner from stream 0 of `seed`, V inner x columns from stream 1.

    Every weight of one shape shares them (as VeRA shares its random matrices); only the scalings travel.
    """
    rows, cols = matrix_dims(shape)
    return (random_basis(rows * inner, seed, 0).reshape(rows, inner),
            random_basis(inner * cols, seed, 1).reshape(inner, cols))


def _product_patched(entry, base_values, positions):
    if entry.method == "lowrank":
        a, b = factors(entry)
        scale = None
    else:
        u, b = seed_bases(entry.shape, entry.inner, entry.seed)
        values = entry.values.astype(np.float32)
        a, scale = u * values[:entry.inner], values[entry.inner:]  # U[i, k] * d[k], one rounding each
    out = np.empty(base_values.shape, dtype=np.float32)
    for start in range(0, positions.size, _BLOCK):  # elementwise: the same bits in any blocking
        block = slice(start, start + _BLOCK)
        row, col = np.divmod(positions[block], b.shape[1])
        total = a[row, 0] * b[0, col]
        for k in range(1, entry.inner):
            total = total + a[row, k] * b[k, col]
        out[block] = base_values[block] + (total if scale is None else total * scale[col])
    return out


_BLOCK = 1 << 16


def _hash_patched(entry, table, base_values, positions, int8):
    total = None
    for k in range(entry.num_hashes):
        term = table[hash_positions(positions, entry.seed, k, table.size)]
        total = term if total is None else total + term
    if int8:
        step = np.rint(np.abs(base_values) * total)
        return np.clip(base_values + step, -INT8_LIMIT, INT8_LIMIT).astype(np.int8)
    return base_values + np.abs(base_values) * total


def patch_weight(entry, weight):
    """The whole weight after the entry: what fold computes, in Keras layout (float32, or int8 kept int8)."""
    weight = np.asarray(weight)
    flat = weight.astype(np.int8 if weight.dtype == np.int8 else np.float32).reshape(-1).copy()
    positions = np.arange(flat.size) if changes_every_element(entry) else entry.indices
    flat[positions] = patched_values(entry, flat[positions], positions)
    return flat.reshape(np.shape(weight))
