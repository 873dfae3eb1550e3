"""DiffWrapper: a frozen Keras layer plus one trainable diff per weight."""
import contextlib
import inspect

from tensorflow_model_optimization.python.core.keras.utils import smart_cond
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_impl import Pruning

from ._keras import keras, tf
from .methods import deserialize_method, serialize_method


@keras.utils.register_keras_serializable(package="tfdiff")
class DiffWrapper(keras.layers.Wrapper):
    """Freezes every weight of `layer` and learns a diff for each.

    The forward pass runs the wrapped layer's own `call` with each weight
    attribute (`kernel`, `cell.recurrent_kernel`, `forward_layer.cell.bias`,
    ...) temporarily replaced by the effective weight the method computes
    from the frozen weight and its diff. Any layer whose weights are
    variables held as attributes and read in `call` therefore works: Dense,
    Conv1D/2D, Embedding, LSTM, GRU, Bidirectional and custom layers alike.

    Only the diffs are trainable weights; the wrapped layer's variables are
    non-trainable and no optimizer ever sees them. A pruned method
    (`SparseDiff`) is pruned by the wrapper itself, wherever it sits (a
    functional, Sequential or subclassed model): it keeps a mask per diff and
    a step counter, and tfmot's magnitude pruning (`pruning_impl.Pruning`,
    the code behind `prune_low_magnitude`) updates the masks on the method's
    schedule at each training step, so no other wrapper is needed.

    Args:
        layer: the layer to freeze: a `tf_keras` layer, or a Keras 3 one, which
            gets Keras 3's wrapper (tfdiff/keras3.py) under the same name.
        method: a `tfdiff.DiffMethod`: `SparseDiff`, `HashDiff`, `LowRankDiff` or `SeedDiff`.
        int8_weights: indices (in `layer.weights`) of the weights an int8
            device model holds as int8; each gets a frozen per-element scale
            and trains through the method's fake quantization
            (`tfdiff.wrap(..., int8=...)` sets both).
        **kwargs: base layer arguments; `name` defaults to the layer's name.

    Example:

    >>> import tfdiff
    >>> from tfdiff import keras
    >>> dense = tfdiff.DiffWrapper(keras.layers.Dense(3), tfdiff.HashDiff(compression=2.0))
    >>> model = keras.Sequential([keras.Input((4,)), dense])
    >>> [w.name.split("/")[-1] for w in model.trainable_weights]
    ['diff_kernel_table:0', 'diff_bias_table:0']
    """

    def __new__(cls, layer=None, *args, **kwargs):
        # One name for both Kerases: a Keras 3 layer gets Keras 3's wrapper (tfdiff/keras3.py).
        from . import keras3
        if cls is DiffWrapper and keras3.is_keras3(layer):
            return keras3.DiffWrapper(layer, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, layer, method, int8_weights=(), **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(f"`layer` must be a tf_keras Layer. Received: layer={layer!r}")
        if isinstance(layer, (DiffWrapper, keras.Model)):
            raise ValueError(f"`layer` must be a plain layer, not {type(layer).__name__}. "
                             "Use tfdiff.wrap() for models.")
        kwargs.setdefault("name", layer.name)
        super().__init__(layer, **kwargs)
        self.method = deserialize_method(method)
        self.int8_weights = tuple(int(i) for i in int8_weights)
        if self.int8_weights and not self.method.supports_int8:
            raise ValueError(f"{type(self.method).__name__} cannot learn a diff of int8 weights. "
                             f"Received: method={self.method!r}, int8_weights={self.int8_weights}")
        self.supports_masking = getattr(layer, "supports_masking", False)
        self._slots = []
        self._diffs = []
        self._constants = []
        self._scales = {}
        self.pruning_vars = []
        self.pruning_step = None
        self._pruning = None

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
            self.layer.built = True
        self.layer.trainable = False
        self._slots = _locate_weights(self.layer)
        # Statistics a layer updates itself (BatchNorm's moving mean and
        # variance) are not trained by gradients, so they get no diff.
        self._diffs = [self.method.create_diff(self, variable) if variable.trainable else None
                       for _, _, variable in self._slots]
        self._constants = [self.method.constants(variable, diff) if diff is not None else None
                           for (_, _, variable), diff in zip(self._slots, self._diffs)]
        if any(not 0 <= i < len(self._slots) for i in self.int8_weights):
            raise ValueError(f"`int8_weights` must index the layer's {len(self._slots)} weights. "
                             f"Received: int8_weights={self.int8_weights}")
        self._scales = {i: self.add_weight(name="int8_scale_" + self._slots[i][2].name.split("/")[-1].split(":")[0],
                                           shape=self._slots[i][2].shape, initializer="ones", trainable=False)
                        for i in self.int8_weights}
        if self.method.prunable:
            self._build_pruning()
        self.built = True

    def _build_pruning(self):
        # The same variables and maths as tfmot's PruneLowMagnitude, kept on
        # this layer so a DiffWrapper prunes wherever it is used.
        masks, thresholds = [], []
        for diff in self.diff_weights:
            short = diff.name.split("/")[-1].split(":")[0]
            masks.append(self.add_weight(name=short + "_mask", shape=diff.shape, initializer="ones",
                                         trainable=False, aggregation=tf.VariableAggregation.MEAN))
            thresholds.append(self.add_weight(name=short + "_threshold", shape=[], initializer="zeros",
                                              trainable=False, aggregation=tf.VariableAggregation.MEAN))
        self.pruning_vars = list(zip(self.diff_weights, masks, thresholds))
        self.pruning_step = self.add_weight(name="pruning_step", shape=[], dtype=tf.int64,
                                            initializer="zeros", trainable=False)
        self.replan(self.method)

    # -- weights: only the diffs ever train --------------------------------
    @property
    def base_weights(self):
        return [variable for _, _, variable in self._slots]

    @property
    def diff_weights(self):
        return [d for d in self._diffs if d is not None]

    @property
    def diffed(self):
        """(index in `base_weights`, base variable, diff variable) of every weight that has a diff."""
        return [(i, v, d) for i, ((_, _, v), d) in enumerate(zip(self._slots, self._diffs)) if d is not None]

    @property
    def trainable_weights(self):
        return self.diff_weights if self.trainable else []

    @property
    def int8_scales(self):
        """{weight index: its frozen per-element scale variable} of the int8 weights."""
        return dict(self._scales)

    @property
    def non_trainable_weights(self):
        frozen = self.layer.weights + [self._scales[i] for i in sorted(self._scales)]
        pruning = [v for _, mask, threshold in self.pruning_vars for v in (mask, threshold)]
        pruning += [self.pruning_step] if self.pruning_step is not None else []
        return frozen + pruning + ([] if self.trainable else self.diff_weights)

    @property
    def masks(self):
        """{weight index: its diff's current 0/1 mask as a numpy array}; empty for an unpruned method."""
        by_diff = {id(d): mask for d, mask, _ in self.pruning_vars}
        return {i: by_diff[id(d)].numpy() for i, _, d in self.diffed if id(d) in by_diff}

    def replan(self, method):
        """Use `method` (the same kind, budget planned by `tfdiff.callbacks`) from now on."""
        method = deserialize_method(method)
        if type(method) is not type(self.method):
            raise ValueError(f"`method` must be a {type(self.method).__name__}. Received: method={method!r}")
        self.method = method
        if self.pruning_step is not None:
            self._pruning = Pruning(training_step_fn=lambda: self.pruning_step, pruning_vars=self.pruning_vars,
                                    pruning_schedule=method.schedule(), block_size=(1, 1), block_pooling_type="AVG")

    def remask(self):
        """Zero the pruned diff values now (the optimizer moves them between mask updates)."""
        if self._pruning is not None:
            self._pruning.weight_mask_op()

    # -- forward pass --------------------------------------------------------
    def effective_weights(self):
        return [v if d is None else self.method.quantized_effective(v, d, self._scales[i], c) if i in self._scales
                else self.method.effective(v, d, c)
                for i, ((_, _, v), d, c) in enumerate(zip(self._slots, self._diffs, self._constants))]

    def call(self, inputs, training=None, mask=None, **kwargs):
        if training is not None and _accepts(self.layer, "training"):
            kwargs["training"] = training
        if mask is not None and _accepts(self.layer, "mask"):
            kwargs["mask"] = mask
        if self._pruning is not None:
            self._prune(keras.backend.learning_phase() if training is None else training)
        with _substituted(self._slots, self.effective_weights()):
            return self.layer.call(inputs, **kwargs)

    def _prune(self, training):
        # As PruneLowMagnitude.call: in training, count the step and update
        # the masks when the schedule says; always compute with masked diffs.
        # A global allocation's masks span every wrapper: `tfdiff.callbacks`
        # sets them (tfdiff/allocation.py), so here the step is only counted.
        def step():
            with tf.control_dependencies([self.pruning_step.assign_add(1)]):
                if getattr(self.method, "allocation", "layer") == "global":
                    return tf.no_op()
                with tf.control_dependencies([self._pruning.conditional_mask_update()]):
                    return tf.no_op()
        self.add_update(smart_cond(training, step, tf.no_op))
        self.add_update(self._pruning.weight_mask_op())

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config["method"] = serialize_method(self.method)
        if self.int8_weights:
            config["int8_weights"] = list(self.int8_weights)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layer = keras.layers.deserialize(config.pop("layer"), custom_objects=custom_objects)
        return cls(layer, **config)


def _accepts(layer, argument):
    return argument in inspect.signature(layer.call).parameters


def _locate_weights(layer):
    """(owner, attribute, variable) for every weight of `layer`, in its order.

    Keras keeps each weight as an attribute of the layer or of a sublayer
    (an RNN's cell, a Bidirectional's forward and backward layers); the
    wrapper swaps those attributes during `call`.
    """
    owners = list(layer._flatten_layers(include_self=True, recursive=True))
    found = {}
    for owner in owners:
        for attribute, value in vars(owner).items():
            if isinstance(value, tf.Variable) and not attribute.startswith("_"):
                found.setdefault(id(value), (owner, attribute))
    slots = []
    for variable in layer.weights:
        if id(variable) not in found:
            raise ValueError(f"DiffWrapper cannot reach weight {variable.name!r} of layer "
                             f"{layer.name!r}: it is not held as a public attribute of the "
                             "layer or its sublayers, so `call` could not use a diffed value.")
        owner, attribute = found[id(variable)]
        slots.append((owner, attribute, variable))
    return slots


@contextlib.contextmanager
def _substituted(slots, tensors):
    # object.__setattr__ bypasses Keras attribute tracking, which would
    # otherwise untrack and re-track the variables and reorder the weights.
    try:
        for (owner, attribute, _), tensor in zip(slots, tensors):
            object.__setattr__(owner, attribute, tensor)
        yield
    finally:
        for owner, attribute, variable in slots:
            object.__setattr__(owner, attribute, variable)
