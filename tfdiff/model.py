"""Whole models: wrap, the fit callbacks, extract a diff, fold it back.

Weights are named as tfdiff/naming.py says, for the base model, the wrapped
model, the folded model and the .tflite weight map alike.
"""

import dataclasses
import logging
import os
import warnings

import numpy as np

from device import format as wire
from device.converter import saved_by_keras3
from device.digest import weights_digest
from device.format import DiffFile, DiffFormatError
from device.patch import patch_weight

from ._keras import keras, tfmot
from .allocation import fitting_count, global_masks
from .budget import budget_bytes, coded_fraction
from .diff import Diff, DiffMismatchError
from .methods import deserialize_method
from .quantized import quantize_with
from . import keras3
from .naming import (DIFF_WRAPPERS, all_diff_wrappers, check_keras_model, check_model, copy_model, keras_of,
                     layers_with_paths, weight_variables, weight_variables_with_layers)
from .wrapper import DiffWrapper
from device.naming import weight_name
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude


# "coded" budgets: the share of the budget left, when the kept fraction is measured at the last
# mask update before the schedule's end, for the values that move after it.
_CALIBRATION_MARGIN = 0.015
LOG = logging.getLogger("tfdiff")
LOG.addHandler(logging.NullHandler())  # a library's logger: silent until the application configures logging


class DiffCutWarning(UserWarning):
    """The diff that ships differs from the diff that trained (values cut to fit the budget)."""


def wrap(model: "keras.Model", method, include=None, exclude=None, int8=None, start=None) -> "keras.Model":
    """A new model whose weighted layers are wrapped in DiffWrapper.

    The base weights are copied in and frozen; nested functional and
    Sequential models are wrapped layer by layer. With a SparseDiff, each
    DiffWrapper is further wrapped by tfmot's PruneLowMagnitude, so train
    with `callbacks=tfdiff.callbacks(diff_model)`.

    Args:
        model: a built Sequential or functional model, of tf_keras or of
            Keras 3 (`import keras`, any backend: tfdiff/keras3.py).
        method: a `tfdiff.DiffMethod`: `SparseDiff`, `HashDiff`, `LowRankDiff` or `SeedDiff`.
        include: layer names (or a predicate on the layer) to diff; all
            weighted layers when None.
        exclude: layer names (or a predicate) to leave untouched.
        int8: a `tfdiff.Int8Model`, the int8 .tflite the device holds: its
            (dequantized) weights are the base, and its int8 weights train
            through a fake quantization on their frozen scales (SparseDiff:
            as int8 deltas; HashDiff: tables whose steps the device rounds).
        start: a sparse `tfdiff.Diff` of these weights (float32 devices), the
            values a SparseDiff starts from instead of zero: say the top-k of
            a fine-tuned model's delta, `posthoc_diff(..., rule="topk")`. The
            pruning schedule then prunes them like any other values.

    Example:

    >>> import tfdiff
    >>> from tfdiff import keras
    >>> base = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, name="out")])
    >>> diff_model = tfdiff.wrap(base, tfdiff.HashDiff(compression=4.0))
    >>> [type(layer).__name__ for layer in diff_model.layers]
    ['DiffWrapper']
    """
    check_model(model)
    method = deserialize_method(method)
    selected = _selector(include, exclude, model)
    if keras3.is_keras3(model) and int8 is not None:
        raise ValueError(f"int8 device models take tf_keras models; a Keras 3 model's diff is of float weights. "
                         f"Received: int8={int8!r}")
    # The budget is planned here, from the weights that will be diffed, so
    # the diff that trains is the diff that ships: extract cuts nothing.
    shapes = {name: tuple(v.shape) for name, v, layer in weight_variables_with_layers(model)
              if selected(layer) and v.trainable}
    if not shapes:
        raise ValueError("`include` / `exclude` leave no weighted layer to diff. Received: "
                         f"include={include!r}, exclude={exclude!r}")
    int8_names = set(int8.int8_names) if int8 is not None else set()
    if int8 is not None:
        missing = sorted(set(int8.values) ^ {name for name, _ in weight_variables(model)})
        if missing:
            raise ValueError(f"`int8` is not a model of these weights; they differ in {missing[:3]}. "
                             f"Received: int8 with {len(int8.values)} weights")
        if not method.supports_int8 or getattr(method, "allocation", "layer") == "global":
            raise ValueError(f"{type(method).__name__} cannot learn a diff of int8 weights"
                             f"{' with a global allocation' if method.supports_int8 else ''}. "
                             f"Received: method={method!r}")
        unselected = sorted(int8_names - set(shapes))
        if unselected:
            raise ValueError(f"every int8 weight must be diffed (its digest is the device's int8 values); "
                             f"`include` / `exclude` leave out {unselected[:3]}")
    method = method.planned(shapes, int8_names=int8_names) if int8_names else method.planned(shapes)
    paths = {id(inner): path for path, _, inner in layers_with_paths(model)}
    package = keras_of(model)

    def clone_layer(layer):
        if isinstance(layer, package.Model):
            return package.models.clone_model(layer, clone_function=clone_layer)
        clone = layer.__class__.from_config(layer.get_config())
        if not layer.weights or not selected(layer):
            return clone
        quantized = [i for i, v in enumerate(layer.weights) if weight_name(paths[id(layer)], i, v) in int8_names]
        return DiffWrapper(clone, method, int8_weights=quantized)  # Keras 3's wrapper for a Keras 3 layer

    diff_model = package.models.clone_model(model, clone_function=clone_layer)
    target = dict(weight_variables(diff_model))
    for name, variable in weight_variables(model):
        target[name].assign(np.array(variable.numpy()))  # a copy: JAX donates the diff model's buffers when it trains
    if int8 is not None:
        int8.assign_to(diff_model)
        for path, wrapper in _wrappers(diff_model):
            for index, scale in wrapper.int8_scales.items():
                scale.assign(int8.scales[weight_name(path, index, wrapper.base_weights[index])])
    if start is not None:
        _start_from(diff_model, method, start, int8)
    return diff_model


