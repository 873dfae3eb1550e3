"""The paper's BLC baseline, and `strip` to turn any trained wrapper model plain."""
import numpy as np

from ._keras import keras
from .diff import Diff
from .methods import HashDiff, HashedWeights, PrunedWeights, SparseDiff, deserialize_method
from . import keras3
from .naming import DIFF_WRAPPERS, check_model, keras_of, layers_with_paths, pruning_masks, weight_variables_with_layers
from .wrapper import DiffWrapper

from device.naming import weight_name
from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import PruneRegistry
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude


def compress_baseline(model: "keras.Model", method, seed: int = 0) -> "keras.Model":
    """BLC: a fresh model that is trained from scratch under the byte budget.

    The paper's baseline (sec. 4.1): instead of a diff, ship a whole new
    model compressed to the same budget. `model` must be freshly
    initialized (not trained: training it is the point); the returned copy
    trains under the method's compression:

    - SparseDiff: tfmot magnitude pruning of the weights themselves on the
      method's cubic schedule (put the window late in training, as the
      paper does), down to as many kept values as the budget holds; tfmot's
      registry decides which weights are prunable (kernels, not biases),
      the rest travel whole and count in the budget (a Keras 3 model: the
      same, by tfdiff's own pruning, `PrunedWeights`);
    - HashDiff: HashedNets, every weight matrix W[p] = sum_k A[h_k(p)], the
      tables randomly initialized with the spread of `model`'s own
      initialization; vectors (biases) train whole and count in the budget.

    Train it with `callbacks=tfdiff.callbacks(blc)`, then `tfdiff.strip` it.

    Args:
        model: a freshly built Sequential or functional model, tf_keras or Keras 3.
        method: `tfdiff.SparseDiff` or `tfdiff.HashDiff`: the compression,
            budget and schedule (or hashing) to train under.
        seed: seed of the hashed tables' random initialization.

    Returns:
        a trainable tf_keras model with the same inputs and outputs.

    Example:

    >>> import tfdiff
    >>> from tfdiff import keras
    >>> model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64)])
    >>> blc = tfdiff.compress_baseline(model, tfdiff.HashDiff(compression=4.0))
    >>> compressed_nbytes(blc) <= 4 * (64 * 64 + 64) / 4
    True
    """
    check_model(model)
    method = deserialize_method(method)
    package = keras_of(model)
    if keras3.is_keras3(model) and isinstance(method, SparseDiff):
        shapes, dense = {}, {}
        for name, variable, _ in weight_variables_with_layers(model):
            if variable.trainable:
                (shapes if PrunedWeights.prunes(variable) else dense)[name] = tuple(variable.shape)
        wrapped = PrunedWeights(**method.get_config()).planned(shapes, dense)
    elif isinstance(method, SparseDiff):
        shapes, dense = {}, {}
        pruned = {}  # layer id -> ids of the weights tfmot prunes in it, asked once per layer
        for name, variable, layer in weight_variables_with_layers(model):
            if id(layer) not in pruned:
                pruned[id(layer)] = {id(w) for w in _prunable_weights(layer)} if _prunable(layer) else set()
            (shapes if id(variable) in pruned[id(layer)] else dense)[name] = tuple(variable.shape)
        schedule = method.planned(shapes, dense).schedule()

        def clone_layer(layer):
            if isinstance(layer, keras.Model):
                return keras.models.clone_model(layer, clone_function=clone_layer)
            clone = layer.__class__.from_config(layer.get_config())
            if layer.weights and _prunable(layer):
                if not PruneRegistry.supports(clone):  # a Bidirectional RNN: its two layers' kernels
                    clone.get_prunable_weights = lambda: _prunable_weights(clone)
                return PruneLowMagnitude(clone, pruning_schedule=schedule)
            return clone
    elif isinstance(method, HashDiff):
        shapes, dense = {}, {}
        for name, variable, _ in weight_variables_with_layers(model):
            hashed = variable.trainable and not HashedWeights.whole(tuple(variable.shape))
            (shapes if hashed else dense)[name] = tuple(variable.shape)
        wrapped = HashedWeights(**method.get_config()).planned(shapes, dense)
    else:
        raise ValueError(f"`method` must be a SparseDiff or HashDiff. Received: {method!r}")
    if not isinstance(method, SparseDiff) or keras3.is_keras3(model):  # every weighted layer in a DiffWrapper
        def clone_layer(layer):
            if isinstance(layer, package.Model):
                return package.models.clone_model(layer, clone_function=clone_layer)
            clone = layer.__class__.from_config(layer.get_config())
            return DiffWrapper(clone, wrapped) if layer.weights else clone
    compressed = package.models.clone_model(model, clone_function=clone_layer)
    rng = np.random.default_rng(seed)
    for (_, _, source), (_, _, target) in zip(layers_with_paths(model), layers_with_paths(compressed)):
        if isinstance(target, DIFF_WRAPPERS):
            target.layer.set_weights(source.get_weights())
            for _, base, table in target.diffed:
                table.assign(target.method.initial_value(base.numpy(), rng))
        else:
            target.set_weights(source.get_weights())
    return compressed


