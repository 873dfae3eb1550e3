"""Magnitude pruning on the cubic schedule, in numpy: tfmot's rule, for models tfmot cannot take (Keras 3).

tfmot's `PolynomialDecay` computes the sparsity of step s in float32,
    p = min(1, max(0, (s - begin) / (end - begin))),
    sparsity = (initial - final) (1 - p)^power + final,
updates the masks when begin <= s <= end and (s - begin) % frequency == 0,
and keeps k = max(1, round(size (1 - sparsity))) values: every |value| at
least the k-th largest (ties at the threshold all kept). These functions
repeat that arithmetic operation for operation, so a Keras 3 model's masks
are a tf_keras model's on the same values and steps (tests/test_keras3.py
checks it against tfmot itself).
"""
import numpy as np


def scheduled_sparsity(method, step):
    """(whether the masks update at `step`, the sparsity then, float32) of a `SparseDiff`'s schedule.

    Example:

    >>> from tfdiff import SparseDiff
    >>> update, sparsity = scheduled_sparsity(SparseDiff(begin_step=0, end_step=100, frequency=10,
    ...                                                  kept_fraction=0.1), 50)
    >>> update, round(float(sparsity), 4)
    (True, 0.7875)
    """
    begin, end, final = method.begin_step, method.end_step, method.final_sparsity
    progress = np.float32(step - begin) / np.float32(end - begin)
    progress = np.minimum(np.float32(1.0), np.maximum(np.float32(0.0), progress))
    sparsity = np.float32(0.0 - final) * np.power(np.float32(1.0) - progress, np.float32(3)) + np.float32(final)
    update = begin <= step <= end and (step - begin) % method.frequency == 0
    return update, np.float32(sparsity)


def magnitude_mask(values, sparsity):
    """0/1 float32 mask keeping the values of `values` whose magnitude is at least the k-th largest's.

    Example:

    >>> magnitude_mask(np.float32([0.1, -3.0, 2.0, 0.0]), np.float32(0.5)).tolist()
    [0.0, 1.0, 1.0, 0.0]
    """
    magnitudes = np.abs(np.asarray(values, np.float32))
    kept = int(max(np.round(np.float32(magnitudes.size) * (np.float32(1.0) - np.float32(sparsity))), 1))
    threshold = np.partition(magnitudes.reshape(-1), magnitudes.size - kept)[magnitudes.size - kept]
    return (magnitudes >= threshold).astype(np.float32)
