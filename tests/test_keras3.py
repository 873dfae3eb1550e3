"""Keras 3 models (`import keras`): the same diffs, folds and device patches as tf_keras models."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfdiff
from device import applier, convert
from device.tflite import TFLiteFile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPARSE = tfdiff.SparseDiff(compression=8.0, end_step=12, frequency=3)
HASH = tfdiff.HashDiff(compression=8.0, seed=3)
LOWRANK = tfdiff.LowRankDiff(compression=8.0, seed=3)
SEED = tfdiff.SeedDiff(compression=8.0, seed=3)


def _mixed_model():
    """Dense, Conv1D, BatchNormalization, Embedding, a Bidirectional LSTM and a GRU: every kind the issue names."""
    keras.utils.set_random_seed(0)
    tokens = keras.Input((10,), dtype="int32")
    x = keras.layers.Embedding(300, 16, name="emb")(tokens)
    x = keras.layers.Conv1D(16, 3, padding="same", name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.Bidirectional(keras.layers.LSTM(12, return_sequences=True), name="bi")(x)
    x = keras.layers.GRU(12, name="gru")(x)
    return keras.Model(tokens, keras.layers.Dense(4, name="out")(x))


def _data(model, n=64):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 300, (n, 10)).astype("int32")
    return x, rng.normal(size=(n, model.output.shape[-1])).astype("float32")


def _patched_equals_fold(tmp_path, base, diff):
    """Apply `diff` to `base`'s .tflite with the device's applier; compare every weight's bytes with convert(fold)."""
    device_model = tmp_path / "device.tflite"
    convert(base, device_model)
    diff.save(tmp_path / "gen1.tfdiff")
    applier.apply(device_model, tmp_path / "gen1.tfdiff", allow_unsigned=True)
    folded = tfdiff.fold(base, diff)
    expected, patched = TFLiteFile(convert(folded)), TFLiteFile(device_model.read_bytes())
    for name in tfdiff.named_weights(folded):
        held = [bytes(f.buffer_bytes(g.buffer)[4 * g.offset:4 * (g.offset + g.count)])
                for f in (patched, expected) for g in f.weight_map().segments(name)]
        assert held[:len(held) // 2] == held[len(held) // 2:], name
    return folded


@pytest.mark.slow
@pytest.mark.parametrize("method", [SPARSE, HASH, LOWRANK, SEED], ids=["sparse", "hash", "lowrank", "seed"])
def test_a_mixed_keras3_model_learns_a_diff_in_budget_applied_bit_exact(tmp_path, method):
    with pytest.raises(ValueError, match="fold_batchnorm"):
        convert(_mixed_model())
    base = tfdiff.fold_batchnorm(_mixed_model())
    x, y = _data(base)
    diff_model = tfdiff.wrap(base, method)
    assert all(type(w).__module__ == "tfdiff.keras3" for w in diff_model.layers[1:] if w.weights)
    np.testing.assert_array_equal(diff_model.predict(x, verbose=0), base.predict(x, verbose=0))
    frozen = tfdiff.named_weights(diff_model)
    diff_model.compile(keras.optimizers.Adam(0.01), "mse")
    diff_model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=tfdiff.callbacks(diff_model))
    for name, value in tfdiff.named_weights(diff_model).items():
        np.testing.assert_array_equal(value, frozen[name], err_msg=f"base weight {name} moved")
    diff = tfdiff.extract(diff_model, generation=1, strict=True)
    params = sum(v.size for v in tfdiff.named_weights(base).values())
    assert diff.nbytes + 68 <= tfdiff.budget_bytes(params, 8.0) and diff.cut_values == 0
    folded = _patched_equals_fold(tmp_path, base, diff)
    np.testing.assert_allclose(folded.predict(x, verbose=0), diff_model.predict(x, verbose=0), atol=1e-4)
    assert not np.allclose(folded.predict(x, verbose=0), base.predict(x, verbose=0))


