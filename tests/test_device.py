"""The device applier against the converter and LiteRT: a trained diff patched on the device is bit for bit
the converted fold (slow: every test trains or converts; tests/test_device_safety.py checks the device's
safety on golden files without TensorFlow)."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tfdiff
from device import applier, signing, tflite
from device.converter import ConversionError, convert
from device.tflite import TFLiteFile
from tests.device_world import run_cli, trusting, weight_bytes
from tfdiff import keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def every_layer_model(seed=0):
    """One model holding every layer type the core supports."""
    keras.utils.set_random_seed(seed)
    feats = keras.Input((6, 5), name="feats")
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    x = keras.layers.LSTM(16, return_sequences=True, name="lstm")(feats)
    x = keras.layers.Bidirectional(keras.layers.LSTM(8, return_sequences=True), name="bilstm")(x)
    x = keras.layers.GRU(12, return_sequences=True, name="gru")(x)
    x = keras.layers.Conv1D(8, 3, padding="same", name="conv1d")(x)
    e = keras.layers.Embedding(40, 8, name="embedding")(tokens)
    x = keras.layers.Concatenate()([x, e])
    x = keras.layers.Reshape((6, 16, 1))(x)
    x = keras.layers.Conv2D(4, 3, name="conv2d")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(5, name="dense")(x)
    return keras.Model([feats, tokens], out)


def batch(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, 6, 5)).astype("float32"), rng.integers(0, 40, size=(n, 6)).astype("int32")]


def train_diff(base, method, seed=0, generation=1):
    keras.utils.set_random_seed(seed)
    diff_model = tfdiff.wrap(base, method)
    diff_model.compile(keras.optimizers.Adam(0.01), "mse")
    x = batch(seed=seed)
    y = np.random.default_rng(seed + 7).normal(size=(32, 5)).astype("float32")
    diff_model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=tfdiff.callbacks(diff_model))
    return tfdiff.extract(diff_model, generation=generation)


def run_litert(path, inputs):
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    details = sorted(interpreter.get_input_details(), key=lambda d: d["name"])
    outputs = []
    for i in range(inputs[0].shape[0]):
        interpreter.reset_all_variables()  # fused LSTMs keep state across invokes
        for detail, value in zip(details, inputs):  # "feats" < "tokens"
            interpreter.set_tensor(detail["index"], value[i:i + 1])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy())
    return np.concatenate(outputs)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A base model, its .tflite, and signed sparse, hash, low-rank and seed diffs (`NAME.tfdiff`; unsigned:
    `NAME-unsigned.tfdiff`). The signing key is the devices' trusted key ($TFDIFF_PUBLIC_KEY)."""
    tmp = tmp_path_factory.mktemp("device")
    signing.keygen(tmp / "server.pem", tmp / "server.pub")
    base = every_layer_model()
    convert(base, tmp / "base.tflite")
    diffs = {}
    for name, method in [("sparse", tfdiff.SparseDiff(compression=8.0, end_step=6, frequency=2)),
                         ("hash", tfdiff.HashDiff(compression=8.0, num_hashes=3, seed=1)),
                         ("lowrank", tfdiff.LowRankDiff(compression=8.0, seed=1)),
                         ("seed", tfdiff.SeedDiff(compression=8.0, seed=1))]:
        diff = train_diff(base, method)
        diff.save(tmp / f"{name}-unsigned.tfdiff")
        signing.sign(tmp / f"{name}-unsigned.tfdiff", tmp / "server.pem", out=tmp / f"{name}.tfdiff",
                     model=tmp / "base.tflite")
        folded = tfdiff.fold(base, diff)
        convert(folded, tmp / f"{name}-folded.tflite")
        diffs[name] = (diff, folded)
    undo = trusting(tmp)
    yield tmp, base, diffs
    undo()


@pytest.mark.parametrize("method", ["sparse", "hash", "lowrank", "seed"])
def test_patched_tflite_equals_converted_fold_bit_for_bit(world, method, tmp_path):
    tmp, base, diffs = world
    diff, folded = diffs[method]
    model = tmp_path / "device.tflite"
    model.write_bytes((tmp / "base.tflite").read_bytes())
    result = applier.apply(model, tmp / f"{method}.tfdiff")
    assert result.status == "applied" and result.patched_elements > 0
    expected = tmp / f"{method}-folded.tflite"
    assert weight_bytes(model) == weight_bytes(expected)
    assert len(weight_bytes(model)) == len(tfdiff.named_weights(base))
    x = batch(4, seed=3)
    np.testing.assert_array_equal(run_litert(model, x), run_litert(expected, x))
    assert not np.array_equal(run_litert(model, x), run_litert(tmp / "base.tflite", x))
    np.testing.assert_allclose(run_litert(model, x), folded(x).numpy(), atol=2e-2)
    assert not os.path.exists(str(model) + applier.JOURNAL_SUFFIX)
    assert applier.apply(model, tmp / f"{method}.tfdiff").status == "already"


