"""The byte budget, planned before training so that what trains is what ships.

A diff (or a BLC model) may take B = 4N / compression bytes on the wire,
N being the float32 parameters it covers, headers and the 68-byte signature
included. Given the weights a method will be applied to, `plan` returns the
fraction of values a sparse method keeps, of entries a hash table holds, or
of a weight's elements a low-rank diff's factors hold, so that the saved
file fits B:

- "wire" (the default) spends the whole budget before entropy coding: with
  float16 values and one-byte LEB128 gaps a sparse diff keeps about
  1.33 N / compression values, a hash table holds about 2 N / compression
  entries; the file's LZMA2 coding then leaves a fifth of the budget unspent;
- "coded" spends it after entropy coding: values are costed at an estimate
  of their coded bits (the gaps' entropy at that density, a share of each
  value's bytes), and a sparse diff's kept fraction is then measured on the
  diff itself while it trains (`coded_fraction`, called by `tfdiff.callbacks`);
- "nominal" is the paper's ratio: N / compression values or entries.

The arithmetic is that of the wire format (device/format.py): fixed file
and entry headers, then per value its bytes plus, for sparse entries, the
expected LEB128 gap at that density.
"""
import math

import numpy as np

from device.format import FILE_OVERHEAD_BYTES, SIGNATURE_BYTES, entry_header_bytes
from device.patch import matrix_dims

BUDGETS = ("wire", "coded", "nominal")
# Magnitude pruning does not spread kept values evenly, so long gaps are a
# little likelier than at uniform density; this share of the budget is left
# for them (measured: the FSC demo's diffs land at 98-99 % of the budget).
_GAP_SLACK = 0.015
# "coded": the share of a value's bytes LZMA2 keeps, by value size. Measured on
# the FSC demo's trained diffs (docs/fsc-demo2-results.json): float16 sparse
# values about 13.1 bits of 16 once the gaps' entropy is taken out, hash
# tables 88-89 %; the shares below sit a little above, so that a plan errs
# towards fitting. A sparse diff's plan is then measured on the diff itself.
_CODED_SHARE = {1: 0.9, 2: 0.86, 4: 0.95}
_CODED_TABLE_SHARE = 0.9


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
    if method.wire_method in ("lowrank", "seed"):
        return _solve_factors(method, shapes, budget, room, itemsize)
    itemsize = {name: (1 if name in int8_names else itemsize) for name in sizes}
    if budget == "coded":
        if method.wire_method != "sparse":
            return min(1.0, math.floor(room / (max(itemsize.values()) * _CODED_TABLE_SHARE) - len(sizes)) / params)
        return _solve("coded", sizes, itemsize, room)
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
    """Bytes of the values at this fraction; `itemsize` is {weight name: bytes per value}.

    `method` "coded" is a sparse diff after entropy coding: each gap costs
    its entropy, each value a share of its bytes (`_CODED_SHARE`).
    """
    if method == "coded":
        gap = _gap_entropy_bytes(fraction)
        return sum(max(1, math.ceil(n * fraction)) * (itemsize[name] * _CODED_SHARE[itemsize[name]] + gap)
                   for name, n in sizes.items())
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


def _gap_entropy_bytes(density):
    """Entropy in bytes of the gap before a kept position, positions kept independently with `density`."""
    if density >= 1 or density <= 0:
        return 0.0
    bits = -(density * math.log2(density) + (1 - density) * math.log2(1 - density)) / density
    return bits / 8


def coded_fraction(coded_bytes, target, low, high, cap=1.0, steps=12):
    """The kept fraction whose diff codes to `target` bytes, searched in [low, high], extrapolated up to `cap`.

    `coded_bytes(fraction)` encodes the diff keeping that fraction of each
    weight's largest values and returns the file's bytes; it rises with the
    fraction. `high` is the most the diff holds now: if even that codes
    under `target`, the bytes are extrapolated along the line through
    0.8 * high and high (the pruning mask can grow back to the fraction).
    Returns `low` if even `low` does not fit (extract then cuts, and says so).

    Example:

    >>> round(coded_fraction(lambda f: 1000 * f, target=250, low=0.1, high=0.5), 3)
    0.25
    >>> round(coded_fraction(lambda f: 1000 * f, target=250, low=0.1, high=0.2, cap=0.4), 3)
    0.25
    """
    if not 0 < low <= high <= cap <= 1:
        raise ValueError(f"`low`, `high` and `cap` must satisfy 0 < low <= high <= cap <= 1. "
                         f"Received: low={low}, high={high}, cap={cap}")
    top = coded_bytes(high)
    if top <= target:
        below = coded_bytes(0.8 * high)
        if top <= below:
            return high
        return min(cap, high + (target - top) * 0.2 * high / (top - below))
    for _ in range(steps):
        mid = (low + high) / 2
        if coded_bytes(mid) <= target:
            low = mid
        else:
            high = mid
    return low


def lowrank_inner(shape, fraction):
    """r, the inner dimension of a weight's factors A (rows x r) and B (r x columns) when their
    r * (rows + columns) values are about `fraction` of its elements: at least 1, at most full rank.

    Example:

    >>> lowrank_inner((512, 512), 0.05), lowrank_inner((3, 40, 64), 0.05), lowrank_inner((8, 8), 0.01)
    (12, 2, 1)
    """
    rows, cols = matrix_dims(shape)
    return max(1, min(rows, cols, int(fraction * rows * cols // (rows + cols))))


def _solve_factors(method, shapes, budget, room, itemsize):
    """The largest fraction whose values (`method.values_at(shape, fraction)`) fit `room` bytes (and,
    "nominal", N / compression values): a low-rank diff's factors, a seed diff's scalings."""
    def values(fraction):
        return sum(method.values_at(s, fraction) for s in shapes.values())

    # Every budget counts raw values, "coded" too: a low-rank A starts random, and float16 random
    # mantissas barely code (a "coded" plan of LowRankDiff at 0.9 of its bytes cut a tenth of its
    # values on the FSC tiny run).
    limit = room / itemsize
    if budget == "nominal":
        limit = min(limit, sum(int(np.prod(s, dtype=np.int64)) for s in shapes.values()) / method.compression)
    if values(0.0) > limit:
        raise BudgetError(f"a {method.compression:g}x budget cannot hold rank-1 {method.name} values of every "
                          f"matrix ({values(0.0) * itemsize} bytes of values, {int(room)} bytes free)")
    if values(1.0) <= limit:
        return 1.0
    # A planned fraction is in (0, 1]: rank 1 everywhere when nothing more fits.
    return max(_largest_fraction(lambda fraction: values(fraction) <= limit), 1e-9)


def _solve(method, sizes, itemsize, room):
    return _largest_fraction(lambda fraction: _values_bytes(method, fraction, sizes, itemsize) <= room)


def _largest_fraction(fits):
    """The largest fraction in [0, 1) for which `fits` holds (it holds for less if for more), by bisection."""
    low, high = 0.0, 1.0
    for _ in range(50):
        mid = (low + high) / 2
        if fits(mid):
            low = mid
        else:
            high = mid
    return low


__all__ = ["plan", "budget_bytes", "coded_fraction", "lowrank_inner", "BudgetError"]
