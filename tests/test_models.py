"""A new user's models: subclassed and custom layers end to end, nothing cut in silence, save and load,
conversion dead ends that say what to do, `show` that adds up, `device status`."""
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

import device
import tfdiff
from device.format import Entry
from tfdiff import keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden")
CUSTOM = '''
import tfdiff
from tfdiff import keras


@keras.utils.register_keras_serializable(package="user")
class Net(keras.Model):
    """A subclassed model; with a method, its layers are DiffWrappers (names as in the base)."""

    def __init__(self, method=None, **kwargs):
        super().__init__(**kwargs)
        wrap = (lambda layer: tfdiff.DiffWrapper(layer, method)) if method else (lambda layer: layer)
        self.hidden = wrap(keras.layers.Dense(64, activation="relu", name="hidden"))
        self.scale = wrap(Scale(name="scale"))
        self.out = wrap(keras.layers.Dense(4, name="out"))

    def call(self, x, training=None):
        return self.out(keras.activations.tanh(self.scale(self.hidden(x))))


@keras.utils.register_keras_serializable(package="user")
class Scale(keras.layers.Layer):
    """x * w, a custom layer (between nonlinearities, so the converter keeps w as it is)."""

    def build(self, shape):
        self.w = self.add_weight(name="w", shape=shape[-1:], initializer="ones")

    def call(self, x):
        return x * self.w
'''


@pytest.fixture(scope="module")
def user_module(tmp_path_factory):
    where = tmp_path_factory.mktemp("user")
    (where / "usermodels.py").write_text(CUSTOM)
    sys.path.insert(0, str(where))
    import usermodels
    yield usermodels, where
    sys.path.remove(str(where))


def _data(n=256, width=16):
    rng = np.random.default_rng(0)
    return rng.random((n, width), dtype=np.float32), rng.integers(0, 4, n)


def _subclassed_pair(usermodels, method):
    x, y = _data()
    base = usermodels.Net()
    base(x[:1])
    diff_model = usermodels.Net(method)
    diff_model(x[:1])
    for (name, value), (other, slot) in zip(tfdiff.weight_variables(base), tfdiff.weight_variables(diff_model)):
        assert name == other
        slot.assign(value)
    diff_model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return base, diff_model, x, y


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sparse", "hash"])
def test_subclassed_model_from_fit_to_the_device_bit_for_bit(user_module, tmp_path, method):
    usermodels, where = user_module
    chosen = (tfdiff.SparseDiff(compression=8.0, end_step=40, frequency=5, value_dtype="float32")
              if method == "sparse" else tfdiff.HashDiff(compression=8.0, seed=1, value_dtype="float32"))
    base, diff_model, x, y = _subclassed_pair(usermodels, chosen)
    with warnings.catch_warnings():
        warnings.simplefilter("error", tfdiff.DiffCutWarning)  # the schedule finishes: nothing may be cut
        diff_model.fit(x, y, epochs=6, batch_size=32, verbose=0, callbacks=tfdiff.callbacks(diff_model))
        diff = tfdiff.extract(diff_model, generation=1)
    assert diff.cut_values == 0 and {e.name for e in diff.entries} >= {"hidden/0/kernel", "scale/0/w"}
    folded = tfdiff.fold(base, diff)
    # float32 values on the wire: the shipped model is the trained one.
    assert np.abs(folded(x).numpy() - diff_model(x).numpy()).max() <= 1e-5
    # The server's CLI converts the saved subclassed base, naming its custom classes; the device patches it.
    base.save(tmp_path / "gen0.keras")
    diff.save(tmp_path / "gen1.tfdiff")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, str(where)]))
    for command in (["device", "convert", "gen0.keras", "gen0.tflite", "--custom-objects", "usermodels:Net",
                     "usermodels:Scale"],
                    ["device", "apply", "gen0.tflite", "gen1.tfdiff", "--allow-unsigned", "--out", "gen1.tflite",
                     "--json"]):
        proc = subprocess.run([sys.executable, "-m"] + command, cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["generation"] == 1
    assert (tmp_path / "gen1.tflite").read_bytes() == device.convert(folded)


def test_unfinished_schedule_and_cut_values_warn_and_strict_raises():
    base = keras.Sequential([keras.Input((16,)), keras.layers.Dense(64, activation="relu", name="h"),
                             keras.layers.Dense(4, name="o")])
    diff_model = tfdiff.wrap(base, tfdiff.SparseDiff(compression=10.0))  # end_step 1000, far beyond this fit
    diff_model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    with pytest.warns(tfdiff.DiffCutWarning, match="stopped at step 16 of a pruning schedule that ends at step 1000"):
        diff_model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=tfdiff.callbacks(diff_model))
    with pytest.raises(ValueError, match="strict=True"):
        tfdiff.extract(diff_model, generation=1, strict=True)
    with pytest.warns(tfdiff.DiffCutWarning, match=r"extract cut \d+ of \d+ diff values .* step 16"):
        diff = tfdiff.extract(diff_model, generation=1)
    assert diff.cut_values > 0
    with pytest.raises(TypeError):
        tfdiff.extract(diff_model)  # no default generation: every device refuses generation 0
    with pytest.raises(ValueError, match="Received: generation=-1"):
        tfdiff.extract(diff_model, generation=-1)