def _start_from(diff_model, method, start, int8):
    """Set each diff variable to the values of `start`'s entry for its weight (the others stay zero)."""
    if not method.prunable or int8 is not None or not isinstance(start, DiffFile) or start.method != "sparse":
        raise ValueError("`start` takes a sparse tfdiff.Diff, for a SparseDiff of float32 weights. Received: "
                         f"start={start!r}, method={method!r}, int8={int8!r}")
    entries = {entry.name: entry for entry in start.entries}
    for path, wrapper in _wrappers(diff_model):
        for index, base, diff in wrapper.diffed:
            entry = entries.pop(weight_name(path, index, base), None)
            if entry is not None:
                value = np.zeros(int(np.prod(diff.shape)), np.float32)
                value[entry.indices] = entry.values.astype(np.float32)
                diff.assign(value.reshape(diff.shape))
    if entries:
        raise ValueError(f"`start` names weights the wrapped model does not diff: {sorted(entries)[:3]}")


def callbacks(diff_model: "keras.Model") -> list:
    """The callbacks `fit` needs for this model's pruning, found in any model.

    DiffWrappers prune themselves wherever they sit (functional, Sequential,
    subclassed, nested); their callback zeroes the pruned diff values at each
    epoch's end and warns once if training ends before the pruning schedule
    does (the diff would then be cut to fit its budget). A BLC model from
    `compress_baseline` gets tfmot's `UpdatePruningStep`.

    Args:
        diff_model: a model from `tfdiff.wrap` or `compress_baseline`, or any
            model holding DiffWrapper layers.

    Returns:
        a list, empty when nothing is pruned.

    Example:

    >>> import tfdiff
    >>> from tfdiff import keras
    >>> base = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, name="out")])
    >>> [type(c).__name__ for c in tfdiff.callbacks(tfdiff.wrap(base, tfdiff.SparseDiff(compression=4.0)))]
    ['DiffPruning']
    """
    if keras3.is_keras3(diff_model):
        pruned = [w for w in all_diff_wrappers(diff_model) if w.method.prunable]
        return [keras3.DiffPruning(pruned, lambda: plan_wrappers(diff_model))] if pruned else []
    found = []
    if any(isinstance(layer, PruneLowMagnitude) for layer in _all_layers(diff_model)):
        found.append(tfmot.sparsity.keras.UpdatePruningStep())
    if any(w.method.prunable for w in all_diff_wrappers(diff_model)):
        found.append(DiffPruning(diff_model))
    return found


