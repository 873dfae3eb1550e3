"""The diff methods: how a diff is parametrised, trained, and put on the wire.

A method object is small configuration, like a tfmot schedule: it holds no
variables, round-trips through `get_config`, and is shared by every layer it
is applied to. Every method is a `DiffMethod` and answers the same
questions, so `DiffWrapper` never asks which method it holds:

    create_diff(wrapper, base)      the trainable variable of one weight's diff
    constants(base, diff, ops)      per-weight constants of the forward pass, or None
    effective(base, diff, consts, ops)  the weight the wrapped layer computes with
    entry(name, base, diff)         that weight's wire entry (device.format.Entry)
    quantized_effective(base, diff, scale, consts), quantized_entry(name, base, diff, scale)
                                    the same for a weight the device holds in int8
                                    (tfdiff/quantized.py), where `supports_int8`
    planned(shapes, dense, int8_names)  a copy whose budget is planned for these weights
    prunable                        whether the diff is pruned by magnitude (with `schedule()`)
    wire_method                     the entry kind it travels as ("sparse", "hash", "lowrank" or "seed")

`ops` is the array namespace of the forward pass: `TfMath` (the default) for
a tf_keras model, `keras.ops` for a Keras 3 one (tfdiff/keras3.py), whose
functions have the same names, so one formula serves TensorFlow and JAX.
"""
import abc
import math
import zlib

import numpy as np

from device.format import MAX_SEED_INNER, Entry
from device.hashing import hash_positions
from device.patch import INT8_LIMIT, matrix_dims, seed_bases

from ._keras import keras, tf, tfmot
from .budget import BUDGETS, lowrank_inner, plan

_INT8_LIMIT = float(INT8_LIMIT)  # device/patch.py's saturation, as a float for TensorFlow


class DiffMethod(abc.ABC):
    """The interface every diff method provides (the module docstring lists it).

    Subclasses set `name` and `wire_method`, and say whether the diff is
    pruned (`prunable`, then `schedule()`) and whether it can be learned
    against an int8 device model (`supports_int8`, then it also provides
    `quantized_effective` and `quantized_entry`; `wrap` and `DiffWrapper`
    refuse int8 weights for a method without it). Arguments are checked by the shared `_check_*` validators, with
    "Received:" messages.
    """

    name = wire_method = None
    prunable = False
    supports_int8 = False

    @abc.abstractmethod
    def planned(self, shapes, dense=None, int8_names=()):
        """A copy whose budget is planned for weights of `shapes` (see tfdiff/budget.py)."""

    @abc.abstractmethod
    def get_config(self):
        """The constructor's arguments, JSON-ready."""

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @abc.abstractmethod
    def create_diff(self, wrapper, base):
        """The trainable variable of one weight's diff, added to `wrapper`."""

    def constants(self, base, diff, ops=None):
        """Per-weight constants of the forward pass, or None."""
        return None

    @abc.abstractmethod
    def effective(self, base, diff, constants=None, ops=None):
        """The weight the wrapped layer computes with."""

    @abc.abstractmethod
    def entry(self, name, base_value, diff_value):
        """The weight's wire entry (device.format.Entry)."""

    def masked(self, base):
        """Whether a Keras 3 wrapper masks this weight's diff by magnitude (every diff of a pruned method)."""
        return self.prunable

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"


ALLOCATIONS = ("layer", "global")


def _check_compression(compression):
    if (not isinstance(compression, (int, float)) or isinstance(compression, bool)
            or not math.isfinite(compression) or compression < 1):
        raise ValueError(f"`compression` must be a number >= 1. Received: compression={compression!r}")
    return float(compression)


def _check_value_dtype(value_dtype):
    if value_dtype not in ("float16", "float32"):
        raise ValueError(f"`value_dtype` must be 'float16' or 'float32'. Received: value_dtype={value_dtype!r}")
    return value_dtype


