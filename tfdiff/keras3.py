"""Keras 3 models: the same diffs on `import keras` models, on any backend (TensorFlow, JAX).

tfmot speaks only Keras 2, so this path uses none of it. Its DiffWrapper
computes each effective weight with `keras.ops` (the methods' formulas take
the array namespace, tfdiff/methods.py) and runs the wrapped layer's own
`call` inside a `keras.StatelessScope` that maps each frozen variable to its
effective value: Keras 3 reads variables through that scope on every
backend, so no attribute is swapped. The sparse diff's magnitude pruning is
tfdiff's own code (tfdiff/pruning.py, tfmot's rule in numpy), applied by
`DiffPruning` on the host at the schedule's mask updates.

What a tf_keras model gets and a Keras 3 one does not yet: int8 device
models, `budget="coded"` sparse diffs and the global allocation; each is
refused with one line. Keras 3's sparse BLC is this wrapper holding a
`PrunedWeights` (tfdiff/methods.py), where tf_keras's is tfmot's.
"""
import inspect

import keras

from .methods import deserialize_method, serialize_method
from .pruning import magnitude_mask, scheduled_sparsity


def is_keras3(obj):
    """Whether `obj` (a layer or model) is a Keras 3 object, not a tf_keras one."""
    return isinstance(obj, keras.layers.Layer)


@keras.saving.register_keras_serializable(package="tfdiff")
class DiffWrapper(keras.layers.Wrapper):
    """Freezes every weight of a Keras 3 `layer` and learns a diff for each (`tfdiff.DiffWrapper` makes one).

    Args:
        layer: the Keras 3 layer to freeze.
        method: a `tfdiff.DiffMethod`.
        **kwargs: base layer arguments; `name` defaults to the layer's name.

    Example:

    >>> import keras, tfdiff
    >>> dense = tfdiff.DiffWrapper(keras.layers.Dense(3), tfdiff.HashDiff(compression=2.0))
    >>> model = keras.Sequential([keras.Input((4,)), dense])
    >>> [w.name for w in model.trainable_weights]
    ['diff_kernel_table', 'diff_bias_table']
    """

    def __init__(self, layer, method, int8_weights=(), diffed=None, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(f"`layer` must be a Keras 3 Layer. Received: layer={layer!r}")
        if isinstance(layer, (DiffWrapper, keras.Model)):
            raise ValueError(f"`layer` must be a plain layer, not {type(layer).__name__}. "
                             "Use tfdiff.wrap() for models.")
        if int8_weights:
            raise ValueError("int8 device models take tf_keras models; a Keras 3 model's diff is of float "
                             f"weights. Received: int8_weights={tuple(int8_weights)}")
        kwargs.setdefault("name", layer.name)
        super().__init__(layer, **kwargs)
        self.method = deserialize_method(method)
        if self.method.prunable and (self.method.budget == "coded" or self.method.allocation == "global"):
            raise ValueError("a Keras 3 model's sparse diff takes budget='wire' or 'nominal' and "
                             "allocation='layer' (the coded budget and the global allocation are tf_keras's "
                             f"for now). Received: method={self.method!r}")
        self.supports_masking = getattr(layer, "supports_masking", False)
        self.int8_weights = ()
        # Which weights get a diff, fixed once (a reloaded layer is frozen, its flags all False).
        self._diffed_indices = None if diffed is None else [int(i) for i in diffed]
        self._untracked(_bases=[], _diffs=[], _constants=[], _masks=[])
        self.pruning_step = None

    def _untracked(self, **lists):
        # Keras 3 tracks variables found in a layer's list attributes as the layer's own, which would
        # make the wrapped layer's variables the wrapper's; these lists only point at them.
        for name, value in lists.items():
            object.__setattr__(self, name, value)

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        bases = list(self.layer.weights)
        # Trainability is read before freezing (Keras 3's `trainable = False` clears every
        # variable's flag): statistics a layer updates itself (BatchNorm's moving mean) get no diff.
        if self._diffed_indices is None:
            self._diffed_indices = [i for i, variable in enumerate(bases) if variable.trainable]
        self.layer.trainable = False
        diffs = [self.method.create_diff(self, v) if i in self._diffed_indices else None
                 for i, v in enumerate(bases)]
        self._untracked(_bases=bases, _diffs=diffs,
                        _constants=[None if d is None else self.method.constants(v, d, keras.ops)
                                    for v, d in zip(bases, diffs)])
        if self.method.prunable:
            self._untracked(_masks=[None if d is None or not self.method.masked(v) else self.add_weight(
                name=d.name + "_mask", shape=d.shape, initializer="ones", trainable=False)
                for v, d in zip(bases, diffs)])
            self.pruning_step = self.add_weight(name="pruning_step", shape=(), dtype="int64",
                                                initializer="zeros", trainable=False)
        self.built = True

    @property
    def trainable(self):
        return getattr(self, "_trainable", True)

    @trainable.setter
    def trainable(self, value):
        # Only the diffs ever train: Keras 3's setter would unfreeze the wrapped layer too.
        self._trainable = bool(value)
        for diff in getattr(self, "_diffs", ()):
            if diff is not None:
                diff.trainable = self._trainable

    # -- weights, as tfdiff.DiffWrapper names them --------------------------
    @property
    def base_weights(self):
        return list(self._bases)

    @property
    def diff_weights(self):
        return [d for d in self._diffs if d is not None]

    @property
    def diffed(self):
        """(index in `base_weights`, base variable, diff variable) of every weight that has a diff."""
        return [(i, v, d) for i, (v, d) in enumerate(zip(self._bases, self._diffs)) if d is not None]

    @property
    def int8_scales(self):
        return {}

    @property
    def masks(self):
        """{weight index: its diff's current 0/1 mask as a numpy array}; empty for an unpruned method."""
        return {i: keras.ops.convert_to_numpy(m) for i, m in enumerate(self._masks) if m is not None}

    @property
    def pruning_vars(self):
        """(diff, mask, None) of every pruned diff: tf_keras's DiffWrapper's triples, with no tfmot threshold."""
        return [(d, m, None) for d, m in zip(self._diffs, self._masks) if m is not None]

    def replan(self, method):
        """Use `method` (the same kind, budget planned by `tfdiff.callbacks`) from now on."""
        method = deserialize_method(method)
        if type(method) is not type(self.method):
            raise ValueError(f"`method` must be a {type(self.method).__name__}. Received: method={method!r}")
        self.method = method

    # -- forward pass --------------------------------------------------------
    def effective_weights(self):
        values = []
        for i, (base, diff, constants) in enumerate(zip(self._bases, self._diffs, self._constants)):
            if diff is None:
                values.append(keras.ops.convert_to_tensor(base))
                continue
            delta = diff * self._masks[i] if self._masks and self._masks[i] is not None else diff
            values.append(self.method.effective(keras.ops.convert_to_tensor(base), keras.ops.convert_to_tensor(delta),
                                                constants, ops=keras.ops))
        return values

    def call(self, inputs, training=None, mask=None, **kwargs):
        accepted = inspect.signature(self.layer.call).parameters
        if training is not None and "training" in accepted:
            kwargs["training"] = training
        if mask is not None and "mask" in accepted:
            kwargs["mask"] = mask
        # Every variable of the layer is mapped, the frozen ones to their current values, so
        # the layer reads what the enclosing scope holds (JAX's trainer runs in one).
        mapping = list(zip(self._bases, self.effective_weights()))
        with keras.StatelessScope(state_mapping=mapping, initialize_variables=False) as scope:
            outputs = self.layer.call(inputs, **kwargs)
        # Statistics the layer updated in the scope (BatchNorm's moving mean) are kept.
        for base, diff in zip(self._bases, self._diffs):
            updated = scope.get_current_value(base)
            if diff is None and updated is not None:
                base.assign(updated)
        return outputs

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask) if hasattr(self.layer, "compute_mask") else mask

    def get_config(self):
        config = super().get_config()
        config["method"] = serialize_method(self.method)
        config["diffed"] = list(self._diffed_indices) if self._diffed_indices is not None else None
        return config  # Keras 3's Wrapper.from_config deserializes the layer and calls the constructor


