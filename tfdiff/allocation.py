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

Adam moves every value by about its learning rate whatever the gradient's
scale, so a weight the loss barely feels grows as large a diff as one that
matters. `SparseDiff(sensitivity=...)` weighs each weight's magnitudes by a
scale, such as `weight_sensitivity`'s: the root mean square of the loss's
gradient on held-out batches, a first-order measure of how much the loss
moves per unit of that weight's diff.
"""
import numpy as np


def global_masks(diffs, kept, scales=None):
    """0/1 float32 masks, one per array of `diffs`, keeping the `kept` largest |values| of all of them together
    (each array's |values| times its entry of `scales`, if given).

    Example:

    >>> import numpy as np
    >>> [m.tolist() for m in global_masks([np.float32([0.1, -3.0]), np.float32([2.0, 0.0, 0.5])], 2)]
    [[0.0, 1.0], [1.0, 0.0, 0.0]]
    >>> [m.tolist() for m in global_masks([np.float32([0.1, -3.0]), np.float32([2.0, 0.0, 0.5])], 2, [0.1, 1])]
    [[0.0, 0.0], [1.0, 0.0, 1.0]]
    """
    scales = [1.0] * len(diffs) if scales is None else scales
    magnitudes = np.concatenate([np.float32(scale) * np.abs(np.asarray(d, np.float32)).ravel()
                                 for d, scale in zip(diffs, scales)])
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


def weight_sensitivity(model, loss_fn, batches):
    """{weight name: scale in [0, 1]}: the root mean square gradient of `loss_fn(model, batch)` with respect to
    each weight over `batches`, divided by the largest; names as `tfdiff.named_weights`. Measure it on the
    base model with held-out (valid) data and pass it to `SparseDiff(allocation="global", sensitivity=...)`.

    Example:

    >>> import numpy as np, tensorflow as tf, tfdiff
    >>> from tfdiff import keras
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="out")])
    >>> x = np.ones((8, 4), np.float32)
    >>> scales = tfdiff.weight_sensitivity(model, lambda m, b: tf.reduce_mean(m(b) ** 2), [x])
    >>> sorted(scales), max(scales.values())
    (['out/0/kernel', 'out/1/bias'], 1.0)
    """
    import tensorflow as tf

    from .naming import weight_variables

    named = [(name, variable) for name, variable in weight_variables(model) if variable.trainable]
    if not named:
        raise ValueError("`model` has no trainable weights to measure. Received: a model with none")
    squares, count = [0.0] * len(named), 0
    for batch in batches:
        with tf.GradientTape() as tape:
            loss = loss_fn(model, batch)
        for i, grad in enumerate(tape.gradient(loss, [v for _, v in named])):
            if grad is not None:
                squares[i] += float(tf.reduce_mean(tf.square(tf.convert_to_tensor(grad))))
        count += 1
    if not count:
        raise ValueError("`batches` must hold at least one batch. Received: none")
    rms = np.sqrt(np.float64(squares) / count)
    top = float(rms.max()) or 1.0
    return {name: float(value / top) for (name, _), value in zip(named, rms)}
