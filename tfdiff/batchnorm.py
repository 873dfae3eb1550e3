"""fold_batchnorm: BatchNormalization folded into the layer before it, for conversion.

The TFLite converter folds an inference-mode BatchNormalization into the
preceding convolution or matmul by computing new weights, so the Keras
weights are no longer stored as they are and the device cannot patch them
(`device.convert` refuses, naming them). Folding first, in Keras, gives an
equivalent model whose weights the converter stores as-is: generation 0 is
that folded model, and every later diff is learned on it.
"""
import numpy as np

from device.converter import foldable_batchnorms

from . import keras3
from ._keras import keras
from .naming import check_model, keras_of, layers_with_paths


def fold_batchnorm(model: "keras.Model") -> "keras.Model":
    """An equivalent model with each BatchNormalization folded into the layer before it.

    A BatchNormalization is folded when it normalizes the last axis of the
    output of a Conv1D/2D/3D or Dense layer with a linear activation, whose
    output feeds nothing else. In inference mode,

        y = gamma * (x @ W + b - mean) / sqrt(var + eps) + beta
          = x @ (W * s) + ((b - mean) * s + beta),   s = gamma / sqrt(var + eps)

    so the layer takes kernel W * s and bias (b - mean) * s + beta (gaining a
    bias if it had none), and the normalization becomes a linear Activation
    (an identity) of the same name. Other BatchNormalizations are left alone.

    Args:
        model: a Sequential or functional model, tf_keras or Keras 3.

    Returns:
        a new model, equal to `model` in inference mode up to float32 rounding.

    Raises:
        ValueError: `model` is not a Sequential or functional model.

    Example:

    >>> import numpy as np, tfdiff
    >>> from tfdiff import keras
    >>> model = keras.Sequential([keras.Input((8, 3)), keras.layers.Conv1D(4, 3, name="conv"),
    ...                           keras.layers.BatchNormalization(name="bn")])
    >>> folded = tfdiff.fold_batchnorm(model)
    >>> sorted(tfdiff.named_weights(folded))
    ['conv/0/kernel', 'conv/1/bias']
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 3)).astype("float32")
    >>> bool(np.allclose(model(x), folded(x), atol=1e-5))
    True
    """
    check_model(model)
    keras = keras_of(model)
    pairs = foldable_batchnorms(model)
    if not pairs:
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        return clone
    folded_into = {id(layer): bn for bn, layer in pairs}
    folded_bns = {id(bn) for bn, _ in pairs}

    identities = set()

    def clone_layer(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, **cloning)
        config = layer.get_config()
        if id(layer) in folded_bns:
            identity = keras.layers.Activation("linear", name=layer.name)
            identities.add(id(identity))
            return identity
        if id(layer) in folded_into:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    def call_layer(layer, *args, **kwargs):
        # Keras 3 calls a clone with its original's arguments; BatchNormalization's `mask` and
        # `training` mean nothing to the identity that replaces it.
        if id(layer) in identities:
            kwargs = {k: v for k, v in kwargs.items() if k not in ("mask", "training")}
        return layer(*args, **kwargs)

    cloning = {"clone_function": clone_layer}
    if keras3.is_keras3(model) and not isinstance(model, keras.Sequential):
        cloning["call_function"] = call_layer
    folded = keras.models.clone_model(model, **cloning)
    sources, targets = ([layer for _, layer, _ in layers_with_paths(m)] for m in (model, folded))
    for source, target in zip(sources, targets):
        if id(source) in folded_bns:
            continue
        if id(source) in folded_into:
            target.set_weights(_folded_weights(source, folded_into[id(source)]))
        else:
            target.set_weights(source.get_weights())
    return folded


def _folded_weights(layer, bn):
    kernel = layer.kernel.numpy().astype(np.float64)
    bias = layer.bias.numpy().astype(np.float64) if layer.use_bias else np.zeros(kernel.shape[-1])
    channels = kernel.shape[-1]
    gamma = bn.gamma.numpy().astype(np.float64) if bn.scale else np.ones(channels)
    beta = bn.beta.numpy().astype(np.float64) if bn.center else np.zeros(channels)
    mean = bn.moving_mean.numpy().astype(np.float64)
    variance = bn.moving_variance.numpy().astype(np.float64)
    scale = gamma / np.sqrt(variance + bn.epsilon)
    return [(kernel * scale).astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)]

