"""The server's view of a device's model: float32 or int8, one interface.

A float32 device holds the Keras weights as they are, so the model after a
diff is `fold`. An int8 device holds int8 values with frozen scales, so the
model after a diff is device.patch's integer arithmetic (`Int8Model.patched`),
and the Keras model it equals is the dequantized one. Callers that train,
ship and check diffs (the flywheel, benchmarks) ask this object and never
branch on the device's number format.
"""
import os

import numpy as np

from device.tflite import TFLiteFile

from ._keras import keras
from .model import fold, named_weights
from .quantized import Int8Model


class DeviceModel:
    """What a device holds, as the server computes it.

    Args:
        model: the Keras model the device's weights equal (for an int8
            device: the architecture; its weights are set from `int8`).
        int8: None for a float32 device, or the device's `Int8Model`.

    Example:

    >>> from tfdiff import keras, SparseDiff, wrap, extract
    >>> inputs = keras.Input((64,))
    >>> base = keras.Model(inputs, keras.layers.Dense(32, name="d")(inputs))
    >>> diff_model = wrap(base, SparseDiff(compression=4.0, begin_step=0, end_step=1))
    >>> after = DeviceModel(base).patched(extract(diff_model, generation=1))
    >>> after.int8 is None, sorted(named_weights(after.model))
    (True, ['d/0/kernel', 'd/1/bias'])
    """

    def __init__(self, model, int8: "Int8Model | None" = None):
        if int8 is not None and not isinstance(int8, Int8Model):
            raise TypeError(f"`int8` must be None or an Int8Model. Received: {type(int8).__name__}")
        self.model, self.int8 = model, int8

    @classmethod
    def load(cls, model, tflite_path: "str | os.PathLike", quantized: bool) -> "DeviceModel":
        """The view of the device whose .tflite is `tflite_path` and whose Keras model is `model`."""
        return cls(model, Int8Model.load(tflite_path) if quantized else None)

    def patched(self, diff) -> "DeviceModel":
        """The device's model after `diff`, checked against the diff's digests where the device checks them."""
        if self.int8 is None:
            return DeviceModel(fold(self.model, diff))
        int8 = self.int8.patched(diff)
        return DeviceModel(int8.assign_to(keras.models.clone_model(self.model)), int8)

    def matches(self, tflite_path: "str | os.PathLike") -> bool:
        """True if every weight in the .tflite at `tflite_path` is bit for bit this model's, in device units."""
        tflite = TFLiteFile(open(os.fspath(tflite_path), "rb").read())
        weight_map = tflite.weight_map()
        values = named_weights(self.model) if self.int8 is None else self.int8.values
        if sorted(values) != weight_map.names():
            return False
        for name, value in values.items():
            held = tflite.weight_values(name)
            expected = np.asarray(value, dtype="<f4") if self.int8 is None else value
            if held.dtype != expected.dtype or held.tobytes() != expected.tobytes():
                return False
        return True
