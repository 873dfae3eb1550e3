"""Global allocation of a sparse diff's values: one magnitude threshold for the whole model.

tfmot prunes each weight to the same kept share, the paper's rule, whether
the weight's diff matters or not. With `SparseDiff(allocation="global")`
the kept values are one pool: at each mask update of the cubic schedule the
largest-magnitude diff values of all the weights together are kept, as
many as the schedule allows for all of them, so the weights whose diffs
grew most (the layers the new data needs changed) get most of the budget.
The callback of `tfdiff.callbacks` calls `global_masks` on the host at the
schedule's mask updates; the wrappers only count steps and apply the masks.
Kept values spread unevenly over weights cost more index bytes than the
plan's even density, so the last update keeps as many as the budget holds
(`fitting_count`), measured on the raw entries whatever the budget: the
kept values still train after it, and their coded size moves with them (so
a "coded" global diff spends the budget before coding, as "wire" does).
"""
import numpy as np


def global_masks(diffs, kept):
    """0/1 float32 masks, one per array of `diffs`, keeping the `kept` largest |values| of all of them together.

    Example:

    >>> import numpy as np
    >>> [m.tolist() for m in global_masks([np.float32([0.1, -3.0]), np.float32([2.0, 0.0, 0.5])], 2)]
    [[0.0, 1.0], [1.0, 0.0, 0.0]]
    """
    magnitudes = np.concatenate([np.abs(np.asarray(d, np.float32)).ravel() for d in diffs])
    kept = int(min(max(kept, 0), magnitudes.size))
    keep = np.zeros(magnitudes.size, np.float32)
    if kept:
        keep[np.argpartition(magnitudes, magnitudes.size - kept)[magnitudes.size - kept:]] = 1.0
    bounds = np.cumsum([0] + [np.size(d) for d in diffs])
    return [keep[start:end].reshape(np.shape(d)) for d, start, end in zip(diffs, bounds, bounds[1:])]


def fitting_count(kept, fits):
    """The largest count in [1, kept] for which `fits(count)` holds (it holds for fewer if for more), or 1."""
    if fits(kept):
        return kept
    low, high = 1, kept  # fits(low) is assumed: one value and the headers fit any budget wrap accepted
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low