class DiffPruning(keras.callbacks.Callback):
    """Plans an unplanned budget, zeroes pruned diff values at each epoch's end, warns if fit stops early.

    DiffWrappers made by hand (a subclassed model's) hold a method whose
    kept share no one has planned from the model's weights; at the start of
    training it is planned as `tfdiff.wrap` would, over all of them, so the
    diff that trains is the diff that fits its budget. A `budget="coded"`
    sparse diff has its kept fraction measured on the diff's own coded bytes
    (`tfdiff.budget.coded_fraction`) halfway through the pruning schedule
    and at its last mask update before the end.
    """

    _supports_tf_logs = True  # batch logs stay tensors: the calibration reads one step counter, no metrics

    def __init__(self, diff_model=None):
        super().__init__()
        # The model holding the wrappers, which `fit` may train inside another (a task's trainer).
        self.diff_model = diff_model

    def on_train_begin(self, logs=None):
        if plan_wrappers(self.model):
            self.model.make_train_function(force=True)  # the schedule is traced into the step
        # A global allocation fits its bytes itself, at its last mask update (`_allocate_globally`).
        self._coded = [w for w in all_diff_wrappers(self.model) if w.method.prunable and w.method.budget == "coded"
                       and w.method.allocation == "layer"]
        self._earlier = None  # (step, kept fraction, coded bytes) of the halfway measurement
        self._global = [w for w in all_diff_wrappers(self.model)
                        if w.method.prunable and w.method.allocation == "global"]

    def on_train_batch_end(self, batch, logs=None):
        if self._global:
            self._allocate_globally()
        # A "coded" budget is measured on the diff twice: halfway through the schedule, when
        # the values have trained and the cubic schedule still holds several times the final
        # share, and at the last mask update before the end, when they have nearly settled;
        # the second leaves room for the drift the first shows, over the steps still to come.
        if not self._coded:
            return
        method, step = self._coded[0].method, int(self._coded[0].pruning_step.numpy())
        half = method.begin_step + (method.end_step - method.begin_step) // 2
        late = max(half + 1, method.end_step - method.frequency)
        if half <= step < late and self._earlier is None:
            self._earlier = (step, *_calibrate(self.diff_model or self.model))
            self.model.make_train_function(force=True)
        elif late <= step < method.end_step and self._earlier is not None:
            total = ((self.params or {}).get("steps") or step) * ((self.params or {}).get("epochs") or 1)
            then, *earlier = self._earlier
            # Noisy updates move values like a random walk: the spread, and with it the coded
            # bytes, grows with the square root of the steps, so the drift seen from `then` to
            # now is projected to the end of training on that scale.
            seen = max(1, step - then)
            ahead = max(0.0, ((max(total, step) - then) ** 0.5 - seen ** 0.5) / seen ** 0.5)
            _calibrate(self.diff_model or self.model, earlier, ahead=ahead)
            self.model.make_train_function(force=True)
            self._coded = []
        if step >= method.end_step:
            self._coded = []

    def _allocate_globally(self):
        """At the schedule's mask updates, keep the largest diff values of all the weights together."""
        method = self._global[0].method
        step = int(self._global[0].pruning_step.numpy())
        update, sparsity = method.sparsity_at(step)
        if not update:
            return
        pruning_vars = [v for wrapper in self._global for v in wrapper.pruning_vars]
        values = [diff.numpy() for diff, _, _ in pruning_vars]
        scales = None
        if method.sensitivity is not None:
            names = {id(diff): weight_name(path, index, base)
                     for path, wrapper in _wrappers(self.diff_model or self.model)
                     for index, base, diff in wrapper.diffed}
            scales = [method.sensitivity.get(names[id(diff)], 1.0) for diff, _, _ in pruning_vars]

        def keep(count):
            for (diff, mask, _), value, kept in zip(pruning_vars, values, global_masks(values, count, scales)):
                mask.assign(kept)
                diff.assign(value * kept)

        def fits(count):
            # The raw entries, whatever the budget: the values still train after this last update, and
            # their coded size moves with them; raw bytes do not (the coded file ships smaller).
            keep(count)
            _, entries, base_weights = _entries(self.diff_model or self.model)
            size = wire.FILE_OVERHEAD_BYTES + sum(map(wire.entry_nbytes, entries)) + wire.SIGNATURE_BYTES
            return size <= budget_bytes(sum(base_weights[e.name].size for e in entries), method.compression)

        count = max(1, round(sum(v.size for v in values) * (1.0 - sparsity)))
        if step + method.frequency > method.end_step:  # the last update: what ships must fit its bytes
            count = fitting_count(count, fits)
        keep(count)

    def on_epoch_end(self, epoch, logs=None):
        for wrapper in all_diff_wrappers(self.model):
            wrapper.remask()

    def on_train_end(self, logs=None):
        unfinished = _unfinished_schedule(self.model)
        if unfinished:
            _warn(f"training stopped at step {unfinished[0]} of a pruning schedule that ends at step "
                  f"{unfinished[1]}: the diff holds more values than its budget, and extract() will cut "
                  "the smallest (train longer, or lower SparseDiff's end_step)")