def test_keras3_masks_equal_tfmots_on_the_same_values_and_steps():
    """tfdiff's own schedule and magnitude rule (Keras 3) against tfmot's Pruning, step by step."""
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.sparsity.keras.pruning_impl import Pruning

    from tfdiff.pruning import magnitude_mask, scheduled_sparsity

    method = tfdiff.SparseDiff(begin_step=2, end_step=40, frequency=3, kept_fraction=0.07)
    rng = np.random.default_rng(0)
    value = rng.normal(size=(37, 29)).astype("float32")
    weight, mask = tf.Variable(value), tf.Variable(np.ones_like(value))
    threshold, step = tf.Variable(0.0), tf.Variable(0, dtype=tf.int64)
    pruning = Pruning(training_step_fn=lambda: step, pruning_vars=[(weight, mask, threshold)],
                      pruning_schedule=method.schedule(), block_size=(1, 1), block_pooling_type="AVG")
    ours, updates = np.ones_like(value), 0
    for s in range(1, 46):
        value = value + rng.normal(scale=0.1, size=value.shape).astype("float32")
        weight.assign(value)
        step.assign(s)
        pruning.conditional_mask_update()
        update, sparsity = scheduled_sparsity(method, s)
        if update:
            ours, updates = magnitude_mask(value, sparsity), updates + 1
        np.testing.assert_array_equal(ours, mask.numpy(), err_msg=f"step {s}")
    assert updates == 13 and ours.sum() == max(1, round(value.size * 0.07))


@pytest.mark.slow
def test_a_wrapped_keras3_model_saves_loads_and_trains_on(tmp_path):
    keras.utils.set_random_seed(0)
    base = keras.Sequential([keras.Input((24,)), keras.layers.Dense(64, activation="relu", name="hidden"),
                             keras.layers.Dense(8, name="out")])
    x, y = np.random.default_rng(0).normal(size=(64, 24)).astype("float32"), np.zeros((64, 8), "float32")
    diff_model = tfdiff.wrap(base, tfdiff.SparseDiff(compression=8.0, end_step=16, frequency=2))
    diff_model.compile(keras.optimizers.Adam(0.01), "mse")
    diff_model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=tfdiff.callbacks(diff_model))
    path = tmp_path / "diff_model.keras"
    diff_model.save(path)
    loaded = tfdiff.load_model(path)
    assert type(loaded.layers[0]).__module__ == "tfdiff.keras3"
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), diff_model.predict(x, verbose=0))
    assert int(loaded.layers[0].pruning_step.numpy()) == 8
    loaded.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=tfdiff.callbacks(loaded))
    assert int(loaded.layers[0].pruning_step.numpy()) == 16  # the schedule went on, and ended
    diff = tfdiff.extract(loaded, generation=1, strict=True)
    assert diff.cut_values == 0 and diff.nbytes + 68 <= tfdiff.budget_bytes(24 * 64 + 64 + 64 * 8 + 8, 8.0)


@pytest.mark.parametrize("method", [tfdiff.SparseDiff(compression=8.0, end_step=12, frequency=2),
                                    tfdiff.HashDiff(compression=8.0)], ids=["sparse", "hash"])
