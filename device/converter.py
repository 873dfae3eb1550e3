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

With `quantize="int8"` (TFLite's dynamic-range quantization) a second probe
is converted, with the probe values' signs drawn at random: the weights
TFLite keeps in float32 are found as above, and each int8 tensor is the
float probe's tensor whose sign pattern it repeats element for element
(which also proves the two share a layout). The real int8 values and
scales are then computed here (symmetric, per output channel where TFLite
quantizes per channel: scale = max|w| / 127, q = round(w / scale)) and
written into that probe, so generation 0's scales are known exactly; a
device keeps them for good, and diffs move the int8 values only.
"""
import os

import numpy as np

from .files import write_atomic
from .naming import is_model, named_variables
from .patch import INT8_LIMIT
from .tflite import TFLiteFile
from .weightmap import WEIGHT_MAP_NAME, Segment, WeightMap

# Probe bit patterns start at 2**51 as floats: no graph constant is there.
PROBE_BASE = 0x5A000000
PROBE_LIMIT = 0x7F000000 - PROBE_BASE
QUANTIZE = (None, "int8")
_INT8 = 9  # schema.fbs TensorType.INT8


class ConversionError(ValueError):
    """A model whose weights cannot be mapped into its .tflite one to one."""

    missing = ()  # the names of the weights the .tflite does not store as they are


def convert(model, path: "str | os.PathLike | None" = None, signatures: "dict | None" = None,
            quantize: "str | None" = None) -> bytes:
    """Convert `model` to .tflite bytes carrying a tfdiff weight map.

    Args:
        model: a tf_keras or Keras 3 model (plain, or folded by tfdiff). A
            Keras 3 model on another backend than TensorFlow (JAX) is saved
            and converted by a TensorFlow-backend process, whose Keras loads
            the same architecture and weights.
        path: if given, the .tflite is written there atomically.
        signatures: optional {name: tf.function with an input signature}
            to export instead of the model's own call; their variables must
            be the model's.
        quantize: None for float32; "int8" for dynamic-range quantization
            (int8 kernels with per-channel scales, float32 activations), whose
            weight map covers the int8 buffers.

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
    if quantize not in QUANTIZE:
        raise ValueError(f"`quantize` must be one of {QUANTIZE}. Received: quantize={quantize!r}")
    if _backend(model) not in (None, "tensorflow"):
        if signatures is not None:
            raise ConversionError(f"`signatures` are TensorFlow functions; a model on the {_backend(model)} "
                                  "backend is converted from its own call")
        return _convert_on_tensorflow(model, path, quantize)
    slots = [(name, variable) for name, variable, _ in named_variables(model)]
    _check_weights(slots)
    originals = [variable.numpy() for _, variable in slots]
    total = sum(v.size for v in originals)
    if total > PROBE_LIMIT:
        raise ConversionError(f"model has {total} weights; the probe supports {PROBE_LIMIT}")
    weights = [(name, v.shape) for (name, _), v in zip(slots, originals)]
    signs = np.random.default_rng(0).integers(0, 2, total).astype(bool) if quantize else None
    try:
        probe = bytearray(_probe(model, slots, originals, signatures))
        if quantize:
            quantized_probe = _probe(model, slots, originals, signatures, signs)
    finally:
        for (_, variable), value in zip(slots, originals):
            variable.assign(value)

    try:
        weight_map = _locate(TFLiteFile(probe), weights)
    except ConversionError as e:
        if not e.missing:
            raise
        raise ConversionError(f"{e} {_explain_missing(model, e.missing)}") from None
    if quantize:
        return _convert_int8(quantized_probe, weight_map, TFLiteFile(probe), weights, signs,
                             dict(zip([n for n, _ in slots], originals)), path)
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


def convert_file(model_path, out, quantize=None, custom_objects=None, signature=None):
    """Load a saved Keras model (.keras, .h5 or SavedModel) and convert it to `out` (`quantize` as for convert).

    A `.keras` file Keras 3 wrote is loaded with Keras 3 (on another backend
    than TensorFlow, in a TensorFlow-backend process); any other with tf_keras.

    Args:
        model_path: the saved model.
        out: the .tflite to write.
        quantize: None or "int8".
        custom_objects: the model's custom layers and functions, as a dict or
            as "module:name" strings (the CLI's `--custom-objects`).
        signature: None for the model's own call, or a function (or a
            "module:function" string) taking the loaded model and returning
            {name: tf.function with an input signature}, as `convert`'s
            `signatures`.
    """
    if not os.path.exists(model_path):
        raise ConversionError(f"model {model_path} does not exist")
    objects = dict(custom_objects) if isinstance(custom_objects, dict) else {
        spec.rsplit(":", 1)[-1]: _resolve(spec, "--custom-objects") for spec in custom_objects or ()}
    make_signatures = _resolve(signature, "--signature") if isinstance(signature, str) else signature
    keras3 = saved_by_keras3(model_path)
    if keras3 and _keras3_backend() != "tensorflow":
        if objects or make_signatures:
            raise ConversionError("--custom-objects and --signature need KERAS_BACKEND=tensorflow")
        return _run_on_tensorflow(model_path, out, quantize)
    try:
        package = _keras3() if keras3 else _keras_package()
        model = package.models.load_model(model_path, custom_objects=objects, compile=False)
    except Exception as e:  # noqa: BLE001 - Keras reports an unknown class as any of several errors
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConversionError(f"cannot load Keras model {model_path}: {first} (a custom layer or function "
                              "must be named: --custom-objects module:Name; a model wrapped for training, "
                              "tfdiff's, is loaded with tfdiff.load_model and converted as tfdiff.fold "
                              "leaves it)") from None
    return convert(model, out, signatures=make_signatures(model) if make_signatures else None,
                   quantize=quantize)


def _keras_package():
    """tf_keras (Keras 2), the Keras the models tfdiff trains are: loaded without switching `tf.keras`."""
    import tf_keras
    return tf_keras


def _keras3():
    import keras
    return keras


def _keras3_backend():
    return _keras3().backend.backend()


def _backend(model):
    """A Keras 3 model's backend ("tensorflow", "jax", ...), None for a tf_keras one."""
    return _keras3_backend() if type(model).__module__.split(".")[0] == "keras" else None


def saved_by_keras3(path):
    """Whether `path` is a .keras archive Keras 3 wrote (its metadata.json names the version)."""
    import json
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        try:
            return str(json.loads(archive.read("metadata.json")).get("keras_version", "")).startswith("3.")
        except (KeyError, ValueError):
            return False


def _convert_on_tensorflow(model, path, quantize):
    """Convert a Keras 3 model of another backend: saved, then loaded and converted by a TensorFlow-backend process."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        saved = os.path.join(scratch, "model.keras")
        model.save(saved)
        return _run_on_tensorflow(saved, path, quantize)


def _run_on_tensorflow(model_path, out, quantize):
    """`python -m device convert` of a saved Keras 3 model in a process whose Keras backend is TensorFlow."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        converted = os.path.join(scratch, "model.tflite")
        command = [sys.executable, "-m", "device", "convert", os.fspath(model_path), converted]
        command += ["--quantize", quantize] if quantize else []
        env = dict(os.environ, KERAS_BACKEND="tensorflow")
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        if proc.returncode:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise ConversionError(f"converting on the TensorFlow backend failed: {lines[-1] if lines else '?'}")
        with open(converted, "rb") as f:
            data = f.read()
    if out is not None:
        write_atomic(os.fspath(out), data)
    return data


def _resolve(spec, flag):
    """The object `module:name` names (for the CLI's --custom-objects and --signature)."""
    import importlib

    module, _, name = spec.partition(":")
    if not module or not name:
        raise ConversionError(f"{flag} takes module:name. Received: {spec!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConversionError(f"{flag} {spec}: {e}") from None


def input_specs(model):
    """The TensorSpecs `model` is called with, batch dimension None: its inputs, or a subclassed model's.

    A subclassed model's inputs are named by its first call, which differs
    between a model and its copy or reload; they are named input_0, ... here,
    so the converted graph depends on the model alone.
    """
    import tensorflow as tf

    if model.inputs:
        return [tf.TensorSpec(t.shape, t.dtype, name=t.name.split(":")[0]) for t in model.inputs]
    spec = model._get_save_spec(dynamic_batch=True)
    if spec is not None:
        specs = tf.nest.flatten(spec)
        shapes, dtypes = [list(s.shape) for s in specs], [s.dtype for s in specs]
    else:
        shape = getattr(model, "_build_input_shape", None)  # loaded from .keras: built, never called
        if shape is None:
            raise ConversionError(f"subclassed model {model.name!r} has never been called, so its inputs are "
                                  "unknown; call it once on a batch first")
        nested = isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple))
        shapes = [list(s) for s in shape] if nested else [list(shape)]
        dtypes = [tf.float32] * len(shapes)
    return [tf.TensorSpec([None] + s[1:], d, name=f"input_{i}") for i, (s, d) in enumerate(zip(shapes, dtypes))]