def _prunable_weights(layer):
    """The weights tfmot prunes in `layer` (its registry's choice, kernels not biases).

    tfmot's registry has no Bidirectional: its forward and backward layers'
    choices are its own.
    """
    if isinstance(layer, keras.layers.Bidirectional):
        return _prunable_weights(layer.forward_layer) + _prunable_weights(layer.backward_layer)
    # make_prunable only attaches a get_prunable_weights method to the (fresh) layer.
    return PruneRegistry.make_prunable(layer).get_prunable_weights()


def strip(model: "keras.Model") -> "keras.Model":
    """A plain Keras model holding the effective weights of a wrapped model.

    Like tfmot's `strip_pruning`: DiffWrappers become their inner layer
    carrying base (+) diff as trained (not wire-quantized: use `tfdiff.fold`
    for what a device will hold), tfmot pruning wrappers become their layer
    with the masks applied, and every layer is as trainable as its wrapper
    was (a DiffWrapper freezes its inner layer; the stripped layer is not).

    Args:
        model: a model from `tfdiff.wrap` or `tfdiff.compress_baseline`.

    Returns:
        a new model (of `model`'s Keras) with no tfdiff or tfmot wrappers.

    Example:

    >>> import tfdiff
    >>> from tfdiff import keras
    >>> base = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, name="out")])
    >>> plain = tfdiff.strip(tfdiff.wrap(base, tfdiff.HashDiff(compression=4.0)))
    >>> [w.name for w in plain.trainable_weights]
    ['out/kernel:0', 'out/bias:0']
    """
    package = keras_of(model)

    def clone_layer(layer):
        if isinstance(layer, package.Model):
            return package.models.clone_model(layer, clone_function=clone_layer)
        inner = layer.layer if isinstance(layer, PruneLowMagnitude) else layer
        trainable = layer.trainable and inner.trainable  # a DiffWrapper's, not its frozen layer's
        inner = inner.layer if isinstance(inner, DIFF_WRAPPERS) else inner
        config = inner.get_config()
        config["trainable"] = trainable
        return inner.__class__.from_config(config)

    plain = package.models.clone_model(model, clone_function=clone_layer)
    for (_, outer, inner), (_, target, _) in zip(layers_with_paths(model), layers_with_paths(plain)):
        target.set_weights(_effective_values(outer, inner))
    return plain


def _effective_values(outer, inner):
    masks = pruning_masks(outer, inner) if outer is not inner else pruning_masks(inner)
    if isinstance(inner, DIFF_WRAPPERS):
        diffs = [d.numpy() * masks.get(id(d), 1.0) for d in inner.diff_weights]
        saved = [d.numpy() for d in inner.diff_weights]
        for d, value in zip(inner.diff_weights, diffs):
            d.assign(value)
        values = [np.asarray(w) for w in inner.effective_weights()]
        for d, value in zip(inner.diff_weights, saved):
            d.assign(value)
        return values
    return [w.numpy() * masks.get(id(w), 1.0) for w in inner.weights]


def _prunable(layer):
    if isinstance(layer, keras.layers.Bidirectional):
        return PruneRegistry.supports(layer.forward_layer) and PruneRegistry.supports(layer.backward_layer)
    return PruneRegistry.supports(layer)


def compressed_nbytes(model: "keras.Model", value_dtype: str = "float16") -> int:
    """Bytes a compressed (BLC) model takes as a tfdiff file, entropy coding included.

    Pruned weights travel as sparse entries (nonzeros + LEB128 gaps), hashed
    weights as their tables, everything else as dense float16/32 values, in
    one file coded as a diff is (device/format.py), so the comparison with a
    diff's `nbytes` is like for like.
    """
    from device.format import Entry

    entries = []
    for path, outer, inner in layers_with_paths(model):
        masks = pruning_masks(outer)
        hashed = {}
        if isinstance(inner, DIFF_WRAPPERS) and isinstance(inner.method, HashedWeights):
            hashed = {i: table for i, _, table in inner.diffed}
        weights = inner.base_weights if isinstance(inner, DIFF_WRAPPERS) else inner.weights
        if isinstance(inner, DIFF_WRAPPERS) and isinstance(inner.method, PrunedWeights):
            weights = [d for _, _, d in inner.diffed]  # Keras 3's sparse BLC: its weights are these copies
        for i, weight in enumerate(weights):
            name = weight_name(path, i, weight)
            if i in hashed and not HashedWeights.whole(tuple(weight.shape)):
                entries.append(Entry(name, tuple(weight.shape), "hash", hashed[i].numpy().astype(value_dtype),
                                     seed=inner.method.seed, num_hashes=inner.method.num_hashes))
                continue
            if i in hashed:  # a vector the hashed BLC trains whole: its values travel dense
                weight = hashed[i]
            values = (weight.numpy() * masks.get(id(weight), 1.0)).reshape(-1).astype(value_dtype)
            kept = np.flatnonzero(values)
            entries.append(Entry(name, tuple(weight.shape), "sparse", values[kept], kept))
    method = "hash" if any(e.method == "hash" for e in entries) else "sparse"
    return Diff(method, entries, b"", b"").nbytes
