"""Int8 device models, seen from the server: the weights a quantized .tflite holds, and their scales.

`device.convert(model, path, quantize="int8")` writes TFLite's dynamic-range
quantization: kernels as int8 with per-channel scales, the small weights
(biases, say) kept in float32. The device holds that model, so the server
learns each diff against it:

- `Int8Model.load(path)` reads the weights in Keras layout, as the device
  holds them: int8 values (and their float32 scales) or float32 values;
- `tfdiff.wrap(model, method, int8=...)` freezes the dequantized weights
  (scale * q) and trains the diff through a fake quantization on those
  frozen scales, so the forward pass sees the int8 weights the device will
  compute (`SparseDiff.quantized_effective`);
- `tfdiff.extract` then sends int8 deltas for the int8 weights, and
  `Int8Model.patched(diff)` is the next generation, computed by the code
  the device runs (device/patch.py) and checked against the diff's digest.

The scales of generation 0 stay for good: a diff moves int8 values only.
"""
import os

import numpy as np

from device.digest import weights_digest
from device.patch import INT8_LIMIT, patch_weight
from device.tflite import TFLiteFile

from .diff import DiffMismatchError


class Int8Model:
    """The weights of a quantized .tflite in Keras layout: int8 values with scales, or float32.

    Args:
        values: {weight name: int8 or float32 array}.
        scales: {weight name: float32 array of the weight's shape} for every
            int8 weight: element i of the weight is `scales[i] * values[i]`.

    Example:

    >>> import numpy as np
    >>> model = Int8Model({"w": np.int8([[2, -3]]), "b": np.float32([0.5])},
    ...                   {"w": np.float32([[0.5, 0.25]])})
    >>> model.dequantized()["w"].tolist(), model.int8_names
    ([[1.0, -0.75]], ['w'])
    """

    def __init__(self, values, scales):
        for name, value in values.items():
            if np.asarray(value).dtype == np.int8 and name not in scales:
                raise ValueError(f"int8 weight {name!r} has no scales. Received: scales for {sorted(scales)}")
        self.values, self.scales = dict(values), dict(scales)

    @property
    def int8_names(self):
        return sorted(name for name, value in self.values.items() if value.dtype == np.int8)

    @classmethod
    def load(cls, model: "str | os.PathLike | bytes") -> "Int8Model":
        """The weights and scales of a .tflite converted with `quantize="int8"` (a path or its bytes)."""
        data = model if isinstance(model, (bytes, bytearray)) else open(os.fspath(model), "rb").read()
        tflite = TFLiteFile(data)
        weight_map = tflite.weight_map()
        tensors = _int8_tensors(data)
        values, scales = {}, {}
        for name in weight_map.names():
            values[name] = tflite.weight_values(name).copy()
            if weight_map.dtype(name) != "int8":
                continue
            scale = np.zeros(values[name].size, dtype=np.float32)
            for segment in weight_map.segments(name):
                if segment.buffer not in tensors:
                    raise ValueError(f"weight {name} is int8 in the weight map, but buffer {segment.buffer} "
                                     "is not an int8 tensor's")
                channel_scales, inner = tensors[segment.buffer]
                position = segment.offset + np.arange(segment.count, dtype=np.int64)
                scale[segment.keras_indices()] = channel_scales[(position // inner) % channel_scales.size]
            scales[name] = scale.reshape(values[name].shape)
        return cls(values, scales)

    def dequantized(self):
        """{name: float32}: scale * q for the int8 weights, the float32 weights as they are."""
        return {name: (self.scales[name] * value.astype(np.float32) if value.dtype == np.int8 else value)
                for name, value in self.values.items()}

    def digest(self):
        """The weights digest a diff names as its base: the device's own (device.digest.WeightsHasher)."""
        return weights_digest(self.values)

    def patched(self, diff) -> "Int8Model":
        """The model after `diff`, computed by device.patch, and checked against the diff's digests."""

        if self.digest() != diff.base_digest:
            raise DiffMismatchError(f"diff does not apply to this int8 model: its base weights differ "
                                    f"(model {self.digest().hex()[:12]}, diff expects {diff.base_digest.hex()[:12]})")
        values = dict(self.values)
        for entry in diff.entries:
            values[entry.name] = patch_weight(entry, values[entry.name])
        patched = Int8Model(values, self.scales)
        if patched.digest() != diff.target_digest:
            raise ValueError("diff's target digest does not match what it computes on this int8 model")
        return patched

    def assign_to(self, model):
        """Set the Keras `model`'s weights to the dequantized ones (the float model the device's int8 one is)."""
        from .naming import weight_variables

        dequantized = self.dequantized()
        for name, variable in weight_variables(model):
            variable.assign(dequantized[name])
        return model


def quantize_with(value, scale):
    """rint(value / scale), saturated at +-127, as int8: the device's q of a dequantized weight."""
    return np.clip(np.rint(np.asarray(value, np.float32) / scale), -INT8_LIMIT, INT8_LIMIT).astype(np.int8)


def _int8_tensors(data):
    """{buffer: (per-channel scales, elements per channel step)} of the file's int8 tensors."""
    from tensorflow.lite.python import schema_py_generated as schema

    root = schema.Model.GetRootAs(data, 0)
    found = {}
    for g in range(root.SubgraphsLength()):
        subgraph = root.Subgraphs(g)
        for t in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(t)
            quantization = tensor.Quantization()
            if tensor.Type() != schema.TensorType.INT8 or quantization is None or not quantization.ScaleLength():
                continue
            scales = quantization.ScaleAsNumpy().astype(np.float32)
            shape = tensor.ShapeAsNumpy()
            axis = quantization.QuantizedDimension() if scales.size > 1 else 0
            inner = int(np.prod(shape[axis + 1:], dtype=np.int64)) if scales.size > 1 else 1
            found[tensor.Buffer()] = (scales, inner)
    return found

