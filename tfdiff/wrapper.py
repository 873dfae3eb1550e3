"""DiffWrapper: a frozen Keras layer plus one trainable diff per weight."""
import contextlib
import inspect

from tensorflow_model_optimization.python.core.sparsity.keras.prunable_layer import PrunableLayer

from ._keras import keras, tf
from .methods import deserialize_method, serialize_method


@keras.utils.register_keras_serializable(package="tfdiff")
class DiffWrapper(keras.layers.Wrapper, PrunableLayer):
    """Freezes every weight of `layer` and learns a diff for each.

    The forward pass runs the wrapped layer's own `call` with each weight
    attribute (`kernel`, `cell.recurrent_kernel`, `forward_layer.cell.bias`,
    ...) temporarily replaced by the effective weight the method computes
    from the frozen weight and its diff. Any layer whose weights are
    variables held as attributes and read in `call` therefore works: Dense,
    Conv1D/2D, Embedding, LSTM, GRU, Bidirectional and custom layers alike.

    Only the diffs are trainable weights; the wrapped layer's variables are
    non-trainable and no optimizer ever sees them. For `SparseDiff` the
    wrapper is a tfmot `PrunableLayer` whose prunable weights are the diffs.

    Args:
        layer: the `tf_keras` layer to freeze.
        method: a `tfdiff.SparseDiff` or `tfdiff.HashDiff`.
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
        if self.int8_weights and not hasattr(self.method, "quantized_effective"):
            raise ValueError(f"{type(self.method).__name__} cannot learn a diff of int8 weights. "
                             f"Received: method={self.method!r}, int8_weights={self.int8_weights}")
        self.supports_masking = getattr(layer, "supports_masking", False)
        self._slots = []
        self._diffs = []
        self._constants = []
        self._scales = {}

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
            self.layer.built = True
        self.layer.trainable = False
        self._slots = _locate_weights(self.layer)
        self._diffs = [self.method.create_diff(self, variable) for _, _, variable in self._slots]
        self._constants = [self.method.constants(variable, diff)
                           for (_, _, variable), diff in zip(self._slots, self._diffs)]
        if any(not 0 <= i < len(self._slots) for i in self.int8_weights):
            raise ValueError(f"`int8_weights` must index the layer's {len(self._slots)} weights. "
                             f"Received: int8_weights={self.int8_weights}")
        self._scales = {i: self.add_weight(name="int8_scale_" + self._slots[i][2].name.split("/")[-1].split(":")[0],
                                           shape=self._slots[i][2].shape, initializer="ones", trainable=False)
                        for i in self.int8_weights}
        self.built = True

    # -- weights: only the diffs ever train --------------------------------
    @property
    def base_weights(self):
        return [variable for _, _, variable in self._slots]

    @property
    def diff_weights(self):
        return list(self._diffs)

    @property
    def trainable_weights(self):
        return list(self._diffs) if self.trainable else []

    @property
    def int8_scales(self):
        """{weight index: its frozen per-element scale variable} of the int8 weights."""
        return dict(self._scales)

    @property
    def non_trainable_weights(self):
        frozen = self.layer.weights + [self._scales[i] for i in sorted(self._scales)]
        return frozen + ([] if self.trainable else list(self._diffs))

    def get_prunable_weights(self):
        return self.diff_weights if self.method.prunable else []

    # -- forward pass --------------------------------------------------------
    def effective_weights(self):
        return [self.method.quantized_effective(v, d, self._scales[i], c) if i in self._scales
                else self.method.effective(v, d, c)
                for i, ((_, _, v), d, c) in enumerate(zip(self._slots, self._diffs, self._constants))]

    def call(self, inputs, training=None, mask=None, **kwargs):
        if training is not None and _accepts(self.layer, "training"):
            kwargs["training"] = training
        if mask is not None and _accepts(self.layer, "mask"):
            kwargs["mask"] = mask
        with _substituted(self._slots, self.effective_weights()):
            return self.layer.call(inputs, **kwargs)

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