def _explain_missing(model, names):
    """What to do about weights the TFLite converter did not store as they are (`names`), in one sentence."""
    layers = {}
    for name in names:
        layer = model
        for part in name.rsplit("/", 2)[0].split("/"):  # the weight's layer path (device/naming.py)
            layer = layer.get_layer(part)
        layers.setdefault(id(layer), layer)
    foldable = {id(bn) for bn, _ in foldable_batchnorms(model)}
    hints = []
    for layer in layers.values():
        kind, module = type(layer).__name__, type(layer).__module__
        if kind == "BatchNormalization" and id(layer) in foldable:
            hints.append(f"{layer.name} is a BatchNormalization the converter folds into the layer before it: "
                         "convert tfdiff.fold_batchnorm(model) instead, and learn later diffs on it")
        elif kind == "BatchNormalization":
            producer = _single_producer(model, layer)
            activation = getattr(getattr(producer, "activation", None), "__name__", None)
            why = (f"it follows {producer.name}, whose {activation} activation sits between them"
                   if activation not in (None, "linear") else "no Conv or Dense layer feeds it alone")
            hints.append(f"BatchNormalization {layer.name} cannot be folded ({why}): put the activation after "
                         "the BatchNormalization (Conv, BatchNormalization, Activation), or drop it")
        elif not module.startswith(("tf_keras", "keras")):
            hints.append(f"custom layer {layer.name} ({kind}): the converter merged its weights into a neighbouring "
                         "operation (a multiply or add by a weight next to a Dense or Conv is folded into that "
                         "layer's kernel); put a nonlinearity between them, or let one layer hold the product")
    return "; ".join(hints) + "." if hints else ("A BatchNormalization after a Conv or Dense layer: convert "
                                                 "tfdiff.fold_batchnorm(model) instead.")