def _check_budget(budget):
    if budget not in BUDGETS:
        raise ValueError(f"`budget` must be one of {BUDGETS}. Received: budget={budget!r}")
    return budget


def _check_fraction(name, value):
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 1:
        raise ValueError(f"`{name}` must be in (0, 1]. Received: {name}={value!r}")
    return float(value)


def _check_seed(seed):
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"`seed` must be an integer in [0, 2**32). Received: seed={seed!r}")
    return seed


def _check_step(name, value, minimum):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")
    return value


@keras.utils.register_keras_serializable(package="tfdiff")
class SparseDiff(DiffMethod):
    """An additive diff pruned by magnitude during training.

    W' = W + D, where D starts at zero and tfmot's magnitude pruning drives it
    to a sparsity of 1 - 1/compression with the cubic schedule of Zhu & Gupta
    (PolynomialDecay, power 3) between `begin_step` and `end_step`. A pruned
    entry of D leaves the old weight in place, so the model stays dense. On
    the wire each kept value costs one `value_dtype` number plus a LEB128 gap
    to the previous kept position.

    Args:
        compression: the byte budget: the saved file is at most
            4N / compression bytes, headers and signature included.
        begin_step: training step at which pruning starts.
        end_step: step at which the final sparsity is reached.
        frequency: steps between mask updates.
        value_dtype: how the kept values travel, "float16" or "float32".
        budget: "wire" keeps as many values as fit the bytes (about
            1.33 N / compression with float16), "nominal" the paper's
            N / compression values (tfdiff/budget.py).
        kept_fraction: the planned share of kept values; `tfdiff.wrap`
            sets it from the model's weights (`planned`), so leave it None.
        allocation: "layer" prunes every weight to the same kept share
            (tfmot's rule, the paper's); "global" keeps the largest values of
            all the weights together, one threshold for the whole model, so
            the weights whose diffs grow most get most of the budget
            (tfdiff/allocation.py; float weights).
        sensitivity: with allocation "global", {weight name: scale}: each
            value's magnitude is weighed by its weight's scale before the
            one threshold (names missing: 1), e.g. `tfdiff.weight_sensitivity`
            measured on held-out data, so that a weight the loss barely
            feels does not keep values only because Adam grew them.

    Example:

    >>> method = SparseDiff(compression=20.0, begin_step=0, end_step=100, frequency=10)
    >>> round(method.final_sparsity, 3)
    0.95
    >>> SparseDiff.from_config(method.get_config()).get_config() == method.get_config()
    True

    Reference:
        Zhu & Gupta, "To prune, or not to prune", ICLR workshop 2018;
        Macoskey et al., "Learning a Neural Diff for Speech Models", sec. 3.1.
    """

    name = wire_method = "sparse"
    prunable = True
    supports_int8 = True

    def __init__(self, compression=10.0, begin_step=0, end_step=1000, frequency=100,
                 value_dtype="float16", budget="wire", kept_fraction=None, allocation="layer", sensitivity=None):
        self.compression = _check_compression(compression)
        self.begin_step = _check_step("begin_step", begin_step, 0)
        self.end_step = _check_step("end_step", end_step, begin_step + 1)
        self.frequency = _check_step("frequency", frequency, 1)
        self.value_dtype = _check_value_dtype(value_dtype)
        self.budget = _check_budget(budget)
        self.kept_fraction = _check_fraction("kept_fraction", kept_fraction)
        if allocation not in ALLOCATIONS:
            raise ValueError(f"`allocation` must be one of {ALLOCATIONS}. Received: allocation={allocation!r}")
        if sensitivity is not None and (allocation != "global" or not isinstance(sensitivity, dict) or not all(
                isinstance(v, (int, float)) and v >= 0 for v in sensitivity.values())):
            raise ValueError("`sensitivity` must be None or {weight name: scale >= 0}, with allocation='global'. "
                             f"Received: sensitivity={sensitivity!r}, allocation={allocation!r}")
        self.allocation = allocation
        self.sensitivity = None if sensitivity is None else {str(k): float(v) for k, v in sensitivity.items()}

    @property
    def final_sparsity(self):
        if self.kept_fraction is not None:
            return 1.0 - self.kept_fraction
        # Unplanned (a DiffWrapper used by hand): N / compression values,
        # which fit the budget with float16 values (about 3 bytes each).
        itemsize = np.dtype(self.value_dtype).itemsize
        return 1.0 - min(1.0, 3.0 / (itemsize + 1)) / self.compression

    def planned(self, shapes, dense=None, int8_names=()):
        """A copy whose kept fraction makes a diff of `shapes` fit the budget (`int8_names`: 1-byte deltas)."""
        return type(self)(**{**self.get_config(),
                             "kept_fraction": plan(self, shapes, dense, self.budget, int8_names)})

    def sparsity_at(self, step):
        """(whether the masks update at `step`, the sparsity then): `schedule()`'s cubic in plain Python.

        >>> SparseDiff(begin_step=0, end_step=100, frequency=10, kept_fraction=0.1).sparsity_at(50)
        (True, 0.7875)
        """
        progress = min(1.0, max(0.0, (step - self.begin_step) / (self.end_step - self.begin_step)))
        update = self.begin_step <= step <= self.end_step and (step - self.begin_step) % self.frequency == 0
        return update, self.final_sparsity * (1.0 - (1.0 - progress) ** 3)

    def schedule(self):
        return tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0, final_sparsity=self.final_sparsity,
            begin_step=self.begin_step, end_step=self.end_step, power=3,
            frequency=self.frequency)

    def get_config(self):
        return {"compression": self.compression, "begin_step": self.begin_step,
                "end_step": self.end_step, "frequency": self.frequency,
                "value_dtype": self.value_dtype, "budget": self.budget,
                "kept_fraction": self.kept_fraction, "allocation": self.allocation, "sensitivity": self.sensitivity}

    # -- what DiffWrapper asks of a method ---------------------------------
    def create_diff(self, wrapper, base):
        return wrapper.add_weight(name=_diff_name(base), shape=base.shape, dtype=base.dtype,
                                  initializer="zeros", trainable=True)

    def effective(self, base, diff, constants=None, ops=None):
        return base + diff

    def entry(self, name, base_value, diff_value):
        flat = np.asarray(diff_value, dtype=np.float32).reshape(-1)
        values = flat.astype(self.value_dtype)
        indices = np.flatnonzero(values)
        return Entry(name, tuple(np.shape(base_value)), "sparse", values[indices], indices)

    # -- int8 weights: deltas in quantized units ------------------------------
    def quantized_effective(self, base, diff, scale, constants=None):
        """The int8 weight the device will hold, dequantized: scale * sat(q + sat(round(D / scale))).

        `base` is scale * q exactly, so round(base / scale) is q. Rounding
        passes its gradient straight through; saturation stops it.
        """
        q = tf.round(base / scale)
        step = diff / scale
        step = tf.clip_by_value(step + tf.stop_gradient(tf.round(step) - step), -_INT8_LIMIT, _INT8_LIMIT)
        return scale * tf.clip_by_value(q + step, -_INT8_LIMIT, _INT8_LIMIT)

    def quantized_entry(self, name, base_value, diff_value, scale):
        """int8 deltas: sat(rint(D / scale)), the nonzero ones (device/patch.py adds them, saturating)."""
        step = np.asarray(diff_value, np.float32).reshape(-1) / np.asarray(scale, np.float32).reshape(-1)
        deltas = np.clip(np.rint(step), -_INT8_LIMIT, _INT8_LIMIT).astype(np.int8)
        indices = np.flatnonzero(deltas)
        return Entry(name, tuple(np.shape(base_value)), "sparse", deltas[indices], indices)



