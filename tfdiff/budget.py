"""The byte budget, planned before training so that what trains is what ships.

A diff (or a BLC model) may take B = 4N / compression bytes on the wire,
N being the float32 parameters it covers, headers and the 68-byte signature
included. Given the weights a method will be applied to, `plan` returns the
fraction of values a sparse method keeps, or of entries a hash table holds,
so that the saved file fits B:

- "wire" (the default) spends the whole budget: with float16 values and
  one-byte LEB128 gaps a sparse diff keeps about 1.33 N / compression
  values, a hash table holds about 2 N / compression entries;
- "nominal" is the paper's ratio: N / compression values or entries.

The arithmetic is that of the wire format (device/format.py): fixed file
and entry headers, then per value its bytes plus, for sparse entries, the
expected LEB128 gap at that density.
"""
import math

import numpy as np

from device.format import FILE_OVERHEAD_BYTES, SIGNATURE_BYTES, entry_header_bytes

BUDGETS = ("wire", "nominal")
# Magnitude pruning does not spread kept values evenly, so long gaps are a
# little likelier than at uniform density; this share of the budget is left
# for them (measured: the FSC demo's diffs land at 98-99 % of the budget).
_GAP_SLACK = 0.015


class BudgetError(ValueError):
    """A budget too small to hold even the headers of the diff."""


def budget_bytes(num_params: int, compression: float) -> int:
    """B = 4N / compression, the bytes a file may take, signature included."""
    return int(4 * num_params // compression)


def plan(method, shapes, dense=None, budget="wire", int8_names=()):
    """The kept (sparse) or table (hash) fraction that makes the file fit its budget.

    Args:
        method: a SparseDiff or HashDiff (or BLC's HashedWeights); its
            compression and value_dtype set the budget and value bytes.
        shapes: {weight name: shape} of the weights the method compresses.
        dense: {weight name: shape} of weights that travel whole (BLC's
            unprunable biases, say): they count in N and cost every value.
        budget: "wire" or "nominal" (see the module docstring).
        int8_names: weights of an int8 device model, whose sparse values
            travel as one-byte int8 deltas.

    Returns:
        a float in (0, 1].

    Raises:
        BudgetError: if the headers alone exceed the budget; its message
            names the smallest feasible compression.

    Example:

    >>> from tfdiff import SparseDiff
    >>> fraction = plan(SparseDiff(compression=20.0), {"dense/0/kernel": (512, 512)})
    >>> round(fraction * 20, 2)  # 1.31 N / compression values fit, not N / compression
    1.31
    """
    if budget not in BUDGETS:
        raise ValueError(f"`budget` must be one of {BUDGETS}. Received: budget={budget!r}")
    dense = dict(dense or {})
    sizes = {name: int(np.prod(shape, dtype=np.int64)) for name, shape in shapes.items()}
    dense_sizes = {name: int(np.prod(shape, dtype=np.int64)) for name, shape in dense.items()}
    total = sum(sizes.values()) + sum(dense_sizes.values())
    if not sizes or sum(sizes.values()) == 0:
        raise ValueError("`shapes` must name at least one weight with elements. Received: shapes={}")
    itemsize = np.dtype(method.value_dtype).itemsize
    fixed = FILE_OVERHEAD_BYTES + SIGNATURE_BYTES
    fixed += sum(entry_header_bytes(n, len(s), method.wire_method)
                 for n, s in shapes.items())
    # Dense weights travel as sparse entries holding every value (gap 0: one byte).
    fixed += sum(entry_header_bytes(n, len(s), "sparse") + (itemsize + 1) * dense_sizes[n]
                 for n, s in dense.items())
    limit = budget_bytes(total, method.compression)
    if fixed + len(sizes) * (itemsize + 1) > limit:
        need = fixed + len(sizes) * (itemsize + 1)
        if need >= 4 * total:
            raise BudgetError(f"the model is too small for any diff budget: the {need} bytes of headers are "
                              f"more than its {4 * total} bytes of float32 weights")
        raise BudgetError(f"a {method.compression:g}x budget of {limit} bytes cannot hold even the "
                          f"{need} bytes of headers; the smallest feasible compression is "
                          f"{4 * total / need:.1f}x")
    room = (limit - fixed) * (1 - _GAP_SLACK if method.wire_method == "sparse" else 1)
    params = sum(sizes.values())
    itemsize = {name: (1 if name in int8_names else itemsize) for name in sizes}
    if budget == "nominal":
        fraction = 1.0 / method.compression
        cost = _values_bytes(method.wire_method, fraction, sizes, itemsize)
        if cost > room:  # float32 values, say: the nominal ratio does not fit, the budget wins
            fraction = _solve(method.wire_method, sizes, itemsize, room)
        return fraction
    if method.wire_method == "sparse":
        return _solve("sparse", sizes, itemsize, room)
    itemsize = max(itemsize.values())
    return min(1.0, math.floor(room / itemsize - len(sizes)) / params)


def _values_bytes(method, fraction, sizes, itemsize):
    """Bytes of the values at this fraction; `itemsize` is {weight name: bytes per value}."""
    if method != "sparse":
        return sum(max(1, math.floor(n * fraction)) * itemsize[name] for name, n in sizes.items())
    # tfmot keeps round(n * fraction) values of each weight: ceil bounds it.
    gap = _expected_gap_bytes(fraction)
    return sum(max(1, math.ceil(n * fraction)) * (itemsize[name] + gap) for name, n in sizes.items())


def _expected_gap_bytes(density):
    """E[LEB128 bytes of a gap] when positions are kept independently with `density`."""
    if density >= 1:
        return 1.0
    # P(gap >= 2^(7k)) = (1 - d)^(2^(7k)), each such threshold adds a byte.
    return 1.0 + sum((1 - density) ** (2 ** (7 * k)) for k in range(1, 5))


def _solve(method, sizes, itemsize, room):
    low, high = 0.0, 1.0
    for _ in range(50):
        mid = (low + high) / 2
        if _values_bytes(method, mid, sizes, itemsize) <= room:
            low = mid
        else:
            high = mid
    return low


__all__ = ["plan", "budget_bytes", "BudgetError"]