def test_hand_wrapped_layers_are_found_and_planned_anywhere(user_module):
    usermodels, _ = user_module
    method = tfdiff.SparseDiff(compression=8.0, end_step=40, frequency=5)
    _, diff_model, x, y = _subclassed_pair(usermodels, method)
    assert [type(c).__name__ for c in tfdiff.callbacks(diff_model)] == ["DiffPruning"]
    diff_model.fit(x, y, epochs=6, batch_size=32, verbose=0, callbacks=tfdiff.callbacks(diff_model))
    planned = diff_model.hidden.method.kept_fraction
    assert planned is not None and diff_model.out.method.kept_fraction == planned
    kept = sum(int(m.sum()) for w in (diff_model.hidden, diff_model.scale, diff_model.out) for m in w.masks.values())
    total = sum(m.size for w in (diff_model.hidden, diff_model.scale, diff_model.out) for m in w.masks.values())
    assert kept <= max(3, round(total * planned) + 3)  # tfmot keeps round(n * (1 - s)) per weight, at least one


def test_a_wrapped_model_saves_loads_and_goes_on_training(tmp_path):
    base = keras.Sequential([keras.Input((16,)), keras.layers.Dense(64, activation="relu", name="h"),
                             keras.layers.Dense(4, name="o")])
    diff_model = tfdiff.wrap(base, tfdiff.SparseDiff(compression=10.0, end_step=40, frequency=5))
    diff_model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(128)
    with pytest.warns(tfdiff.DiffCutWarning):  # stopped at step 16 of 40, on purpose
        diff_model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=tfdiff.callbacks(diff_model))
    diff_model.save(tmp_path / "m.keras")
    back = tfdiff.load_model(tmp_path / "m.keras")
    assert int(back.layers[0].pruning_step.numpy()) == 16
    np.testing.assert_array_equal(back(x).numpy(), diff_model(x).numpy())
    back.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=tfdiff.callbacks(back))  # to the schedule's end
    assert int(back.layers[0].pruning_step.numpy()) == 40 and int(back.optimizer.iterations.numpy()) == 40
    with warnings.catch_warnings():
        warnings.simplefilter("error", tfdiff.DiffCutWarning)
        assert tfdiff.extract(back, generation=1).cut_values == 0
    with pytest.raises(ValueError, match="does not exist"):
        tfdiff.load_model(tmp_path / "missing.keras")


def test_batchnorm_statistics_get_no_diff():
    base = keras.Sequential([keras.Input((8, 16)), keras.layers.Conv1D(32, 3, name="conv"),
                             keras.layers.BatchNormalization(name="bn")])
    diff_model = tfdiff.wrap(base, tfdiff.HashDiff(compression=2.0))
    names = sorted(w.name.split("/")[-1].split(":")[0] for w in diff_model.trainable_weights)
    assert names == ["diff_beta_table", "diff_bias_table", "diff_gamma_table", "diff_kernel_table"]
    assert sorted(e.name for e in tfdiff.extract(diff_model, generation=1).entries) == [
        "bn/0/gamma", "bn/1/beta", "conv/0/kernel", "conv/1/bias"]


