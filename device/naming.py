"""The weight-naming contract: how a Keras weight is named in the model, the diff file and the .tflite.

A weight is named by where it sits, not by its TensorFlow variable name:
`<layer path>/<index in the layer's weights>/<short name>`, for example
`encoder/lstm_1/0/kernel`. Nested models add their name to the path, and
training wrappers are transparent: tfmot's pruning wrapper is seen through,
and a layer carrying a diff (tfdiff's DiffWrapper) names its base weights,
`base_weights`. So the base model, the diff model, the folded model, the
BLC model and the .tflite weight map all use the same names.

The contract is written here once, over Keras objects as they behave (this
module imports neither TensorFlow nor Keras), so that the converter and
tfdiff, which both name weights, share it without importing each other.

Example (any objects shaped like Keras layers):

>>> class Variable:
...     def __init__(self, name): self.name = name
>>> class Dense:
...     name, weights = "out", [Variable("out/kernel:0"), Variable("out/bias:0")]
>>> class Model:
...     layers = [Dense()]
>>> [name for name, _, _ in named_variables(Model())]
['out/0/kernel', 'out/1/bias']
"""
_KERAS_PACKAGES = ("keras", "tf_keras")


def weight_name(layer_path, index, variable):
    """`<layer path>/<index>/<short name>`: the short name is the variable's last path part, without ":0"."""
    short = variable.name.split("/")[-1].split(":")[0]
    return f"{layer_path}/{index}/{short}"


def is_model(layer):
    """Whether a layer is a Keras model (Sequential, functional or subclassed), whose layers nest under its name."""
    return any(cls.__name__ == "Model" and cls.__module__.split(".")[0] in _KERAS_PACKAGES
               for cls in type(layer).__mro__)


def unwrap(layer):
    """The layer inside tfmot's pruning wrapper, which naming sees through; any other layer itself."""
    if type(layer).__name__ == "PruneLowMagnitude" and type(layer).__module__.startswith(
            "tensorflow_model_optimization"):
        return layer.layer
    return layer


def weights_of(layer):
    """The weights a leaf layer contributes: a layer carrying a diff names its base weights."""
    base = getattr(layer, "base_weights", None)
    return layer.weights if base is None else base


def leaf_layers(model, prefix=""):
    """(path, layer as found, layer inside any pruning wrapper) of every leaf layer, in order."""
    for layer in model.layers:
        inner = unwrap(layer)
        path = prefix + inner.name
        if is_model(inner):
            yield from leaf_layers(inner, path + "/")
        else:
            yield path, layer, inner


def named_variables(model):
    """(name, variable, leaf layer) of every weight of `model`, in model order; a shared layer's weights once."""
    found, seen = [], set()
    for path, _, inner in leaf_layers(model):
        if id(inner) in seen:
            continue
        seen.add(id(inner))
        found += [(weight_name(path, i, v), v, inner) for i, v in enumerate(weights_of(inner))]
    return found
