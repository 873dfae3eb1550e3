"""Server side: convert a Keras model to a .tflite the device applier can patch.

The converter moves weights around (Dense kernels transposed, an LSTM's
kernel split into gate matrices, names lost) and may merge constants that
happen to be equal. So the weight map is found by construction, not by
searching for the real weights' bytes:

1. every element of every Keras weight is set to its own probe value, a
   distinct float32 bit pattern far from any graph constant;
2. that probe model is converted, and each probe value is looked up in the
   buffers: its buffer and position is where the element lives;
3. the real values are written into the probe model's buffers through the
   map, and the map is stored in the model's metadata.

Because the probe values are all distinct, the converter cannot merge two
weights into one buffer, even when their real values are equal. A weight
the converter computed with (folded into another) is not found and is
reported by name.
"""
import os

import numpy as np

from .format import write_atomic
from .tflite import TFLiteFile
from .weightmap import WEIGHT_MAP_NAME, Segment, WeightMap

# Probe bit patterns start at 2**51 as floats: no graph constant is there.
PROBE_BASE = 0x5A000000
PROBE_LIMIT = 0x7F000000 - PROBE_BASE


class ConversionError(ValueError):
    """A model whose weights cannot be mapped into its .tflite one to one."""


def convert(model, path: "str | os.PathLike | None" = None, signatures: "dict | None" = None) -> bytes:
    """Convert `model` to float32 .tflite bytes carrying a tfdiff weight map.

    Args:
        model: a tf_keras model (plain, or folded by tfdiff).
        path: if given, the .tflite is written there atomically.
        signatures: optional {name: tf.function with an input signature}
            to export instead of the model's own call; their variables must
            be the model's.

    Returns:
        the .tflite file's bytes.

    Example:

    >>> import device.converter
    >>> from tfdiff import keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="out")])
    >>> data = device.converter.convert(model)
    >>> sorted(TFLiteFile(data).weight_map().names())
    ['out/0/kernel', 'out/1/bias']
    """
    import tfdiff  # the server's bridge: tfdiff's public API only

    slots = tfdiff.weight_variables(model)
    _check_weights(slots)
    originals = [variable.numpy() for _, variable in slots]
    total = sum(v.size for v in originals)
    if total > PROBE_LIMIT:
        raise ConversionError(f"model has {total} weights; the probe supports {PROBE_LIMIT}")
    try:
        first = 0
        for (_, variable), value in zip(slots, originals):
            ids = np.arange(first, first + value.size, dtype=np.uint32) + np.uint32(PROBE_BASE)
            variable.assign(ids.view(np.float32).reshape(value.shape))
            first += value.size
        probe = bytearray(_convert(model, signatures))
    finally:
        for (_, variable), value in zip(slots, originals):
            variable.assign(value)

    weight_map = _locate(TFLiteFile(probe), [(name, v.shape) for (name, _), v in zip(slots, originals)])
    model_file = TFLiteFile(probe)
    for (name, _), value in zip(slots, originals):
        flat = value.reshape(-1).astype("<f4")
        for segment in weight_map.segments(name):
            start, _ = model_file.buffer_ranges[segment.buffer]
            target = np.frombuffer(probe, dtype="<f4", count=segment.count,
                                   offset=start + 4 * segment.offset)
            target[:] = flat[segment.keras_indices()]
    data = _with_metadata(bytes(probe), WEIGHT_MAP_NAME, weight_map.to_bytes())
    if path is not None:
        write_atomic(os.fspath(path), data)
    return data


def convert_file(model_path, out):
    """Load a saved Keras model (.keras, .h5 or SavedModel) and convert it to `out`."""
    from tfdiff import keras

    if not os.path.exists(model_path):
        raise ConversionError(f"model {model_path} does not exist")
    try:
        model = keras.models.load_model(model_path, compile=False)
    except (ValueError, OSError, TypeError) as e:
        raise ConversionError(f"cannot load Keras model {model_path}: {str(e).splitlines()[0]}") from None
    return convert(model, out)


def _check_weights(slots):
    for name, variable in slots:
        if variable.dtype.name != "float32":
            raise ConversionError(f"weight {name} is {variable.dtype.name}; only float32 weights "
                                  "can be mapped and patched")


def _convert(model, signatures):
    import tensorflow as tf

    if signatures is None:
        specs = [tf.TensorSpec([1] + list(t.shape[1:]), t.dtype, name=t.name.split(":")[0])
                 for t in model.inputs]
        # A static batch of 1 lets the converter fuse LSTMs into one op.
        call = tf.function(lambda *xs: model(list(xs) if len(xs) > 1 else xs[0], training=False))
        functions = [call.get_concrete_function(*specs)]
    else:
        functions = [fn.get_concrete_function() for fn in signatures.values()]
    converter = tf.lite.TFLiteConverter.from_concrete_functions(functions, model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.optimizations = []
    return converter.convert()


def _locate(model_file, weights):
    """The WeightMap of a converted probe model."""
    total = sum(int(np.prod(shape)) for _, shape in weights)
    where_buffer = np.full(total, -1, dtype=np.int64)
    where_pos = np.full(total, -1, dtype=np.int64)
    seen = np.zeros(total, dtype=np.int64)
    for index, (start, length) in enumerate(model_file.buffer_ranges):
        if length == 0 or length % 4:
            continue
        words = np.frombuffer(model_file.data, dtype="<u4", count=length // 4, offset=start)
        positions = np.flatnonzero((words >= PROBE_BASE) & (words < PROBE_BASE + total))
        ids = words[positions].astype(np.int64) - PROBE_BASE
        seen += np.bincount(ids, minlength=total)
        where_buffer[ids], where_pos[ids] = index, positions

    located, missing, first = {}, [], 0
    for name, shape in weights:
        size = int(np.prod(shape))
        counts = seen[first:first + size]
        if np.any(counts == 0):
            missing.append(name)
        elif np.any(counts > 1):
            raise ConversionError(f"weight {name} is stored more than once in the .tflite")
        else:
            buffers, positions = where_buffer[first:first + size], where_pos[first:first + size]
            located[name] = (tuple(shape), _segments(buffers, positions))
        first += size
    if missing:
        raise ConversionError(f"weights not stored as-is in the .tflite (the converter folded or "
                              f"computed with them), so no diff could be patched in: {', '.join(missing)}. A "
                              "BatchNormalization after a Conv or Dense layer: convert "
                              "tfdiff.fold_batchnorm(model) instead, and learn later diffs on it")
    return WeightMap(located)


def _segments(buffers, positions):
    segments = []
    for buffer in np.unique(buffers):
        keys = np.flatnonzero(buffers == buffer)
        order = np.argsort(positions[keys], kind="stable")
        keys, pos = keys[order], positions[keys][order]
        breaks = np.flatnonzero(np.diff(pos) != 1) + 1
        for run_keys, run_pos in zip(np.split(keys, breaks), np.split(pos, breaks)):
            segments.append(Segment.describe(int(buffer), int(run_pos[0]), run_keys))
    return segments


def _with_metadata(data, name, payload):
    """The model with one more metadata entry (and its buffer)."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(payload, dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = name, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != name.encode()] + [entry]
    builder = flatbuffers.Builder(len(data) + len(payload) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
