"""Int8 device models: convert, learn, ship and apply diffs in quantized units, bit-exact."""
import shutil
import subprocess
import sys

import numpy as np
import pytest

import device
import tfdiff
from device.digest import weights_digest
from device import format as wire
from device import tflite
from device.converter import convert
from device.format import Entry
from device.patch import patch_weight
from tfdiff import keras

# Kernels of at least 1024 elements, so TFLite's dynamic-range quantization makes them int8.
LAYERS = {
    "dense": (lambda: keras.layers.Dense(32, name="dense"), (64,), "float32"),
    "conv1d": (lambda: keras.layers.Conv1D(32, 3, name="conv1d"), (10, 32), "float32"),
    "conv2d": (lambda: keras.layers.Conv2D(16, 3, name="conv2d"), (8, 8, 16), "float32"),
    "embedding": (lambda: keras.layers.Embedding(200, 16, name="embedding"), (7,), "int32"),
    "lstm": (lambda: keras.layers.LSTM(40, name="lstm"), (4, 32), "float32"),
    "gru": (lambda: keras.layers.GRU(40, name="gru"), (4, 32), "float32"),
    "bidirectional": (lambda: keras.layers.Bidirectional(keras.layers.LSTM(40), name="bilstm"), (4, 32), "float32"),
}
FAST = ("dense", "lstm")


def layer_model(kind):
    make, shape, dtype = LAYERS[kind]
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape, dtype=dtype)
    return keras.Model(inputs, keras.layers.Flatten()(make()(inputs)))


def sample(model, kind, n=4):
    _, shape, dtype = LAYERS[kind]
    rng = np.random.default_rng(1)
    if dtype == "int32":
        return rng.integers(0, 200, size=(n,) + shape).astype(np.int32)
    return rng.normal(size=(n,) + shape).astype(np.float32)


