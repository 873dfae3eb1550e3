"""Whole models: wrap, the fit callbacks, extract a diff, fold it back.

Weights are named as tfdiff/naming.py says, for the base model, the wrapped
model, the folded model and the .tflite weight map alike.
"""

import os

import numpy as np

from device.format import DiffFile, DiffFormatError, weights_digest
from device.patch import patch_weight

from ._keras import keras, tfmot
from .diff import Diff
from .methods import deserialize_method
from .quantized import quantize_with
from .naming import (PruneLowMagnitude, check_model, layers_with_paths, weight_name, weight_variables,
                     weight_variables_with_layers)
from .wrapper import DiffWrapper


class DiffMismatchError(ValueError):
    """A diff applied to a model it was not made for."""


def wrap(model: "keras.Model", method, include=None, exclude=None, int8=None) -> "keras.Model":
    """A new model whose weighted layers are wrapped in DiffWrapper.

    The base weights are copied in and frozen; nested functional and
    Sequential models are wrapped layer by layer. With a SparseDiff, each
    DiffWrapper is further wrapped by tfmot's PruneLowMagnitude, so train
    with `callbacks=tfdiff.callbacks(diff_model)`.

    Args:
        model: a built tf_keras Sequential or functional model.
        method: `tfdiff.SparseDiff` or `tfdiff.HashDiff`.
        include: layer names (or a predicate on the layer) to diff; all
            weighted layers when None.
        exclude: layer names (or a predicate) to leave untouched.
        int8: a `tfdiff.Int8Model`, the int8 .tflite the device holds: its
            (dequantized) weights are the base, and its int8 weights train
            through a fake quantization on their frozen scales (SparseDiff:
            as int8 deltas; HashDiff: tables whose steps the device rounds).

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
    # The budget is planned here, from the weights that will be diffed, so
    # the diff that trains is the diff that ships: extract cuts nothing.
    shapes = {name: tuple(v.shape) for name, v, layer in weight_variables_with_layers(model)
              if selected(layer)}
    if not shapes:
        raise ValueError("`include` / `exclude` leave no weighted layer to diff. Received: "
                         f"include={include!r}, exclude={exclude!r}")
    int8_names = set(int8.int8_names) if int8 is not None else set()
    if int8 is not None:
        missing = sorted(set(int8.values) ^ {name for name, _ in weight_variables(model)})
        if missing:
            raise ValueError(f"`int8` is not a model of these weights; they differ in {missing[:3]}. "
                             f"Received: int8 with {len(int8.values)} weights")
        if not hasattr(method, "quantized_effective"):
            raise ValueError(f"{type(method).__name__} cannot learn a diff of int8 weights. "
                             f"Received: method={method!r}")
        unselected = sorted(int8_names - set(shapes))
        if unselected:
            raise ValueError(f"every int8 weight must be diffed (its digest is the device's int8 values); "
                             f"`include` / `exclude` leave out {unselected[:3]}")
    method = method.planned(shapes, int8_names=int8_names) if int8_names else method.planned(shapes)
    paths = {id(inner): path for path, _, inner in layers_with_paths(model)}

    def clone_layer(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=clone_layer)
        clone = layer.__class__.from_config(layer.get_config())
        if not layer.weights or not selected(layer):
            return clone
        quantized = [i for i, v in enumerate(layer.weights) if weight_name(paths[id(layer)], i, v) in int8_names]
        wrapped = DiffWrapper(clone, method, int8_weights=quantized)
        if method.prunable:
            wrapped = PruneLowMagnitude(wrapped, pruning_schedule=method.schedule())
        return wrapped

    diff_model = keras.models.clone_model(model, clone_function=clone_layer)
    target = dict(weight_variables(diff_model))
    for name, variable in weight_variables(model):
        target[name].assign(variable)
    if int8 is not None:
        int8.assign_to(diff_model)
        for path, wrapper in _wrappers(diff_model):
            for index, scale in wrapper.int8_scales.items():
                scale.assign(int8.scales[weight_name(path, index, wrapper.base_weights[index])])
    return diff_model


def callbacks(diff_model: "keras.Model") -> list:
    """The callbacks `fit` needs for this diff model (tfmot's pruning step).

    Args:
        diff_model: a model from `tfdiff.wrap`.

    Returns:
        a list: `UpdatePruningStep` when a sparse diff is pruned, else empty.

    Example:

    >>> import tfdiff
    >>> from tfdiff import keras
    >>> base = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, name="out")])
    >>> [type(c).__name__ for c in tfdiff.callbacks(tfdiff.wrap(base, tfdiff.SparseDiff(compression=4.0)))]
    ['UpdatePruningStep']
    """
    if any(isinstance(layer, PruneLowMagnitude) for layer in _all_layers(diff_model)):
        return [tfmot.sparsity.keras.UpdatePruningStep()]
    return []


def extract(diff_model: "keras.Model", generation: int = 0) -> Diff:
    """The learned diff G, as it will travel: quantized, encoded, budgeted.

    The saved file is at most 4 * (diffed weights) / compression bytes,
    signature included. If the pruning schedule has not finished, the
    smallest diff values are cut until the file fits (`Diff.cut_values`).

    Args:
        diff_model: a model from `tfdiff.wrap`, trained.
        generation: the generation the diff produces; devices refuse one
            not above their installed generation.

    Returns:
        a `tfdiff.Diff` with its base and target weights digests set.

    Raises:
        ValueError: no DiffWrapper in `diff_model`, or wrappers of several methods.

    Example:

    >>> import tfdiff
    >>> from tfdiff import keras
    >>> base = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, name="out")])
    >>> diff = tfdiff.extract(tfdiff.wrap(base, tfdiff.HashDiff(compression=4.0)), generation=1)
    >>> diff.generation, diff.nbytes + 68 <= 4 * (64 * 32 + 32) / 4.0
    (1, True)
    """
    wrappers = [(path, w) for path, w in _wrappers(diff_model)]
    if not wrappers:
        raise ValueError("`diff_model` has no DiffWrapper layers; make it with tfdiff.wrap().")
    methods = {repr(w.method) for _, w in wrappers}
    if len(methods) != 1:
        raise ValueError(f"all DiffWrappers must share one method. Found: {sorted(methods)}")
    method = wrappers[0][1].method
    entries = []
    base_weights = named_weights(diff_model)
    for path, wrapper in wrappers:
        masks = _masks(diff_model, wrapper)
        scales = wrapper.int8_scales
        for index, (base, diff) in enumerate(zip(wrapper.base_weights, wrapper.diff_weights)):
            diff_value = diff.numpy()
            if index in masks:
                diff_value = diff_value * masks[index]
            name = weight_name(path, index, base)
            if index in scales:  # the device holds int8: the base is its q, the entry int8 deltas
                base_weights[name] = quantize_with(base.numpy(), scales[index].numpy())
                entries.append(method.quantized_entry(name, base.numpy(), diff_value, scales[index].numpy()))
            else:
                entries.append(method.entry(name, base.numpy(), diff_value))
    diff = Diff(method=method.name, entries=entries, base_digest=b"", target_digest=b"",
                generation=generation, seed=getattr(method, "seed", 0),
                num_hashes=getattr(method, "num_hashes", 0))
    diff.fit_budget(method.compression, {e.name: base_weights[e.name].size for e in entries})
    return seal(diff, base_weights)


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
        base_model: the model the diff was made for (F_t), a tf_keras model.
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
    check_model(base_model, "base_model")
    if isinstance(diff, (str, os.PathLike)):
        diff = Diff.load(diff)
    if not isinstance(diff, DiffFile):
        raise ValueError(f"`diff` must be a tfdiff.Diff or the path of a saved diff. Received: diff={diff!r}")
    model = keras.models.clone_model(base_model)
    model.set_weights(base_model.get_weights())
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
            if isinstance(inner, DiffWrapper)]


def _masks(model, wrapper):
    """{diff index: mask array} from the tfmot wrapper around `wrapper`, if any."""
    for _, outer, inner in layers_with_paths(model):
        if inner is wrapper and isinstance(outer, PruneLowMagnitude):
            by_var = {id(w): m.numpy() for w, m, _ in outer.pruning_vars}
            return {i: by_var[id(d)] for i, d in enumerate(wrapper.diff_weights) if id(d) in by_var}
    return {}