_FOLDABLE = ("Conv1D", "Conv2D", "Conv3D", "Dense")


def foldable_batchnorms(model):
    """(BatchNormalization, the layer it folds into) of every pair the TFLite converter folds, nested models
    included: the BatchNormalization normalizes the last axis of a Conv1D/2D/3D or Dense layer with a linear
    activation, whose output feeds nothing else. tfdiff.fold_batchnorm folds these pairs in Keras first."""
    pairs = []
    for layer in getattr(model, "layers", ()):
        if is_model(layer):
            pairs += foldable_batchnorms(layer)
            continue
        if type(layer).__name__ != "BatchNormalization":
            continue
        previous = _single_producer(model, layer)
        if (type(previous).__name__ in _FOLDABLE
                and getattr(getattr(previous, "activation", None), "__name__", None) == "linear"
                and _normalizes_last_axis(layer) and len(previous._outbound_nodes) == 1):
            pairs.append((layer, previous))
    return pairs


def _normalizes_last_axis(bn):
    axes = bn.axis if isinstance(bn.axis, (list, tuple)) else [bn.axis]
    rank = len(bn.input_shape if hasattr(bn, "input_shape") else bn.input.shape)  # Keras 3: no input_shape
    return [a % rank for a in axes] == [rank - 1]


def _single_producer(model, layer):
    """The one layer whose output `layer` takes (the one before it in a Sequential), or None."""
    if any(cls.__name__ == "Sequential" for cls in type(model).__mro__) and layer in model.layers:
        index = model.layers.index(layer)
        return model.layers[index - 1] if index > 0 else None
    nodes = getattr(layer, "_inbound_nodes", [])
    if len(nodes) != 1:
        producers = []
    elif hasattr(nodes[0], "inbound_layers"):
        producers = nodes[0].inbound_layers
    else:  # a Keras 3 node names the nodes it takes from
        producers = [parent.operation for parent in nodes[0].parent_nodes]
    producers = producers if isinstance(producers, list) else [producers]
    return producers[0] if len(producers) == 1 else None