def test_a_keras3_blc_trains_from_scratch_in_budget_and_strips(method):
    from tfdiff.baseline import compressed_nbytes

    keras.utils.set_random_seed(0)
    fresh = keras.Sequential([keras.Input((24,)), keras.layers.Dense(64, activation="relu", name="hidden"),
                              keras.layers.Dense(8, name="out")])
    blc = tfdiff.compress_baseline(fresh, method, seed=1)
    if method.prunable:  # starts as the fresh model itself; biases are not pruned
        x0 = np.ones((2, 24), "float32")
        np.testing.assert_allclose(blc.predict(x0, verbose=0), fresh.predict(x0, verbose=0), atol=1e-6)
        assert [sorted(w.masks) for w in blc.layers] == [[0], [0]]
    x = np.random.default_rng(0).normal(size=(64, 24)).astype("float32")
    y = np.random.default_rng(1).normal(size=(64, 8)).astype("float32")
    blc.compile(keras.optimizers.Adam(0.01), "mse")
    before = blc.evaluate(x, y, verbose=0)
    blc.fit(x, y, batch_size=16, epochs=5, verbose=0, callbacks=tfdiff.callbacks(blc))
    assert blc.evaluate(x, y, verbose=0) < before
    assert compressed_nbytes(blc) + 68 <= tfdiff.budget_bytes(24 * 64 + 64 + 64 * 8 + 8, 8.0)
    for wrapper in blc.layers if method.prunable else ():  # the kernels pruned to the planned share
        mask = wrapper.masks[0]
        assert mask.sum() == max(1, round(mask.size * wrapper.method.kept_fraction)) < mask.size
    plain = tfdiff.strip(blc)
    assert type(plain).__module__.startswith("keras.") and plain.trainable_weights
    np.testing.assert_allclose(plain.predict(x, verbose=0), blc.predict(x, verbose=0), atol=1e-5)


def test_a_keras3_model_refuses_what_it_does_not_take_yet():
    base = keras.Sequential([keras.Input((24,)), keras.layers.Dense(64, name="hidden")])
    with pytest.raises(ValueError, match="coded"):
        tfdiff.wrap(base, tfdiff.SparseDiff(compression=4.0, budget="coded"))
    with pytest.raises(ValueError, match="int8"):
        tfdiff.DiffWrapper(keras.layers.Dense(3), SPARSE, int8_weights=[0])


_EXAMPLE = """
import keras, numpy as np, tfdiff
keras.utils.set_random_seed(0)
base = keras.Sequential([keras.Input((40,)), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)])
x, y = np.random.rand(512, 40).astype("f4"), np.random.randint(0, 10, 512)
diff_model = tfdiff.wrap(base, tfdiff.SparseDiff(compression=20.0, end_step=60, frequency=10))
diff_model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
diff_model.fit(x, y, epochs=4, batch_size=32, callbacks=tfdiff.callbacks(diff_model), verbose=0)
diff = tfdiff.extract(diff_model, generation=1, strict=True)
new_model = tfdiff.fold(base, diff)
assert np.allclose(new_model.predict(x, verbose=0), diff_model.predict(x, verbose=0), atol=1e-4)
import device                              # the device's side: the .tflite patched in place
device.convert(base, "gen0.tflite")        # on JAX, converted by a TensorFlow-backend process
diff.save("gen1.tfdiff")
device.apply("gen0.tflite", "gen1.tfdiff", allow_unsigned=True)
assert device.status("gen0.tflite")["weights_digest"] == diff.target_digest.hex()   # fold's weights, bit for bit
print(keras.backend.backend(), diff.nbytes)
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_the_keras3_example_runs_on_each_backend(backend, tmp_path):
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", _EXAMPLE], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-2] == backend


def test_a_subclassed_keras3_models_sparse_diff_is_planned_not_cut():
    """Hand-made DiffWrappers in a subclassed Keras 3 model: callbacks plan their budget when fit starts."""
    method = tfdiff.SparseDiff(compression=8.0, end_step=12, frequency=3)

    class Net(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.hidden = tfdiff.DiffWrapper(keras.layers.Dense(64, activation="relu"), method)
            self.head = tfdiff.DiffWrapper(keras.layers.Dense(4), method)

        def call(self, x):
            return self.head(self.hidden(x))

    model = Net()
    x, y = np.random.default_rng(0).normal(size=(64, 24)).astype("float32"), np.zeros((64, 4), "float32")
    model(x[:1])
    model.compile(keras.optimizers.Adam(0.01), "mse")
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=tfdiff.callbacks(model))
    assert model.hidden.method.kept_fraction is not None and int(model.hidden.pruning_step.numpy()) == 12
    diff = tfdiff.extract(model, generation=1, strict=True)
    assert diff.cut_values == 0 and diff.nbytes + 68 <= tfdiff.budget_bytes(24 * 64 + 64 + 64 * 4 + 4, 8.0)