def random_diff(base, generation=1, fraction=0.1, seed=0, method="sparse"):
    """A diff of the int8 model `base`: sparse (int8 deltas, some saturating, and float16 ones) or hash."""
    rng = np.random.default_rng(seed)
    entries, values = [], dict(base.values)
    for name, value in sorted(base.values.items()):
        positions = np.flatnonzero(rng.random(value.size) < fraction)
        if method == "hash":  # steps of up to a few quantization units, saturating at the largest |q|
            table = rng.normal(0, 0.05, max(1, value.size // 10)).astype(np.float16)
            entry = Entry(name, value.shape, "hash", table, None, seed=7, num_hashes=3)
            entries.append(entry)
            values[name] = patch_weight(entry, values[name])
            continue
        if value.dtype == np.int8:
            deltas = rng.integers(-127, 128, positions.size).astype(np.int8)
            deltas[deltas == 0] = 1
        else:
            deltas = rng.normal(0, 0.1, positions.size).astype(np.float16)
        entry = Entry(name, value.shape, "sparse", deltas, positions)
        entries.append(entry)
        values[name] = patch_weight(entry, values[name])
    return tfdiff.Diff(method, entries, base.digest(), weights_digest(values), generation=generation,
                       seed=7 if method == "hash" else 0, num_hashes=3 if method == "hash" else 0)


def tflite_dynamic_range(model):
    import tensorflow as tf

    specs = [tf.TensorSpec([1] + list(model.inputs[0].shape[1:]), model.inputs[0].dtype)]
    call = tf.function(lambda x: model(x, training=False)).get_concrete_function(*specs)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([call], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def litert(path, x):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    outputs = []
    for row in x:
        interpreter.set_tensor(inp["index"], row[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out["index"])[0])
    return np.stack(outputs)


@pytest.mark.parametrize("kind", [pytest.param(k, marks=() if k in FAST else pytest.mark.slow) for k in LAYERS])
def test_int8_patch_is_bit_exact_for_every_layer_kind(kind, tmp_path):
    model = layer_model(kind)
    path = tmp_path / "base.tflite"
    convert(model, path, quantize="int8")
    base = tfdiff.Int8Model.load(path)
    kernels = [n for n, v in base.values.items() if v.size >= 1024]
    assert kernels and set(kernels) <= set(base.int8_names), (kind, base.int8_names)
    # The dequantized int8 model is the Keras model to within half a step of each scale.
    for name, value in tfdiff.named_weights(model).items():
        tolerance = base.scales[name] / 2 + 1e-7 if name in base.scales else 0
        assert np.all(np.abs(base.dequantized()[name] - value) <= tolerance), name

    # Our int8 values and scales are TFLite's own: the same outputs as its dynamic-range model.
    x = sample(model, kind)
    reference = tmp_path / "tflite-drq.tflite"
    reference.write_bytes(tflite_dynamic_range(model))
    np.testing.assert_allclose(litert(path, x), litert(reference, x), rtol=0, atol=1e-6)

    diff = random_diff(base)
    diff.save(tmp_path / "gen1.tfdiff")
    patched = tmp_path / "patched.tflite"
    shutil.copy(path, patched)
    result = device.apply(patched, tmp_path / "gen1.tfdiff", allow_unsigned=True)
    assert result.status == "applied"
    expected = base.patched(diff)
    on_device = tfdiff.Int8Model.load(patched)
    for name in expected.values:
        assert on_device.values[name].dtype == expected.values[name].dtype
        np.testing.assert_array_equal(on_device.values[name], expected.values[name], err_msg=name)
        np.testing.assert_array_equal(on_device.scales.get(name), base.scales.get(name))
    assert tflite.graph_digest_of(patched) == tflite.graph_digest_of(path)
    before, after = litert(path, x), litert(patched, x)
    assert np.all(np.isfinite(after)) and not np.allclose(before, after)


def test_int8_hash_step_is_rounded_and_saturated_like_the_server():
    q = np.int8([0, 1, -3, 100, -100, 127, 5, 2, 6])
    entry = Entry("w", (9,), "hash", np.float16([0.5]), None, seed=1, num_hashes=2)  # every position: sum 1.0
    # q + |q| * 1.0: zero stays zero (the step is multiplicative), negatives reach zero, positives double
    # and saturate at 127.
    assert patch_weight(entry, q).tolist() == [0, 2, 0, 127, 0, 127, 10, 4, 12]
    quarter = Entry("w", (9,), "hash", np.float16([0.25]), None, seed=1, num_hashes=1)
    # q + rint(|q| * 0.25), half to even: 0.25 -> 0, 0.75 -> 1, 31.75 -> 32 (saturates), 0.5 -> 0, 1.5 -> 2.
    assert patch_weight(quarter, q).tolist() == [0, 1, -2, 125, -75, 127, 6, 2, 8]


def test_int8_saturates_at_127_identically_on_server_and_device(tmp_path):
    model = layer_model("dense")
    path = tmp_path / "base.tflite"
    convert(model, path, quantize="int8")
    base = tfdiff.Int8Model.load(path)
    q = base.values["dense/0/kernel"].reshape(-1)
    # Per output channel the largest |w| is exactly +-127: push those past the range, both ways.
    top, bottom = int(np.argmax(q)), int(np.argmin(q))
    assert q[top] == 127 and q[bottom] == -127
    inside = int(np.flatnonzero(np.abs(q) < 50)[0])
    indices = np.array(sorted([top, bottom, inside]))
    deltas = {top: 100, bottom: -100, inside: -128}  # -128 too: the delta's own extreme
    entry = Entry("dense/0/kernel", base.values["dense/0/kernel"].shape, "sparse",
                  np.array([deltas[i] for i in indices], np.int8), indices)
    server = patch_weight(entry, base.values["dense/0/kernel"]).reshape(-1)
    assert server[top] == 127 and server[bottom] == -127
    assert server[inside] == max(-127, int(q[inside]) - 128)
    values = dict(base.values, **{"dense/0/kernel": server.reshape(base.values["dense/0/kernel"].shape)})
    diff = tfdiff.Diff("sparse", [entry], base.digest(), weights_digest(values), generation=1)
    diff.save(tmp_path / "sat.tfdiff")
    assert device.apply(path, tmp_path / "sat.tfdiff", allow_unsigned=True).status == "applied"
    np.testing.assert_array_equal(tfdiff.Int8Model.load(path).values["dense/0/kernel"].reshape(-1), server)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "device", *map(str, args)], capture_output=True, text=True)


def test_a_float_diff_is_refused_by_an_int8_model_and_the_reverse(tmp_path):
    model = layer_model("dense")
    convert(model, tmp_path / "float.tflite")
    convert(model, tmp_path / "int8.tflite", quantize="int8")
    float_weights = tfdiff.named_weights(model)
    float_entry = Entry("dense/0/kernel", (64, 32), "sparse", np.float16([0.5]), np.array([3]))
    float_diff = tfdiff.Diff("sparse", [float_entry], weights_digest(float_weights),
                             weights_digest(dict(float_weights, **{
                                 "dense/0/kernel": patch_weight(float_entry, float_weights["dense/0/kernel"])})),
                             generation=1)
    float_diff.save(tmp_path / "float.tfdiff")
    random_diff(tfdiff.Int8Model.load(tmp_path / "int8.tflite")).save(tmp_path / "int8.tfdiff")
    for model_name, diff_name, message in (("int8", "float", "made for a float32 model"),
                                           ("float", "int8", "made for an int8 model")):
        target = tmp_path / f"{model_name}.tflite"
        before = target.read_bytes()
        proc = run_cli("apply", target, tmp_path / f"{diff_name}.tfdiff", "--allow-unsigned")
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert target.read_bytes() == before
    # Each applies to its own kind.
    assert run_cli("apply", tmp_path / "float.tflite", tmp_path / "float.tfdiff", "--allow-unsigned").returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sparse", "hash"])
def test_int8_diff_trains_through_fake_quantization_and_ships_int8_deltas(tmp_path, method):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 32))
    hidden = keras.layers.LSTM(40, name="lstm")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(32, name="out")(hidden))
    convert(model, tmp_path / "base.tflite", quantize="int8")
    base = tfdiff.Int8Model.load(tmp_path / "base.tflite")
    method = (tfdiff.SparseDiff(compression=10.0, end_step=20, frequency=5) if method == "sparse"
              else tfdiff.HashDiff(compression=10.0, seed=3))
    diff_model = tfdiff.wrap(model, method, int8=base)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4, 32)).astype(np.float32), rng.normal(size=(64, 32)).astype(np.float32)
    # At the start the diff model computes with the device's (dequantized) weights.
    reference = keras.models.clone_model(model)
    base.assign_to(reference)
    np.testing.assert_allclose(diff_model(x).numpy(), reference(x).numpy(), atol=1e-6)
    diff_model.compile(keras.optimizers.Adam(0.01), "mse")
    diff_model.fit(x, y, epochs=6, batch_size=16, verbose=0, callbacks=tfdiff.callbacks(diff_model))
    diff = tfdiff.extract(diff_model, generation=1)
    kinds = {e.name: e.values.dtype for e in diff.entries}
    if isinstance(method, tfdiff.SparseDiff):
        assert {n for n, d in kinds.items() if d == np.int8} == set(base.int8_names)
    else:
        assert set(kinds.values()) == {np.dtype(np.float16)} and {e.method for e in diff.entries} == {"hash"}
    assert diff.nbytes + wire.SIGNATURE_BYTES <= diff.budget and diff.cut_values == 0
    diff.save(tmp_path / "gen1.tfdiff")
    assert device.apply(tmp_path / "base.tflite", tmp_path / "gen1.tfdiff", allow_unsigned=True).status == "applied"
    on_device = tfdiff.Int8Model.load(tmp_path / "base.tflite")
    expected = base.patched(diff)
    assert all(np.array_equal(on_device.values[n], expected.values[n]) for n in expected.values)
    # What trained is what the device holds: the fake-quantized weights are its int8 weights, exactly.
    dequantized, checked = expected.dequantized(), 0
    for layer in diff_model.layers:
        wrapper = layer if isinstance(layer, tfdiff.DiffWrapper) else getattr(layer, "layer", None)
        if not isinstance(wrapper, tfdiff.DiffWrapper):
            continue
        for index, weight in enumerate(wrapper.effective_weights()):
            name = [n for n, v in tfdiff.weight_variables(diff_model) if v is wrapper.base_weights[index]][0]
            if index in wrapper.int8_scales:
                if isinstance(method, tfdiff.SparseDiff):  # integer deltas travel exactly
                    np.testing.assert_array_equal(weight.numpy(), dequantized[name], err_msg=name)
                else:  # the table travels as float16: a rounded step may land one unit away, rarely
                    steps = np.abs(weight.numpy() - dequantized[name]) / base.scales[name]
                    assert np.all(steps < 1 + 1e-3) and np.mean(steps > 0.5) < 0.01, name
                checked += 1
    assert checked == len(base.int8_names)


def test_the_server_view_of_an_int8_device_is_the_golden_patched_model():
    """tfdiff.DeviceModel: Int8Model.patched for an int8 device, bit for bit the device's apply (golden files)."""
    import os
    golden = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
    features = keras.Input((64,))
    model = keras.Model(features, keras.layers.Dense(32, name="dense")(features))
    before = tfdiff.DeviceModel.load(model, os.path.join(golden, "int8-base.tflite"), quantized=True)
    after = before.patched(tfdiff.Diff.load(os.path.join(golden, "int8-sparse.tfdiff")))
    patched = os.path.join(golden, "int8-sparse-patched.tflite")
    assert after.matches(patched) and not before.matches(patched)
    assert before.matches(os.path.join(golden, "int8-base.tflite"))
    dequantized = after.int8.dequantized()
    for name, value in tfdiff.named_weights(after.model).items():  # the Keras model is the dequantized one
        assert np.array_equal(value, dequantized[name]), name