def _check_weights(slots):
    for name, variable in slots:
        dtype = getattr(variable.dtype, "name", variable.dtype)  # Keras 3 names dtypes by string
        if dtype != "float32":
            raise ConversionError(f"weight {name} is {dtype}; only float32 weights "
                                  "can be mapped and patched")


def _probe(model, slots, originals, signatures, signs=None):
    """The .tflite of `model` with every weight element set to its probe value (negated where `signs`)."""
    first = 0
    for (_, variable), value in zip(slots, originals):
        ids = np.arange(first, first + value.size, dtype=np.uint32) + np.uint32(PROBE_BASE)
        if signs is not None:
            ids |= signs[first:first + value.size].astype(np.uint32) << np.uint32(31)
        variable.assign(ids.view(np.float32).reshape(value.shape))
        first += value.size
    return _convert(model, signatures, quantize=signs is not None)


def _convert_int8(probe, float_map, float_probe, weights, signs, values, path):
    """The int8 .tflite: `probe` (converted with quantization) with the real int8 values and scales."""
    from tensorflow.lite.python import schema_py_generated as schema

    probe = bytearray(probe)
    tree = schema.ModelT.InitFromObj(schema.Model.GetRootAs(probe, 0))
    int8_tensors = {}  # buffer -> tensor
    for subgraph in tree.subgraphs:
        for tensor in subgraph.tensors:
            if tensor.type == _INT8 and tensor.buffer and tree.buffers[tensor.buffer].data is not None:
                int8_tensors[tensor.buffer] = tensor
    weight_map = _locate_int8(TFLiteFile(probe), tree, int8_tensors, float_map, float_probe, weights, signs)

    real = {}  # int8 buffer -> its float32 values, in the tensor's layout
    for name, _ in weights:
        flat = values[name].reshape(-1).astype(np.float32)
        for segment in weight_map.segments(name):
            if weight_map.dtype(name) == "int8":
                target = real.setdefault(segment.buffer, np.zeros(len(tree.buffers[segment.buffer].data), np.float32))
            else:
                target = tree.buffers[segment.buffer].data.view("<f4")
            target[segment.offset:segment.offset + segment.count] = flat[segment.keras_indices()]
    rescaled = {}  # the probe's scales -> the real ones
    for buffer, tensor_values in real.items():
        tensor = int8_tensors[buffer]
        probe_scales = tuple(tensor.quantization.scale)
        tree.buffers[buffer].data = _quantize(tensor_values, tensor)
        rescaled[probe_scales] = tensor.quantization.scale
    # An op's int8 output that carries a weight's scales (an Embedding's GATHER, dequantized after it)
    # was given the probe's: it gets the real ones. Probe scales (~2**53 / 127) match nothing else.
    for subgraph in tree.subgraphs:
        for tensor in subgraph.tensors:
            quantization = tensor.quantization
            if quantization is not None and quantization.scale is not None:
                key = tuple(quantization.scale)
                if key in rescaled and quantization.scale is not rescaled[key]:
                    quantization.scale = list(rescaled[key])
    data = _with_metadata(tree, WEIGHT_MAP_NAME, weight_map.to_bytes())
    if path is not None:
        write_atomic(os.fspath(path), data)
    return data