def test_equal_weights_land_in_their_own_buffers():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    a = keras.layers.Dense(4, name="a")(inputs)
    b = keras.layers.Dense(4, name="b")(inputs)
    model = keras.Model(inputs, keras.layers.Add()([a, b]))
    model.get_layer("b").set_weights(model.get_layer("a").get_weights())  # tied values, zero biases
    wmap = TFLiteFile(convert(model)).weight_map()
    buffers = [s.buffer for name in wmap.names() for s in wmap.segments(name)]
    assert len(buffers) == len(set(buffers)) == 4


def test_a_weight_folded_by_the_converter_is_reported_by_name():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4, name="dense")(inputs)
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="norm")(x))
    with pytest.raises(ConversionError, match="not stored as-is.*norm/0/gamma"):
        convert(model)


def test_a_diff_bound_to_another_graph_is_refused(world, tmp_path):
    tmp, base, _ = world
    # The same weights in another graph: the model with one more output op.
    other = keras.Model(base.inputs, keras.layers.Activation("tanh")(base.outputs[0]))
    model = tmp_path / "other.tflite"
    convert(other, model)
    assert tflite.graph_digest_of(model) != tflite.graph_digest_of(tmp / "base.tflite")
    before = model.read_bytes()
    proc = run_cli("apply", model, tmp / "sparse.tfdiff")
    assert proc.returncode == 1 and "another model graph" in proc.stderr, proc.stderr
    assert model.read_bytes() == before
    # Unbound (signed with --unbound), the weights digest alone binds it, and it applies.
    unbound = tmp_path / "unbound.tfdiff"
    signing.sign(tmp / "sparse-unsigned.tfdiff", tmp / "server.pem", out=unbound, unbound=True)
    assert run_cli("apply", model, unbound).returncode == 0


def test_a_plain_install_is_the_device_without_tensorflow(world, tmp_path):
    """`pip install .` in a fresh venv, offline: its dependencies are linked from this one."""
    import cffi
    import cryptography
    import flatbuffers
    tmp, _, _ = world
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    python = venv / "bin" / "python"
    deps = tmp_path / "deps"
    deps.mkdir()
    for module in (np, flatbuffers, cryptography, cffi):
        package = os.path.dirname(module.__file__)
        (deps / os.path.basename(package)).symlink_to(package)
    site = os.path.dirname(os.path.dirname(np.__file__))
    for extra in os.listdir(site):
        if extra.startswith(("_cffi_backend", "numpy.libs", "pycparser")):
            (deps / extra).symlink_to(os.path.join(site, extra))
    site_packages = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site_packages, "deps.pth"), "w") as f:
        f.write(str(deps) + "\n")
    source = tmp_path / "source"  # a clean copy: the build writes into the tree it builds
    source.mkdir()
    for name in ("setup.py", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source)
    for name in ("tfdiff", "device"):
        shutil.copytree(os.path.join(ROOT, name), source / name, ignore=shutil.ignore_patterns("__pycache__"))
    # The wheel is built here (this venv has setuptools and wheel), then installed there: pip needs no network.
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-index", "--no-deps",
                            "--no-build-isolation", "-w", tmp_path / "dist", source], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("tfdiff-*.whl"))
    pip = subprocess.run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", wheel],
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*args):
        return subprocess.run([python, *map(str, args)], capture_output=True, text=True, env=env, cwd=tmp_path)
    check = run("-c", "import importlib.util as u; print([bool(u.find_spec(m)) for m in "
                      "('tensorflow', 'recipes', 'benchmarks', 'tfdiff', 'device')])")
    assert check.stdout.strip() == "[False, False, False, True, True]", check.stderr
    model = tmp_path / "device.tflite"
    model.write_bytes((tmp / "base.tflite").read_bytes())
    proc = run("-m", "device", "apply", model, tmp / "sparse.tfdiff")
    assert proc.returncode == 0, proc.stderr
    assert weight_bytes(model) == weight_bytes(tmp / "sparse-folded.tflite")
    shown = run("-m", "tfdiff", "show", tmp / "sparse.tfdiff", "--public-key", tmp / "server.pub")
    assert shown.returncode == 0 and "verified" in shown.stdout, shown.stderr
    script = subprocess.run([venv / "bin" / "tfdiff", "show", tmp / "sparse.tfdiff"], capture_output=True,
                            text=True, env=env)
    assert script.returncode == 0, script.stderr
    needs = run("-c", "import tfdiff; tfdiff.wrap")
    assert needs.returncode == 1 and "pip install 'tfdiff[train]'" in needs.stderr.splitlines()[-1], needs.stderr


def test_bench_reports_latency_and_apply_cost(world):
    tmp, _, _ = world
    from device import bench
    report = bench.latency(tmp / "base.tflite", runs=5, warmup=1)
    assert 0 < report["median_ms"] <= report["p90_ms"]
    for mode in bench.MODES:
        cost = bench.apply_cost(tmp / "base.tflite", tmp / "hash.tfdiff", mode, repeats=1)
        assert cost["seconds"] > 0 and cost["peak_rss_mb"] > 0
        kept = cost["rollback_bytes"]
        assert (kept > 0) if mode == "inplace" else kept == {"swap": cost["model_bytes"], "out": 0}[mode]