def copy_model(model):
    """A new Keras 3 model of the same architecture holding the same weights."""
    if not is_functional(model):
        raise ValueError("a Keras 3 model to fold must be Sequential or functional. "
                         f"Received: base_model={model!r}")
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def is_functional(model):
    return isinstance(model, keras.Sequential) or type(model).__name__ == "Functional"


class DiffPruning(keras.callbacks.Callback):
    """Prunes the sparse diffs of a Keras 3 model on their cubic schedule, as tfmot does a tf_keras one.

    Each training step counts one on every wrapper's `pruning_step`; at the
    schedule's mask updates each diff keeps its largest values
    (`tfdiff.pruning.magnitude_mask`, tfmot's rule) and the pruned ones are
    set to zero. Between updates the forward pass multiplies each diff by
    its mask, so pruned values never reach the output.
    """

    def __init__(self, wrappers, plan):
        super().__init__()
        self.wrappers, self.plan = wrappers, plan

    def on_train_begin(self, logs=None):
        self.plan()
        self.step = int(keras.ops.convert_to_numpy(self.wrappers[0].pruning_step))

    def on_train_batch_begin(self, batch, logs=None):
        self.step += 1
        update, sparsity = scheduled_sparsity(self.wrappers[0].method, self.step)
        if update:
            # JAX's trainer holds the variables' values itself until they are synced.
            getattr(self.model, "jax_state_sync", lambda: None)()
            for wrapper in self.wrappers:
                for diff, mask, _ in wrapper.pruning_vars:
                    value = keras.ops.convert_to_numpy(diff) * keras.ops.convert_to_numpy(mask)
                    kept = magnitude_mask(value, sparsity)
                    mask.assign(kept)
                    diff.assign(value * kept)
            self._save_step()

    def on_epoch_end(self, epoch, logs=None):
        self._save_step()

    def on_train_end(self, logs=None):
        self._save_step()

    def _save_step(self):
        getattr(self.model, "jax_state_sync", lambda: None)()
        for wrapper in self.wrappers:
            wrapper.pruning_step.assign(self.step)
