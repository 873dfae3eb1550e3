"""tfdiff's side of the weight-naming contract (device/naming.py), and the checks on the models it takes.

The contract itself (`<layer path>/<index>/<short name>`, wrappers
transparent) lives in device/naming.py, where the converter reads it too;
`weight_variables` is tfdiff's one way to walk a model by it.
"""
from device.converter import input_specs
from device.naming import leaf_layers, named_variables

from . import keras3
from ._keras import keras, tf
from .wrapper import DiffWrapper

DIFF_WRAPPERS = (DiffWrapper, keras3.DiffWrapper)  # tf_keras's and Keras 3's


def weight_variables(model: "keras.Model") -> "list[tuple[str, tf.Variable]]":
    """(name, variable) of every base weight of `model`, in model order, wrappers unwrapped.

    Example:

    >>> import tfdiff
    >>> from tfdiff import keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="out")])
    >>> [name for name, _ in tfdiff.weight_variables(model)]
    ['out/0/kernel', 'out/1/bias']
    """
    return [(name, variable) for name, variable, _ in named_variables(model)]


def weight_variables_with_layers(model):
    """(name, variable, layer) of every base weight; a shared layer's weights once."""
    return named_variables(model)


def layers_with_paths(model, prefix=""):
    """(path, layer as found, layer inside any tfmot wrapper) of every leaf layer."""
    return leaf_layers(model, prefix)


def pruning_masks(*layers):
    """{id(weight): its 0/1 mask as numpy} of the weights `layers` prune (tfmot's wrapper or a DiffWrapper)."""
    return {id(w): m.numpy() for layer in layers for w, m, _ in getattr(layer, "pruning_vars", ())}


def all_diff_wrappers(model):
    """Every DiffWrapper anywhere in `model`: any nesting, subclassed models and custom layers included."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, DIFF_WRAPPERS)]


def check_keras_model(model, argument="model"):
    """A one-line ValueError unless `model` is a Keras model, tf_keras or Keras 3, of any kind."""
    if not isinstance(model, (keras.Model, keras3.keras.Model)):
        raise ValueError(f"`{argument}` must be a Keras model (tf_keras or Keras 3). Received: {argument}={model!r}")


def check_model(model, argument="model"):
    """A one-line ValueError unless `model` is a Sequential or functional model (tf_keras or Keras 3)."""
    check_keras_model(model, argument)
    if is_subclassed(model):
        raise ValueError(f"`{argument}` must be a Sequential or functional model; wrap the layers of a "
                         f"subclassed model with DiffWrapper. Received: {argument}={model!r}")


def keras_of(model):
    """The Keras package `model` belongs to: tf_keras, or Keras 3."""
    return keras3.keras if keras3.is_keras3(model) else keras


def is_subclassed(model):
    if keras3.is_keras3(model):
        return not keras3.is_functional(model)
    return not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False))


def copy_model(model):
    """A new model of the same architecture holding the same weights (a subclassed one rebuilt from its config)."""
    if keras3.is_keras3(model):
        return keras3.copy_model(model)
    if not is_subclassed(model):
        copy = keras.models.clone_model(model)
    else:
        try:
            copy = type(model).from_config(model.get_config())
        except (NotImplementedError, TypeError) as e:
            raise ValueError(f"subclassed model {type(model).__name__} cannot be rebuilt from its config "
                             f"({str(e).splitlines()[0]}): give it get_config() returning its constructor's "
                             "arguments (and from_config if they need deserializing)") from None
        specs = input_specs(model)  # device.converter's: the converter and fold see one set of inputs
        dummy = [tf.zeros([1] + list(s.shape[1:]), s.dtype) for s in specs]
        copy(dummy if len(dummy) > 1 else dummy[0])
    copy.set_weights(model.get_weights())
    return copy