def extract(diff_model: "keras.Model", generation: int, strict: bool = False) -> Diff:
    """The learned diff G, as it will travel: quantized, encoded, budgeted.

    The saved file is at most 4 * (diffed weights) / compression bytes,
    signature included. If the pruning schedule has not finished, the
    smallest diff values are cut until the file fits: the model shipped then
    differs from the model trained, so this warns (`DiffCutWarning`, and the
    "tfdiff" logger) with how many values were cut, and `Diff.cut_values`
    keeps the count.

    Args:
        diff_model: a trained model from `tfdiff.wrap`, or any model holding
            DiffWrapper layers (a subclassed model's included).
        generation: the generation the diff produces (1 for the first
            update of a generation-0 model); devices refuse one not above
            their installed generation.
        strict: raise `ValueError` instead of cutting values.

    Returns:
        a `tfdiff.Diff` with its base and target weights digests set.

    Raises:
        ValueError: no DiffWrapper in `diff_model`, wrappers of several
            methods, a DiffWrapper out of reach of the weight names, or with
            `strict`, values to cut.

    Example:

    >>> import tfdiff
    >>> from tfdiff import keras
    >>> base = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, name="out")])
    >>> diff = tfdiff.extract(tfdiff.wrap(base, tfdiff.HashDiff(compression=4.0)), generation=1)
    >>> diff.generation, diff.nbytes + 68 <= 4 * (64 * 32 + 32) / 4.0
    (1, True)
    """
    if not isinstance(generation, int) or isinstance(generation, bool) or not 0 <= generation < 2**32:
        raise ValueError("`generation` must be an integer in [0, 2**32), the generation the diff produces. "
                         f"Received: generation={generation!r}")
    method, entries, base_weights = _entries(diff_model)
    diff = Diff(method=method.name, entries=entries, base_digest=b"", target_digest=b"",
                generation=generation, seed=getattr(method, "seed", 0),
                num_hashes=getattr(method, "num_hashes", 0))
    unfinished = _unfinished_schedule(diff_model)
    budget = diff.planned_budget(method.compression, {e.name: base_weights[e.name].size for e in entries})
    if strict and diff.nbytes > budget - wire.SIGNATURE_BYTES:
        raise ValueError(f"the diff needs {diff.nbytes + wire.SIGNATURE_BYTES} bytes signed, over its budget of "
                         f"{budget}; with strict=True nothing is cut"
                         + (f" (the pruning schedule stopped at step {unfinished[0]} of {unfinished[1]})"
                            if unfinished else ""))
    diff.fit_budget(method.compression, {e.name: base_weights[e.name].size for e in entries})
    if diff.cut_values:
        why = (f"training stopped at step {unfinished[0]} of the pruning schedule's {unfinished[1]}"
               if unfinished else "the kept values did not fit the bytes")
        _warn(f"extract cut {diff.cut_values} of {diff.cut_values + sum(e.values.size for e in diff.entries)} "
              f"diff values to fit {diff.budget} bytes ({why}); the model shipped differs from the model "
              "trained by those values")
    return seal(diff, base_weights)