class _HashTables(DiffMethod):
    """What HashDiff and BLC's HashedWeights share: K hashes into one table per weight."""

    wire_method = "hash"
    prunable = False

    def __init__(self, compression=10.0, num_hashes=3, seed=0, value_dtype="float16", budget="wire",
                 table_fraction=None):
        self.compression = _check_compression(compression)
        self.num_hashes = _check_step("num_hashes", num_hashes, 1)
        if num_hashes > 255:
            raise ValueError(f"`num_hashes` must be at most 255. Received: num_hashes={num_hashes!r}")
        self.seed = _check_seed(seed)
        self.value_dtype = _check_value_dtype(value_dtype)
        self.budget = _check_budget(budget)
        self.table_fraction = _check_fraction("table_fraction", table_fraction)

    def table_size(self, num_weights):
        if self.table_fraction is not None:
            return max(1, int(num_weights * self.table_fraction))
        # Unplanned: float16 tables of N/compression entries use half the
        # byte budget, leaving the rest for headers.
        itemsize = np.dtype(self.value_dtype).itemsize
        return max(1, int(num_weights * 2 // (self.compression * itemsize)))

    def planned(self, shapes, dense=None, int8_names=()):
        """A copy whose tables make a diff of `shapes` fit the budget (a table is float for int8 weights too)."""
        return type(self)(**{**self.get_config(),
                             "table_fraction": plan(self, shapes, dense, self.budget)})

    def get_config(self):
        return {"compression": self.compression, "num_hashes": self.num_hashes,
                "seed": self.seed, "value_dtype": self.value_dtype, "budget": self.budget,
                "table_fraction": self.table_fraction}

    def _table(self, wrapper, base, suffix):
        size = int(np.prod(base.shape))
        return wrapper.add_weight(name=_diff_name(base) + suffix, shape=(self.table_size(size),),
                                  dtype=base.dtype, initializer="zeros", trainable=True)

    def constants(self, base, table, ops=None):
        """[K, *shape] int32 table indices of every element of `base`, computed once."""
        size = int(np.prod(base.shape))
        if ops is not None and ops is not TfMath:  # Keras 3: the device's own numpy hash, a constant of any backend
            positions = np.arange(size, dtype=np.uint32)
            return np.stack([hash_positions(positions, self.seed, k, table.shape[0]).astype(np.int32)
                             for k in range(self.num_hashes)]).reshape((self.num_hashes,) + tuple(base.shape))
        with tf.init_scope():  # outside any trace, captured by reference
            positions = tf.cast(tf.range(size, dtype=tf.int64), tf.uint32)
            slots = [tf.cast(hash_positions(positions, self.seed, k, table.shape[0], ops=TfOps), tf.int32)
                     for k in range(self.num_hashes)]
            return tf.reshape(tf.stack(slots), [self.num_hashes] + list(base.shape))

    def entry(self, name, base_value, table_value):
        """The weight's wire entry: its table, stored as `value_dtype`."""
        values = np.asarray(table_value, dtype=np.float32).astype(self.value_dtype)
        return Entry(name, tuple(np.shape(base_value)), "hash", values, None, self.seed, self.num_hashes)



@keras.utils.register_keras_serializable(package="tfdiff")
class HashDiff(_HashTables):
    """A multiplicative diff shared through K hash functions.

    W'[p] = W[p] + |W[p]| * sum_k A[h_k(p)], with one table A per weight,
    initialised to zero. The tables are as large as the byte budget allows
    (about 2N / compression float16 entries; `budget="nominal"`: the paper's
    N / compression). The hash (device/hashing.py) is reseeded per
    generation through `seed`.

    Args:
        compression: the byte budget: the saved file is at most
            4N / compression bytes, headers and signature included.
        num_hashes: K, the number of hash functions.
        seed: generation seed of the hash functions, 0 <= seed < 2**32.
        value_dtype: how the table travels, "float16" or "float32".
        budget: "wire" or "nominal", as for SparseDiff.
        table_fraction: table entries per weight element, planned by
            `tfdiff.wrap`; leave it None.

    Example:

    >>> method = HashDiff(compression=10.0, num_hashes=3, seed=1)
    >>> method.table_size(1000)
    100

    Reference:
        Chen et al., "Compressing neural networks with the hashing trick",
        ICML 2015; Macoskey et al., sec. 3.2.
    """

    name = "hash"
    supports_int8 = True

    def create_diff(self, wrapper, base):
        return self._table(wrapper, base, "_table")

    def effective(self, base, table, slots, ops=None):
        ops = ops or TfMath
        shared = ops.sum(ops.take(table, slots), axis=0)
        return base + ops.abs(base) * shared

    # -- int8 weights: the multiplicative step rounded to whole quantization steps --
    def quantized_effective(self, base, table, scale, slots):
        """scale * sat(q + round(|q| * sum_k A[h_k(p)])), rounding with a straight-through gradient."""
        q = tf.round(base / scale)
        step = tf.abs(q) * tf.reduce_sum(tf.gather(table, slots), axis=0)
        step = step + tf.stop_gradient(tf.round(step) - step)
        return scale * tf.clip_by_value(q + step, -_INT8_LIMIT, _INT8_LIMIT)

    def quantized_entry(self, name, base_value, table_value, scale):
        """The table, as for a float weight: the device rounds each element's step (device/patch.py)."""
        return self.entry(name, base_value, table_value)



class TfMath:
    """The array functions of the methods' forward passes, on TensorFlow tensors, named as in `keras.ops`."""

    abs = staticmethod(tf.abs)
    take = staticmethod(tf.gather)
    matmul = staticmethod(tf.matmul)
    reshape = staticmethod(tf.reshape)

    @staticmethod
    def sum(x, axis):
        return tf.reduce_sum(x, axis=axis)


class TfOps:
    """uint32 primitives on TensorFlow tensors, the twin of device.hashing.NumpyOps."""

    @staticmethod
    def const(value):
        return tf.constant(value, dtype=tf.uint32)

    xor = staticmethod(tf.bitwise.bitwise_xor)
    shift_right = staticmethod(tf.bitwise.right_shift)
    multiply = staticmethod(tf.math.multiply)
    mod = staticmethod(tf.math.floormod)


def _diff_name(base):
    return "diff_" + base.name.split("/")[-1].split(":")[0]


class _MatrixDiff(DiffMethod):
    """What LowRankDiff and SeedDiff share: a diff per matrix, its size planned as a share of the matrix."""

    def __init__(self, compression=10.0, seed=0, value_dtype="float16", budget="wire", value_fraction=None):
        self.compression = _check_compression(compression)
        self.seed = _check_seed(seed)
        self.value_dtype = _check_value_dtype(value_dtype)
        self.budget = _check_budget(budget)
        self.value_fraction = _check_fraction("value_fraction", value_fraction)

    @staticmethod
    def diffs(shape):
        """Whether a weight of `shape` gets a diff: a matrix of at least 2 x 2."""
        return min(matrix_dims(shape)) >= 2

    def inner(self, shape):
        """r of a weight of `shape`: planned, or unplanned (a DiffWrapper by hand) values taking half the bytes."""
        fraction = self.value_fraction
        if fraction is None:
            fraction = 2.0 / (self.compression * np.dtype(self.value_dtype).itemsize)
        return self._inner(shape, fraction)

    def planned(self, shapes, dense=None, int8_names=()):
        """A copy whose inner dimensions make a diff of the matrices among `shapes` fit the budget."""
        matrices = {name: shape for name, shape in shapes.items() if self.diffs(shape)}
        if not matrices:
            raise ValueError(f"{type(self).__name__} diffs matrices, and these weights hold none. "
                             f"Received: shapes={shapes}")
        return type(self)(**{**self.get_config(), "value_fraction": plan(self, matrices, dense, self.budget)})

    def get_config(self):
        return {"compression": self.compression, "seed": self.seed, "value_dtype": self.value_dtype,
                "budget": self.budget, "value_fraction": self.value_fraction}

    def _variable(self, wrapper, base, start):
        # One variable holds exactly the values the entry ships.
        return wrapper.add_weight(name=_diff_name(base) + "_" + self.name, shape=start.shape, dtype=base.dtype,
                                  initializer=lambda shape, dtype=None: start.astype(np.float32),
                                  trainable=True)


@keras.utils.register_keras_serializable(package="tfdiff")
class LowRankDiff(_MatrixDiff):
    """A low-rank additive diff per matrix, as LoRA: W' = W + A B.

    Each weight with at least two rows and two columns, seen as a matrix
    (its last axis against the others: a Conv1D kernel (k, in, out) is
    (k * in) x out), gets factors A (rows x r) and B (r x columns); the
    rank r is planned from the byte budget at wrap time, each matrix's
    factors holding about the same share of its elements. A starts random
    and B at zero, so the wrapped model starts as the base. Vectors (biases,
    normalization scales) get no diff. The factors travel as `value_dtype`
    numbers, A then B, and the device computes A B element by element in a
    fixed order of float32 operations (device/patch.py), so the patched
    model is `fold`'s bit for bit on any machine. Not for int8 weights.

    Args:
        compression: the byte budget: the saved file is at most
            4N / compression bytes, headers and signature included, N the
            elements of the matrices diffed.
        seed: seed of A's random start.
        value_dtype: how the factors travel, "float16" or "float32".
        budget: "wire" (and "coded": random factors barely code, so no
            coding gain is counted on) spends the budget on raw factor
            values, "nominal" holds at most N / compression values.
        value_fraction: the planned share of a matrix's elements its factors
            hold; `tfdiff.wrap` sets it (`planned`), so leave it None.

    Example:

    >>> method = LowRankDiff(compression=20.0).planned({"dense/0/kernel": (256, 128)})
    >>> method.inner((256, 128))  # r * (256 + 128) float16 values fit 4 * 256 * 128 / 20 bytes
    8
    >>> LowRankDiff.from_config(method.get_config()).get_config() == method.get_config()
    True

    Reference:
        Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022.
    """

    name = wire_method = "lowrank"

    @staticmethod
    def _inner(shape, fraction):
        return lowrank_inner(shape, fraction)

    @staticmethod
    def values_at(shape, fraction):
        """Values a weight of `shape` ships at the planned `fraction`."""
        return lowrank_inner(shape, fraction) * sum(matrix_dims(shape))

    def create_diff(self, wrapper, base):
        if not self.diffs(base.shape):
            return None
        rows, cols = matrix_dims(base.shape)
        inner = self.inner(base.shape)
        rng = np.random.default_rng([self.seed, zlib.crc32(f"{wrapper.name}/{_diff_name(base)}".encode())])
        start = np.zeros(inner * (rows + cols), np.float32)
        start[:rows * inner] = rng.standard_normal(rows * inner) / np.sqrt(rows)  # B is zero: G = 0
        return self._variable(wrapper, base, start)

    def effective(self, base, factors, constants=None, ops=None):
        ops = ops or TfMath
        rows, cols = matrix_dims(base.shape)
        inner = factors.shape[0] // (rows + cols)
        a = ops.reshape(factors[:rows * inner], (rows, inner))
        b = ops.reshape(factors[rows * inner:], (inner, cols))
        return base + ops.reshape(ops.matmul(a, b), tuple(base.shape))

    def entry(self, name, base_value, factors_value):
        values = np.asarray(factors_value, dtype=np.float32).astype(self.value_dtype)
        inner = values.size // sum(matrix_dims(np.shape(base_value)))
        return Entry(name, tuple(np.shape(base_value)), "lowrank", values, inner=inner)


@keras.utils.register_keras_serializable(package="tfdiff")
class SeedDiff(_MatrixDiff):
    """A diff from random bases that the device draws itself, as VeRA: W' = W + ((U diag(d)) V) diag(b).

    Per matrix (as LowRankDiff sees weights), U (rows x r) and V (r x columns)
    are uniform on [-1, 1), drawn from `seed` by the counter-based generator
    of device/hashing.py (`random_basis`, the hash method's own), so only the
    scalings d (r) and b (columns) travel: r + columns values per matrix,
    far fewer than any other method's, which suits the largest compressions.
    Weights of one shape share their bases. r is planned from the budget,
    up to min(rows, columns, 1024); d starts at 0.1 and b at zero, so the
    wrapped model starts as the base. The device computes the product term
    by term in float32 (device/patch.py), bit for bit `fold`'s. Not for int8
    weights; vectors get no diff.

    Args:
        compression: the byte budget, as for LowRankDiff.
        seed: the bases' seed, 0 <= seed < 2**32 (one per generation, say).
        value_dtype: how d and b travel, "float16" or "float32".
        budget: "wire", "coded" or "nominal", as for LowRankDiff.
        value_fraction: the planned share of full rank; `tfdiff.wrap` sets it.

    Example:

    >>> SeedDiff(compression=100.0).planned({"dense/0/kernel": (256, 128)}).inner((256, 128))
    128

    Reference:
        Kopiczko et al., "VeRA: Vector-based Random Matrix Adaptation", ICLR 2024;
        Koohpayegani et al., "NOLA: Compressing LoRA using Linear Combination of Random Basis", ICLR 2024.
    """

    name = wire_method = "seed"

    @staticmethod
    def _inner(shape, fraction):
        full = min(min(matrix_dims(shape)), MAX_SEED_INNER)
        return max(1, min(full, int(fraction * full)))

    @classmethod
    def values_at(cls, shape, fraction):
        """Values a weight of `shape` ships at the planned `fraction`: r + columns."""
        return cls._inner(shape, fraction) + matrix_dims(shape)[1]

    def create_diff(self, wrapper, base):
        if not self.diffs(base.shape):
            return None
        inner, cols = self.inner(base.shape), matrix_dims(base.shape)[1]
        start = np.concatenate([np.full(inner, 0.1, np.float32), np.zeros(cols, np.float32)])  # b = 0: G = 0
        return self._variable(wrapper, base, start)

    def constants(self, base, scalings, ops=None):
        """The bases U and V of this weight, drawn once, outside any trace."""
        if scalings is None:
            return None
        rows, cols = matrix_dims(base.shape)
        u, v = seed_bases(base.shape, scalings.shape[0] - cols, self.seed)
        if ops is not None and ops is not TfMath:  # Keras 3: numpy constants serve any backend
            return u, v
        with tf.init_scope():
            return tf.constant(u), tf.constant(v)

    def effective(self, base, scalings, bases, ops=None):
        ops = ops or TfMath
        u, v = bases
        inner = u.shape[1]
        d, b = scalings[:inner], scalings[inner:]
        return base + ops.reshape(ops.matmul(u * d, v) * b, tuple(base.shape))

    def entry(self, name, base_value, scalings_value):
        values = np.asarray(scalings_value, dtype=np.float32).astype(self.value_dtype)
        inner = values.size - matrix_dims(np.shape(base_value))[1]
        return Entry(name, tuple(np.shape(base_value)), "seed", values, seed=self.seed, inner=inner)


METHODS = {"SparseDiff": SparseDiff, "HashDiff": HashDiff, "LowRankDiff": LowRankDiff, "SeedDiff": SeedDiff}


def serialize_method(method):
    return {"class_name": type(method).__name__, "config": method.get_config()}


def deserialize_method(config):
    if isinstance(config, tuple(_registry().values())):
        return config
    if not isinstance(config, dict) or config.get("class_name") not in _registry():
        raise ValueError(f"`method` must be one of {sorted(_registry())}. Received: method={config!r}")
    return _registry()[config["class_name"]].from_config(config["config"])


def _registry():
    return METHODS



@keras.utils.register_keras_serializable(package="tfdiff")
class HashedWeights(_HashTables):
    """HashedNets for the BLC baseline: W[p] = sum_k A[h_k(p)], no base at all.

    Not a diff: the tables are the model's weights, trained from scratch.
    `initial_value` draws A so that each W[p] has the spread of the fresh
    layer's own initialization (std(W) / sqrt(K) per entry, K entries summed).
    It travels, for the byte count, as hash entries.

    Vectors (biases, normalization scales) train whole, from the layer's own
    initialization, and travel as dense values, as HashedNets hashes only
    the weight matrices: an LSTM bias hashed into a few entries starts every
    gate at a random offset, the cell state then ignores its input, and at
    40x a model started so stayed at chance (BLC-hash-40x, FSC generation 2,
    in two draws).

    Reference: Chen et al., "Compressing neural networks with the hashing
    trick", ICML 2015.
    """

    name = "hashed"

    @staticmethod
    def whole(shape):
        """Whether a weight of `shape` trains whole (a vector) rather than hashed (a matrix or more)."""
        return len(shape) < 2

    def create_diff(self, wrapper, base):
        if self.whole(base.shape):
            return wrapper.add_weight(name=_diff_name(base) + "_whole", shape=base.shape, dtype=base.dtype,
                                      initializer="zeros", trainable=True)
        return self._table(wrapper, base, "_hashed")

    def constants(self, base, table, ops=None):
        return None if self.whole(base.shape) else super().constants(base, table, ops)

    def initial_value(self, weight, rng):
        """A random table whose hashed weights spread like `weight`, a fresh initialization (a vector: itself)."""
        if self.whole(np.shape(weight)):
            return np.asarray(weight, dtype=np.float32)
        values = np.asarray(weight, dtype=np.float64).reshape(-1)
        scale = values.std() / np.sqrt(self.num_hashes)
        mean = values.mean() / self.num_hashes
        return (mean + scale * rng.standard_normal(self.table_size(values.size))).astype(np.float32)

    def effective(self, base, table, slots, ops=None):
        if slots is None:  # a vector, trained whole
            return table
        ops = ops or TfMath
        return ops.sum(ops.take(table, slots), axis=0)



METHODS["HashedWeights"] = HashedWeights


@keras.utils.register_keras_serializable(package="tfdiff")
class PrunedWeights(SparseDiff):
    """The sparse BLC on Keras 3: a fresh model's own weights, its kernels pruned by magnitude.

    Not a diff: each trainable weight is a copy of the fresh layer's (the
    frozen base is not used), and the weights tfmot's registry would prune
    (kernels, recurrent kernels, embeddings, pointwise kernels: matrices,
    not biases) are masked on SparseDiff's cubic schedule (tfdiff/pruning.py)
    while the rest train whole, as tfmot's `prune_low_magnitude` does to a
    tf_keras model. `compress_baseline` makes it from a SparseDiff.
    """

    name = "pruned"
    PRUNED_NAMES = ("kernel", "recurrent_kernel", "embeddings", "pointwise_kernel")

    @classmethod
    def prunes(cls, variable):
        return variable.name.split("/")[-1].split(":")[0] in cls.PRUNED_NAMES and len(variable.shape) >= 2

    def masked(self, base):
        return self.prunes(base)

    def create_diff(self, wrapper, base):
        return wrapper.add_weight(name=_diff_name(base) + "_pruned", shape=base.shape, dtype=base.dtype,
                                  initializer="zeros", trainable=True)

    def initial_value(self, weight, rng):
        """The fresh layer's own value: training starts where a plain model would."""
        return np.array(weight, np.float32)

    def effective(self, base, weight, constants=None, ops=None):
        return weight


METHODS["PrunedWeights"] = PrunedWeights