@pytest.mark.slow
def test_conversion_dead_ends_name_the_cause():
    conv_relu_bn = keras.Sequential([keras.Input((8, 3)), keras.layers.Conv1D(4, 3, activation="relu", name="conv"),
                                     keras.layers.BatchNormalization(name="bn")])
    conv_relu_bn.layers[1].moving_variance.assign(np.full(4, 2.0, np.float32))
    with pytest.raises(device.ConversionError, match="relu activation sits between them") as refused:
        device.convert(tfdiff.fold_batchnorm(conv_relu_bn))
    assert "fold_batchnorm" not in str(refused.value).split(".", 1)[1]  # not the hint that did not help

    @keras.utils.register_keras_serializable(package="test")
    class Times(keras.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(name="w", shape=shape[-1:], initializer="ones")

        def call(self, x):
            return x * self.w

    dense_times = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, name="d"), Times(name="times")])
    dense_times.layers[1].w.assign(np.arange(1, 5, dtype=np.float32))
    with pytest.raises(device.ConversionError, match=r"custom layer times \(Times\)"):
        device.convert(dense_times)


def _rows_add_up(summary):
    lines = summary.splitlines()
    column = lines[0].index("entry bytes")
    cells = [line[column:].split()[0] for line in lines[2:]]
    *parts, total = (int(cell) for cell in cells)
    return sum(parts) == total


def test_show_counts_each_weight_once_and_adds_up_to_the_file():
    rng = np.random.default_rng(0)
    chain = [tfdiff.Diff("hash", [Entry("w", (400,), "hash", rng.normal(size=50).astype(np.float16), None, g, 3)],
                         bytes([g]) * 32, bytes([g + 1]) * 32, generation=g, seed=g, num_hashes=3) for g in (1, 2, 3)]
    composed = tfdiff.compose(chain)
    assert composed.num_params == 400 and composed.summary().count("\nw ") == 1
    assert "table x3" in composed.summary() and _rows_add_up(composed.summary())
    deltas = rng.integers(-3, 4, 300).astype(np.int8)
    int8 = tfdiff.Diff("sparse", [Entry("k", (60, 50), "sparse", deltas[deltas != 0],
                                        np.sort(rng.choice(3000, int((deltas != 0).sum()), replace=False)))],
                       b"a" * 32, b"b" * 32, generation=1)
    assert "int8 deltas" in int8.summary() and _rows_add_up(int8.summary())


def test_device_status_reports_generation_digests_key_and_rollback(tmp_path, monkeypatch):
    monkeypatch.delenv("TFDIFF_PUBLIC_KEY", raising=False)
    monkeypatch.setenv("TFDIFF_KEY_DIR", str(tmp_path / "keys"))
    (tmp_path / "keys").mkdir()
    model = tmp_path / "model.tflite"
    shutil.copyfile(os.path.join(GOLDEN, "base.tflite"), model)
    before = device.status(model)
    assert before["generation"] == 0 and "no trusted public key" in before["trusted_keys"]["error"]
    assert before["rollback"] is None and before["state_matches"]
    device.apply(model, os.path.join(GOLDEN, "sparse.tfdiff"), allow_unsigned=True)
    after = device.status(model)
    assert after["generation"] == 1 and after["rollback"] == {"to_generation": 0}
    assert after["weights_digest"] != before["weights_digest"] and after["graph_digest"] == before["graph_digest"]
    device.signing.keygen(tmp_path / "k.pem", tmp_path / "k.pub")
    proc = subprocess.run([sys.executable, "-m", "device", "trust", str(tmp_path / "k.pub")], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([sys.executable, "-m", "device", "status", str(model), "--json"], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    report = json.loads(proc.stdout)
    keys = [k["path"] for k in report.pop("trusted_keys")]
    assert proc.returncode == 0 and keys == [str(tmp_path / "keys" / "k.pub.pem")]
    assert report == {k: v for k, v in after.items() if k != "trusted_keys"}
    proc = subprocess.run([sys.executable, "-m", "device", "status", str(tmp_path / "none.tflite")],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "does not exist" in proc.stderr