def _entries(diff_model, every_kept=False):
    """(method, entries, base weights by name): the diff as extract ships it, before its budget is checked.

    `every_kept`: an int8 weight's entry also holds the kept positions whose
    delta still rounds to zero, as a one-step delta of the diff's sign: they
    ship once they move a step, which training still to come makes likely.
    """
    wrappers = [(path, w) for path, w in _wrappers(diff_model)]
    if not wrappers:
        raise ValueError("`diff_model` has no DiffWrapper layers; make it with tfdiff.wrap().")
    hidden = sorted({w.name for w in all_diff_wrappers(diff_model)} - {w.name for _, w in wrappers})
    if hidden:
        raise ValueError(f"DiffWrappers {hidden} sit inside a plain layer, where weights cannot be named; "
                         "hold them as attributes of a keras.Model (or the model itself)")
    methods = {repr(w.method) for _, w in wrappers}
    if len(methods) != 1:
        raise ValueError(f"all DiffWrappers must share one method. Found: {sorted(methods)}")
    method = wrappers[0][1].method
    entries = []
    base_weights = named_weights(diff_model)
    for path, wrapper in wrappers:
        masks = wrapper.masks
        scales = wrapper.int8_scales
        for index, base, diff in wrapper.diffed:
            diff_value = diff.numpy()
            if index in masks:
                diff_value = diff_value * masks[index]
            name = weight_name(path, index, base)
            if index in scales:  # the device holds int8: the base is its q, the entry int8 deltas
                base_weights[name] = quantize_with(base.numpy(), scales[index].numpy())
                entry = method.quantized_entry(name, base.numpy(), diff_value, scales[index].numpy())
                if every_kept and index in masks:
                    kept = np.flatnonzero(np.reshape(masks[index], -1))
                    deltas = np.where(np.reshape(diff_value, -1) < 0, -1, 1).astype(entry.values.dtype)
                    deltas[entry.indices] = entry.values
                    entry = dataclasses.replace(entry, values=deltas[kept], indices=kept)
                entries.append(entry)
            else:
                entries.append(method.entry(name, base.numpy(), diff_value))
    return method, entries, base_weights


def _calibrate(diff_model, earlier=None, ahead=0.0):
    """Set a "coded" sparse diff's kept fraction to what fits its budget once entropy coded.

    Measured on the diff as it trains: the values it holds now, each
    weight's largest kept, encoded as extract would. A margin is left for
    the values still to move: 1.5 %, and, given the `earlier` measurement
    (fraction, bytes), the growth of the same fraction's bytes since then
    times `ahead` (the growth still to come, as a multiple of that seen).
    extract cuts any excess, and says so. Returns (a reference fraction, its
    coded bytes now), for a later call's `earlier`.
    """
    # Every kept position counted: an int8 delta that rounds to zero now is one that ships later.
    method, entries, base_weights = _entries(diff_model, every_kept=True)
    sizes = {e.name: base_weights[e.name].size for e in entries}

    def coded_bytes(fraction):
        kept = [_largest(e, max(1, round(sizes[e.name] * fraction))) for e in entries]
        return Diff(method=method.name, entries=kept, base_digest=b"", target_digest=b"", generation=0).nbytes

    held = min(e.values.size / sizes[e.name] for e in entries)  # no weight can be measured past what it holds
    margin = _CALIBRATION_MARGIN
    if earlier is not None and earlier[0] <= held:
        margin += max(0.0, coded_bytes(earlier[0]) / earlier[1] - 1) * ahead
    target = int((budget_bytes(sum(sizes.values()), method.compression) - wire.SIGNATURE_BYTES) * (1 - margin))
    fraction = coded_fraction(coded_bytes, target, low=min(held, method.kept_fraction / 2), high=held,
                              cap=max(held, min(1.0, 2 * method.kept_fraction)))
    calibrated = type(method)(**{**method.get_config(), "kept_fraction": fraction})
    for wrapper in all_diff_wrappers(diff_model):
        wrapper.replan(calibrated)
    LOG.info("coded budget: kept fraction %.5f planned, %.5f measured on the diff (margin %.1f %%)",
             method.kept_fraction, fraction, 100 * margin)
    # The growth is measured again later at this fraction, which must still be held then: the schedule
    # holds more than the final share until its end, but not necessarily more than the fraction measured.
    reference = min(fraction, held) / 2
    return reference, coded_bytes(reference)