def _locate_int8(quantized, tree, int8_tensors, float_map, float_probe, weights, signs):
    """The WeightMap of the quantized probe: float weights by probe value, int8 ones by sign pattern."""
    # int8 bytes are not searched for float probe values: they could spell one by chance.
    kept_float = _locate(quantized, weights, sign_bit=True, missing_ok=True, skip=set(int8_tensors))
    located, dtypes = {}, {}
    for name, shape in weights:
        if name in kept_float.weights:
            located[name] = kept_float.weights[name]
            continue
        segments = []
        for segment in float_map.segments(name):
            start, length = float_probe.buffer_ranges[segment.buffer]
            ids = np.frombuffer(float_probe.data, dtype="<u4", count=length // 4, offset=start).astype(np.int64)
            ids -= PROBE_BASE
            if ids.min() < 0 or ids.max() >= signs.size:
                raise ConversionError(f"weight {name} shares its buffer with other constants; it cannot be mapped")
            matches = [b for b in int8_tensors if len(tree.buffers[b].data) == ids.size
                       and np.array_equal(tree.buffers[b].data.view(np.int8) < 0, signs[ids])]
            if len(matches) != 1:
                raise ConversionError(f"weight {name}: {len(matches)} int8 tensors repeat its probe, not one")
            segments.append(Segment.describe(matches[0], segment.offset, segment.keras_indices()))
        located[name] = (tuple(shape), segments)
        dtypes[name] = "int8"
    return WeightMap(located, dtypes)


def _quantize(real, tensor):
    """int8 bytes of a tensor's float32 values, its scales set on `tensor`: symmetric, per channel
    along the tensor's quantized dimension when TFLite gave it one scale per channel, else per tensor."""
    channels = len(tensor.quantization.scale)
    shape = [int(d) for d in tensor.shape]
    axis = tensor.quantization.quantizedDimension if channels > 1 else None
    values = real.reshape(shape)
    reduce = tuple(i for i in range(values.ndim) if i != axis)
    peak = np.max(np.abs(values), axis=reduce, keepdims=True).astype(np.float32)
    scale = np.where(peak > 0, peak / np.float32(INT8_LIMIT), np.float32(1)).astype(np.float32)
    q = np.clip(np.rint(values / scale), -INT8_LIMIT, INT8_LIMIT).astype(np.int8)
    tensor.quantization.scale = [float(x) for x in scale.reshape(-1)]
    tensor.quantization.zeroPoint = [0] * scale.size
    return q.reshape(-1).view(np.uint8)


def _convert(model, signatures, quantize=False):
    import tensorflow as tf

    if signatures is None:
        specs = [tf.TensorSpec([1] + list(s.shape[1:]), s.dtype, name=s.name) for s in input_specs(model)]
        # A static batch of 1 lets the converter fuse LSTMs into one op.
        call = tf.function(lambda *xs: model(list(xs) if len(xs) > 1 else xs[0], training=False))
        functions = [call.get_concrete_function(*specs)]
    else:
        functions = [fn.get_concrete_function() for fn in signatures.values()]
    # Given a Keras 3 model as the functions' owner, the converter keeps its variables as resource
    # variables rather than constants; unowned, they are frozen into buffers as tf_keras's are.
    # A tf_keras model's functions are owned by a bare module holding its variables: the converter
    # saves the owner as a SavedModel, and saving the model itself traces every layer's call for
    # Keras metadata it never reads: several times slower, for the same bytes (tests/test_golden.py).
    owner = None
    if type(model).__module__.split(".")[0] != "keras":
        owner = tf.Module()
        owner.owned = list(model.variables)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(functions, owner)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.optimizations = [tf.lite.Optimize.DEFAULT] if quantize else []
    return converter.convert()


def _locate(model_file, weights, sign_bit=False, missing_ok=False, skip=()):
    """The WeightMap of a converted probe model (of the weights found, with `missing_ok`)."""
    total = sum(int(np.prod(shape)) for _, shape in weights)
    where_buffer = np.full(total, -1, dtype=np.int64)
    where_pos = np.full(total, -1, dtype=np.int64)
    seen = np.zeros(total, dtype=np.int64)
    for index, (start, length) in enumerate(model_file.buffer_ranges):
        if length == 0 or length % 4 or index in skip:
            continue
        words = np.frombuffer(model_file.data, dtype="<u4", count=length // 4, offset=start)
        if sign_bit:
            words = words & np.uint32(0x7FFFFFFF)
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
    if missing and not missing_ok:
        error = ConversionError(f"weights not stored as-is in the .tflite (the converter folded or "
                                f"computed with them), so no diff could be patched in: {', '.join(missing)}.")
        error.missing = missing
        raise error
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
    """The model (bytes, or an unpacked schema.ModelT) with one more metadata entry (and its buffer)."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = data if isinstance(data, schema.ModelT) else schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(payload, dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = name, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != name.encode()] + [entry]
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