def _largest(entry, count):
    """`entry` with only its `count` largest-magnitude values (positions kept in order)."""
    if entry.values.size <= count:
        return entry
    order = np.argpartition(np.abs(entry.values.astype(np.float32)), entry.values.size - count)[-count:]
    keep = np.sort(order)
    return dataclasses.replace(entry, values=entry.values[keep], indices=entry.indices[keep])


def seal(diff, base_weights):
    """Set the diff's base and target digests from the weights it applies to."""
    diff.base_digest = weights_digest(base_weights)
    diff.target_digest = weights_digest(_folded_weights(base_weights, diff))
    return diff


def fold(base_model: "keras.Model", diff: "Diff | str | os.PathLike") -> "keras.Model":
    """F_t (+) G: a copy of `base_model` carrying the diff, bit for bit as the device.

    The arithmetic is device.patch's float32 numpy code, the very code the
    device applier runs, and the result is checked against the diff's
    target digest.

    Args:
        base_model: the model the diff was made for (F_t), a tf_keras model
            (Sequential, functional, or subclassed with a `get_config`) or a
            Keras 3 Sequential or functional one.
        diff: a `tfdiff.Diff`, or the path of a saved one.

    Returns:
        a new model, F_t (+) G; `base_model` is left as it was.

    Raises:
        DiffMismatchError: the diff was made for other weights.
        DiffFormatError: the diff's target digest does not match its content.
        ValueError: an argument of the wrong kind ("Received: ...").

    Example:

    >>> import tfdiff
    >>> from tfdiff import keras
    >>> base = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, name="out")])
    >>> diff = tfdiff.extract(tfdiff.wrap(base, tfdiff.HashDiff(compression=4.0)), generation=1)
    >>> tfdiff.named_weights(tfdiff.fold(base, diff))["out/0/kernel"].shape
    (64, 32)
    """
    check_keras_model(base_model, "base_model")
    if isinstance(diff, (str, os.PathLike)):
        diff = Diff.load(diff)
    if not isinstance(diff, DiffFile):
        raise ValueError(f"`diff` must be a tfdiff.Diff or the path of a saved diff. Received: diff={diff!r}")
    model = copy_model(base_model)
    slots = dict(weight_variables(model))
    current = {name: variable.numpy() for name, variable in slots.items()}
    if weights_digest(current) != diff.base_digest:
        raise DiffMismatchError("diff does not apply to this model: its base weights differ "
                                f"(model {weights_digest(current).hex()[:12]}, diff expects "
                                f"{diff.base_digest.hex()[:12]})")
    folded = _folded_weights(current, diff)
    if weights_digest(folded) != diff.target_digest:
        raise DiffFormatError("diff's target digest does not match its own content")
    for entry in diff.entries:
        slots[entry.name].assign(folded[entry.name])
    return model


def load_model(path: "str | os.PathLike", custom_objects: "dict | None" = None, compile: bool = True) -> "keras.Model":
    """A model saved with `model.save("....keras")`, tfdiff's layers and methods included (tf_keras or Keras 3).

    A wrapped model comes back with its diffs, masks, pruning step and (with
    `compile`) optimizer state, so `fit` goes on where it stopped.

    Args:
        path: the saved `.keras` file (or SavedModel directory).
        custom_objects: the model's own custom classes and functions.
        compile: restore the training configuration too.

    Example:

    >>> import os, tempfile, tfdiff
    >>> from tfdiff import keras
    >>> base = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, name="out")])
    >>> path = os.path.join(tempfile.mkdtemp(), "diff_model.keras")
    >>> tfdiff.wrap(base, tfdiff.SparseDiff(compression=4.0)).save(path)
    >>> type(tfdiff.load_model(path).layers[0]).__name__
    'DiffWrapper'
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"`path` does not exist. Received: path={path!r}")
    from . import methods, wrapper  # noqa: F401  (their classes are registered as "tfdiff>...")
    if saved_by_keras3(path):
        return keras3.keras.saving.load_model(path, custom_objects=custom_objects, compile=compile)
    return keras.models.load_model(path, custom_objects=custom_objects, compile=compile)


def named_weights(model: "keras.Model") -> "dict[str, np.ndarray]":
    """{weight name: float32 array} of every weight, wrapped layers unwrapped.

    Example:

    >>> import tfdiff
    >>> from tfdiff import keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="out")])
    >>> {name: value.shape for name, value in tfdiff.named_weights(model).items()}
    {'out/0/kernel': (3, 2), 'out/1/bias': (2,)}
    """
    return {name: variable.numpy() for name, variable in weight_variables(model)}


# -- internals ----------------------------------------------------------------
def _folded_weights(weights, diff):
    folded = dict(weights)
    for entry in diff.entries:
        if entry.name not in weights:
            raise DiffMismatchError(f"diff names weight {entry.name!r}, which the model lacks")
        if tuple(weights[entry.name].shape) != tuple(entry.shape):
            raise DiffMismatchError(f"weight {entry.name!r} has shape {weights[entry.name].shape}, "
                                    f"diff expects {entry.shape}")
        folded[entry.name] = patch_weight(entry, folded[entry.name])  # in order: a composed diff chains
    return folded


def _selector(include, exclude, model):
    def matches(rule, layer):
        return rule(layer) if callable(rule) else layer.name in set(rule)
    names = {inner.name for _, _, inner in layers_with_paths(model)}
    for rule, label in ((include, "include"), (exclude, "exclude")):
        if rule is not None and not callable(rule) and isinstance(rule, str):
            raise ValueError(f"`{label}` must be a list of layer names or a predicate. "
                             f"Received: {label}={rule!r}")
        unknown = sorted(set(rule) - names) if rule is not None and not callable(rule) else []
        if unknown:
            raise ValueError(f"`{label}` names layers the model does not have: {unknown}. "
                             f"Received: {label}={rule!r}")
    return lambda layer: ((include is None or matches(include, layer))
                          and (exclude is None or not matches(exclude, layer)))


def _all_layers(model):
    return [outer for _, outer, _ in layers_with_paths(model)]


def _wrappers(model):
    return [(path, inner) for path, _, inner in layers_with_paths(model)
            if isinstance(inner, DIFF_WRAPPERS)]


def plan_wrappers(model):
    """Plan the budget of DiffWrappers made by hand (`kept_fraction` None) over all of them; True if any was."""
    wrappers = [w for w in all_diff_wrappers(model) if w.method.prunable and w.method.kept_fraction is None]
    if not wrappers:
        return False
    paths = {id(inner): path for path, _, inner in layers_with_paths(model)}
    shapes, int8_names = {}, set()
    for wrapper in wrappers:
        for index, variable, _ in wrapper.diffed:
            name = weight_name(paths.get(id(wrapper), wrapper.name), index, variable)
            shapes[name] = tuple(variable.shape)
            if index in wrapper.int8_weights:
                int8_names.add(name)
    for method in {repr(w.method): w.method for w in wrappers}.values():
        planned = method.planned(shapes, int8_names=int8_names)
        for wrapper in wrappers:
            if repr(wrapper.method) == repr(method):
                wrapper.replan(planned)
    LOG.info("planned the budget of %d hand-made DiffWrappers over %d weights", len(wrappers), len(shapes))
    return True


def _unfinished_schedule(model):
    """(step reached, end step) if a pruned DiffWrapper's schedule has not ended, else None."""
    for wrapper in all_diff_wrappers(model):
        if wrapper.method.prunable and wrapper.pruning_step is not None:
            step = int(wrapper.pruning_step.numpy())
            if step < wrapper.method.end_step:
                return step, wrapper.method.end_step
    return None


def _warn(message):
    LOG.warning(message)
    warnings.warn(message, DiffCutWarning, stacklevel=3)
