import numpy as np
import pytest

import tfdiff
from device.format import Entry
from tfdiff import keras
from tests.helpers import run_diff_layer_test
from tfdiff.baseline import compressed_nbytes
from tfdiff.budget import lowrank_inner

SPARSE = tfdiff.SparseDiff(compression=4.0, begin_step=0, end_step=2, frequency=1)
HASH = tfdiff.HashDiff(compression=4.0, num_hashes=3, seed=5)
LOWRANK = tfdiff.LowRankDiff(compression=4.0, seed=5)
SEED = tfdiff.SeedDiff(compression=4.0, seed=5)

# Sizes keep each layer's diff above the fixed ~190 bytes of header and signature.
LAYERS = {
    "dense": (lambda: keras.layers.Dense(32), (24,), {}),
    "conv1d": (lambda: keras.layers.Conv1D(32, 3), (10, 8), {}),
    "conv2d": (lambda: keras.layers.Conv2D(16, 3), (6, 6, 4), {}),
    "embedding": (lambda: keras.layers.Embedding(200, 16), (7,), {"input_dtype": "int32", "vocab": 200}),
    "lstm": (lambda: keras.layers.LSTM(16, return_sequences=True), (4, 8), {}),
    "gru": (lambda: keras.layers.GRU(16), (4, 8), {}),
    "bidirectional": (lambda: keras.layers.Bidirectional(keras.layers.LSTM(16)), (4, 8), {}),
}


@pytest.mark.parametrize("method", [SPARSE, HASH, LOWRANK, SEED], ids=["sparse", "hash", "lowrank", "seed"])
# The bidirectional LSTM takes ten seconds a case: the full suite's, not the fast part's.
@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) if k == "bidirectional" else k
                                  for k in sorted(LAYERS)])
def test_layer_identity_frozen_base_and_training(kind, method):
    make, shape, kwargs = LAYERS[kind]
    base, diff_model, x = run_diff_layer_test(make(), method, shape, **kwargs)
    diff = tfdiff.extract(diff_model, generation=1)
    folded = tfdiff.fold(base, diff)
    assert tfdiff.named_weights(folded).keys() == tfdiff.named_weights(base).keys()


def _mlp(units=64, inputs=32, outputs=8, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(units, activation="tanh", name="hidden"),
                             keras.layers.Dense(outputs, name="out")])


def _data(n=128, inputs=32, outputs=8):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, inputs)).astype("float32"), rng.normal(size=(n, outputs)).astype("float32")


def _train(model, steps=24):
    model.compile(keras.optimizers.Adam(0.01), "mse")
    x, y = _data(16 * steps // 3, inputs=model.inputs[0].shape[-1], outputs=model.outputs[0].shape[-1])
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=tfdiff.callbacks(model))


@pytest.mark.parametrize("budget", ["wire", "nominal"])
def test_sparse_reaches_its_planned_schedule_and_fits_budget(tmp_path, budget):
    base = _mlp(units=256)  # large enough for the nominal N / 20 values to fit 4N / 20 bytes
    method = tfdiff.SparseDiff(compression=20.0, begin_step=0, end_step=20, frequency=4, budget=budget)
    diff_model = tfdiff.wrap(base, method)
    _train(diff_model)
    planned = diff_model.layers[0].method.kept_fraction
    if budget == "nominal":
        assert planned == pytest.approx(1 / 20.0)
    for layer in diff_model.layers:
        for weight, mask, _ in layer.pruning_vars:  # DiffWrapper prunes itself
            # tfmot keeps round(N * (1 - s)) values, and at least one.
            assert mask.numpy().sum() == max(1, round(mask.numpy().size * planned)), weight.name
    diff = tfdiff.extract(diff_model, generation=1)
    path = tmp_path / "g1.tfdiff"
    diff.save(path)
    params = sum(v.size for v in tfdiff.named_weights(base).values())
    assert path.stat().st_size == diff.nbytes
    assert path.stat().st_size + 68 <= 4 * params / 20.0
    assert diff.cut_values == 0  # planned at wrap time: what trained is what ships
    assert "total (file)" in diff.summary()


@pytest.mark.parametrize("method", [tfdiff.SparseDiff(compression=20.0, end_step=12, frequency=3),
                                    tfdiff.HashDiff(compression=20.0)], ids=["sparse", "hash"])
def test_a_diff_spends_at_least_90_percent_of_its_byte_budget(method):
    """The plan fills the budget with raw entries; entropy coding then ships fewer bytes."""
    from device.format import FILE_OVERHEAD_BYTES, encode_entry
    base = _mlp(units=256, inputs=128, outputs=32)
    diff_model = tfdiff.wrap(base, method)
    _train(diff_model)
    diff = tfdiff.extract(diff_model, generation=1)
    budget = 4 * sum(v.size for v in tfdiff.named_weights(base).values()) / 20.0
    raw = FILE_OVERHEAD_BYTES + sum(len(encode_entry(e)) for e in diff.entries)
    assert 0.9 * budget <= raw + 68 <= budget
    assert diff.nbytes <= raw
    assert diff.cut_values == 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sparse", "hash"])
def test_a_coded_budget_is_spent_after_entropy_coding(kind):
    """budget="coded": the file, LZMA2-coded and signed, fills at least 97 % of 4N / compression bytes with
    at most 1 % of its values cut, where the "wire" plan leaves a fifth unspent."""
    base = _mlp(units=256, inputs=128, outputs=32)
    params = sum(v.size for v in tfdiff.named_weights(base).values())
    budget = tfdiff.budget_bytes(params, 20.0)
    spent = {}
    for plan in ("wire", "coded"):
        method = (tfdiff.SparseDiff(compression=20.0, end_step=24, frequency=3, budget=plan) if kind == "sparse"
                  else tfdiff.HashDiff(compression=20.0, budget=plan))
        diff_model = tfdiff.wrap(base, method)
        _train(diff_model, steps=36)
        diff = tfdiff.extract(diff_model, generation=1)
        values = sum(np.count_nonzero(e.values) for e in diff.entries)
        assert diff.nbytes + 68 <= budget and diff.cut_values <= 0.01 * (values + diff.cut_values), plan
        spent[plan] = (diff.nbytes + 68) / budget
        if plan == "coded" and kind == "sparse":  # measured on the diff halfway: more values than planned
            assert diff_model.layers[0].method.kept_fraction > tfdiff.SparseDiff(
                compression=20.0, budget="wire").planned(
                {n: v.shape for n, v in tfdiff.named_weights(base).items()}).kept_fraction
    assert spent["coded"] >= 0.97 and spent["wire"] < 0.93, spent


def test_hash_tables_are_as_large_as_the_budget_allows():
    base = _mlp(units=256)
    nominal = tfdiff.wrap(base, tfdiff.HashDiff(compression=10.0, seed=2, budget="nominal"))
    for layer in nominal.layers:
        for base_w, table in zip(layer.base_weights, layer.diff_weights):
            assert table.shape[0] == max(1, int(np.prod(base_w.shape)) // 10)
    wire = tfdiff.wrap(base, tfdiff.HashDiff(compression=10.0, seed=2))
    sizes = [t.shape[0] for layer in wire.layers for t in layer.diff_weights]
    assert sum(sizes) > 1.5 * sum(t.shape[0] for layer in nominal.layers for t in layer.diff_weights)
    params = sum(v.size for v in tfdiff.named_weights(base).values())
    assert tfdiff.extract(wire, generation=1).nbytes + 68 <= 4 * params / 10.0


def test_a_budget_too_small_for_the_headers_fails_at_wrap_time():
    small = _mlp(units=16, inputs=24, outputs=4)
    with pytest.raises(tfdiff.BudgetError, match=r"smallest feasible compression is \d+\.\dx"):
        tfdiff.wrap(small, tfdiff.SparseDiff(compression=20.0))
    tiny = _mlp(units=4, inputs=3, outputs=2)
    with pytest.raises(tfdiff.BudgetError, match=r"too small for any diff budget"):
        tfdiff.wrap(tiny, tfdiff.SparseDiff(compression=2.0))


def test_fold_of_hand_made_diffs_matches_the_formula():
    base = _mlp(units=4, inputs=3, outputs=2)
    weights = tfdiff.named_weights(base)
    kernel = weights["hidden/0/kernel"]
    from device.digest import weights_digest
    sparse = Entry("hidden/0/kernel", kernel.shape, "sparse", np.float16([0.25, -1.5]), np.array([1, 10]))
    diff = tfdiff.Diff("sparse", [sparse], weights_digest(weights), b"")
    expected = kernel.copy().reshape(-1)
    expected[1] += np.float32(0.25)
    expected[10] += np.float32(-1.5)
    diff.target_digest = weights_digest({**weights, "hidden/0/kernel": expected.reshape(kernel.shape)})
    folded = tfdiff.named_weights(tfdiff.fold(base, diff))
    np.testing.assert_array_equal(folded["hidden/0/kernel"], expected.reshape(kernel.shape))
    np.testing.assert_array_equal(folded["out/0/kernel"], weights["out/0/kernel"])

    table = np.float16([0.5, -0.25, 0.125])
    hashed = Entry("hidden/0/kernel", kernel.shape, "hash", table, None, seed=9, num_hashes=2)
    from tests.test_hashing import reference_hash
    by_hand = kernel.copy().reshape(-1)
    for p in range(by_hand.size):
        shared = np.float32(table[reference_hash(p, 9, 0, 3)]) + np.float32(table[reference_hash(p, 9, 1, 3)])
        by_hand[p] = by_hand[p] + np.abs(by_hand[p]) * shared
    diff = tfdiff.Diff("hash", [hashed], weights_digest(weights), b"", seed=9, num_hashes=2)
    diff.target_digest = weights_digest({**weights, "hidden/0/kernel": by_hand.reshape(kernel.shape)})
    folded = tfdiff.named_weights(tfdiff.fold(base, diff))
    np.testing.assert_array_equal(folded["hidden/0/kernel"], by_hand.reshape(kernel.shape))


def test_fold_rejects_a_diff_for_another_model():
    diff_model = tfdiff.wrap(_mlp(seed=0), HASH)
    diff = tfdiff.extract(diff_model, generation=1)
    with pytest.raises(tfdiff.DiffMismatchError, match="base weights differ"):
        tfdiff.fold(_mlp(seed=1), diff)


def test_folded_model_matches_trained_diff_model_closely():
    base = _mlp()
    diff_model = tfdiff.wrap(base, tfdiff.HashDiff(compression=8.0, value_dtype="float32"))
    diff_model.compile(keras.optimizers.Adam(0.01), "mse")
    x, y = _data()
    diff_model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    folded = tfdiff.fold(base, tfdiff.extract(diff_model, generation=1))
    np.testing.assert_allclose(folded(x).numpy(), diff_model(x).numpy(), atol=1e-5)
    assert not np.allclose(folded(x).numpy(), base(x).numpy(), atol=1e-3)


def test_nested_functional_model_like_an_rnnt():
    keras.utils.set_random_seed(3)
    feats = keras.Input((None, 6), name="feats")
    encoder = keras.Model(feats, keras.layers.Dense(16, name="enc_proj")(
        keras.layers.LSTM(16, return_sequences=True, name="enc_lstm")(feats)), name="encoder")
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    prediction = keras.Model(tokens, keras.layers.LSTM(8, return_sequences=True, name="pred_lstm")(
        keras.layers.Embedding(10, 4, name="pred_embed")(tokens)), name="prediction")
    enc, pred = encoder(feats), prediction(tokens)
    joint_in = keras.layers.Concatenate()([enc, pred])
    model = keras.Model([feats, tokens], keras.layers.Dense(10, name="joint")(joint_in))
    diff_model = tfdiff.wrap(model, HASH, exclude=["pred_embed"])
    names = set(tfdiff.named_weights(diff_model))
    assert {"encoder/enc_lstm/0/kernel", "prediction/pred_lstm/1/recurrent_kernel", "joint/0/kernel"} <= names
    x = [np.ones((2, 4, 6), "float32"), np.ones((2, 4), "int32")]
    np.testing.assert_array_equal(diff_model(x).numpy(), model(x).numpy())
    wrapped = {e.name.rsplit("/", 2)[0] for e in tfdiff.extract(diff_model, generation=1).entries}
    assert "prediction/pred_embed" not in wrapped and "encoder/enc_proj" in wrapped


def test_subclassed_model_with_diffwrapper_layers():
    class Tiny(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = tfdiff.DiffWrapper(keras.layers.Dense(64, name="hidden"), HASH)
            self.out = tfdiff.DiffWrapper(keras.layers.Dense(2, name="out"), HASH)

        def call(self, x):
            return self.out(self.hidden(x))

    model = Tiny()
    model(np.ones((1, 32), "float32"))
    assert [w.name.split("/")[-1] for w in model.trainable_weights][0].startswith("diff_kernel")
    diff = tfdiff.extract(model, generation=1)
    assert [e.name for e in diff.entries][0] == "hidden/0/kernel"


def test_a_low_rank_diff_plans_its_ranks_from_the_budget_and_patches_as_the_formula():
    """Ranks fill the budget with whole numbers; vectors get no diff; fold is W + A B, term by term."""
    from device.format import decode
    from device.patch import factors
    base = _mlp(units=256, inputs=128, outputs=32)
    method = tfdiff.LowRankDiff(compression=20.0)
    diff_model = tfdiff.wrap(base, method)
    planned = diff_model.layers[0].method
    assert [planned.inner(s) for s in ((128, 256), (256, 32))] == [
        lowrank_inner(s, planned.value_fraction) for s in ((128, 256), (256, 32))]
    _train(diff_model)
    diff = tfdiff.extract(diff_model, generation=1)
    assert [e.name for e in diff.entries] == ["hidden/0/kernel", "out/0/kernel"]  # no bias diff
    budget = tfdiff.budget_bytes(diff.num_params, 20.0)
    assert diff.cut_values == 0 and 0.8 * budget <= diff.nbytes + 68 <= budget
    again = decode(diff.to_bytes())
    folded = tfdiff.named_weights(tfdiff.fold(base, again))
    for entry in again.entries:
        a, b = factors(entry)
        assert a.shape[1] == entry.inner >= 1
        expected = tfdiff.named_weights(base)[entry.name] + a.astype(np.float64) @ b.astype(np.float64)
        np.testing.assert_allclose(folded[entry.name], expected, atol=1e-6)
    x = _data(inputs=128, outputs=32)[0]
    assert np.abs(diff_model(x).numpy() - tfdiff.fold(base, diff)(x).numpy()).max() < 1e-2
    assert np.abs(diff_model(x).numpy() - base(x).numpy()).max() > 1e-2  # the diff did change the model
    with pytest.raises(ValueError, match="diffs matrices"):
        tfdiff.wrap(keras.Sequential([keras.Input((4,)), keras.layers.LayerNormalization()]), method)
    with pytest.raises(tfdiff.BudgetError, match="rank-1"):
        tfdiff.wrap(_mlp(units=8, inputs=400, outputs=400), tfdiff.LowRankDiff(compression=20.0))


def _two_branches(seed=0, idle_scale=0.0):
    """x -> "matters" -> out, and x -> "idle" -> x `idle_scale` -> out: at 0 the idle branch's diff cannot
    move the loss.

    (Adam moves every diff value about its learning rate a step whatever the
    gradient's scale, so a branch that merely matters less grows as large a diff.)
    """
    keras.utils.set_random_seed(seed)
    x = keras.Input((32,))
    matters = keras.layers.Dense(64, activation="tanh", name="matters")(x)
    idle = keras.layers.Rescaling(idle_scale)(keras.layers.Dense(64, activation="tanh", name="idle")(x))
    return keras.Model(x, keras.layers.Dense(8, name="out")(keras.layers.Add()([matters, idle])))


def test_a_global_allocation_puts_the_values_where_the_diff_matters():
    """One threshold for the whole model: the layer that matters gets most values, within the same bytes."""
    kept = {}
    for allocation in ("layer", "global"):
        base = _two_branches()
        diff_model = tfdiff.wrap(base, tfdiff.SparseDiff(compression=20.0, end_step=20, frequency=4,
                                                         allocation=allocation))
        _train(diff_model)
        diff = tfdiff.extract(diff_model, generation=1)
        assert diff.cut_values == 0 and diff.nbytes + 68 <= tfdiff.budget_bytes(diff.num_params, 20.0)
        kept[allocation] = {e.name: e.values.size for e in diff.entries}
        folded = tfdiff.fold(base, diff)(_data()[0]).numpy()
        assert np.abs(folded - diff_model(_data()[0]).numpy()).max() < 1e-2
    # Per layer, the idle kernel's share is spent on zeros (which do not travel); globally it goes to the others.
    assert kept["layer"]["idle/0/kernel"] == kept["global"]["idle/0/kernel"] == 0
    assert kept["global"]["matters/0/kernel"] > 1.5 * kept["layer"]["matters/0/kernel"]


def test_a_global_allocation_weighed_by_sensitivity_starves_a_branch_the_loss_barely_feels():
    """A branch at x 0.01 grows as large a diff under Adam; weighed by its measured gradient, it keeps few values."""
    import tensorflow as tf
    held_out = [_data(n=64)[0][i:i + 16] for i in range(0, 64, 16)]
    targets = _data(n=16)[1]
    kept = {}
    for weighed in (False, True):
        base = _two_branches(idle_scale=0.01)
        sensitivity = tfdiff.weight_sensitivity(
            base, lambda m, x: tf.reduce_mean((m(x) - targets) ** 2), held_out) if weighed else None
        if weighed:  # the measured scales: the quiet branch's gradients are about 100 times smaller
            assert sensitivity["idle/0/kernel"] < 0.05 * sensitivity["matters/0/kernel"]
        diff_model = tfdiff.wrap(base, tfdiff.SparseDiff(compression=20.0, end_step=20, frequency=4,
                                                         allocation="global", sensitivity=sensitivity))
        _train(diff_model)
        diff = tfdiff.extract(diff_model, generation=1)
        assert diff.cut_values == 0 and diff.nbytes + 68 <= tfdiff.budget_bytes(diff.num_params, 20.0)
        kept[weighed] = {e.name: e.values.size for e in diff.entries}
    assert kept[False]["idle/0/kernel"] > 20  # unweighed, Adam's equal steps win the quiet branch values
    assert kept[True]["idle/0/kernel"] < 0.25 * kept[False]["idle/0/kernel"]
    felt = {w: kept[w]["matters/0/kernel"] + kept[w]["out/0/kernel"] for w in kept}  # where its values went
    assert felt[True] > felt[False] + 0.5 * kept[False]["idle/0/kernel"]
    with pytest.raises(ValueError, match="allocation='global'"):
        tfdiff.SparseDiff(sensitivity={"idle/0/kernel": 0.1})


def test_a_seed_diff_ships_only_its_scalings_and_patches_as_the_formula():
    """Only d and b travel; the device draws U and V from the entry's seed; fold is W + ((U d) V) b, term by term."""
    from device.format import decode
    from device.patch import seed_bases
    base = _mlp(units=256, inputs=128, outputs=32)
    diff_model = tfdiff.wrap(base, tfdiff.SeedDiff(compression=100.0, seed=9))
    _train(diff_model)
    diff = decode(tfdiff.extract(diff_model, generation=1).to_bytes())
    assert [(e.name, e.inner, e.values.size, e.seed) for e in diff.entries] == [
        ("hidden/0/kernel", 128, 128 + 256, 9), ("out/0/kernel", 32, 32 + 32, 9)]  # full rank fits 100x
    folded = tfdiff.named_weights(tfdiff.fold(base, diff))
    for entry in diff.entries:
        u, v = seed_bases(entry.shape, entry.inner, entry.seed)
        d, b = entry.values[:entry.inner].astype(np.float64), entry.values[entry.inner:].astype(np.float64)
        expected = tfdiff.named_weights(base)[entry.name] + ((u * d) @ v) * b
        np.testing.assert_allclose(folded[entry.name], expected, atol=1e-5)
    x = _data(inputs=128, outputs=32)[0]
    assert np.abs(diff_model(x).numpy() - tfdiff.fold(base, diff)(x).numpy()).max() < 1e-2
    assert np.abs(diff_model(x).numpy() - base(x).numpy()).max() > 1e-2


def test_method_configs_round_trip_and_reject_bad_arguments():
    for method in (SPARSE, HASH, LOWRANK, SEED):
        assert type(method).from_config(method.get_config()).get_config() == method.get_config()
    with pytest.raises(ValueError, match="Received: compression=0.5"):
        tfdiff.SparseDiff(compression=0.5)
    with pytest.raises(ValueError, match="end_step"):
        tfdiff.SparseDiff(begin_step=10, end_step=5)
    with pytest.raises(ValueError, match="num_hashes"):
        tfdiff.HashDiff(num_hashes=0)
    with pytest.raises(ValueError, match="Received: allocation='pooled'"):
        tfdiff.SparseDiff(allocation="pooled")
    with pytest.raises(ValueError, match="value_fraction"):
        tfdiff.LowRankDiff(value_fraction=1.5)
    with pytest.raises(ValueError, match=r"must be one of \[.*'LowRankDiff', 'PrunedWeights', 'SeedDiff', "
                                         r"'SparseDiff'\]"):
        tfdiff.DiffWrapper(keras.layers.Dense(2), "sparse")


def test_wrapped_model_saves_and_reloads(tmp_path):
    diff_model = tfdiff.wrap(_mlp(), HASH)
    path = tmp_path / "m.keras"
    diff_model.save(path)
    again = keras.models.load_model(path)
    x, _ = _data(4)
    np.testing.assert_array_equal(again(x).numpy(), diff_model(x).numpy())


@pytest.mark.parametrize("method", [tfdiff.SparseDiff(compression=4.0, begin_step=2, end_step=8, frequency=2),
                                    tfdiff.HashDiff(compression=4.0, num_hashes=1)],
                         ids=["sparse", "hash"])
def test_compress_baseline_trains_a_fresh_model_under_the_budget(method):
    """BLC is trained from scratch: it starts from the fresh model, not a trained one, and its
    pruning (or hashing) is active during training."""
    fresh = _mlp(seed=3)
    trained = _mlp(seed=3)
    _train(trained)
    blc = tfdiff.compress_baseline(fresh, method)
    start = tfdiff.named_weights(tfdiff.strip(blc))
    trained_kernel = tfdiff.named_weights(trained)["hidden/0/kernel"]
    assert not np.allclose(start["hidden/0/kernel"], trained_kernel, atol=1e-3)
    x, y = _data()
    blc.compile(keras.optimizers.Adam(0.01), "mse")
    history = blc.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=tfdiff.callbacks(blc))
    assert history.history["loss"][-1] < history.history["loss"][0]
    plain = tfdiff.strip(blc)
    np.testing.assert_allclose(plain(x).numpy(), blc(x).numpy(), atol=1e-5)
    kernel = tfdiff.named_weights(plain)["hidden/0/kernel"]
    params = sum(v.size for v in tfdiff.named_weights(fresh).values())
    assert compressed_nbytes(blc) <= 4 * params / 4.0
    if isinstance(method, tfdiff.SparseDiff):
        # pruned during training, to as many values as the budget holds (more than N / 4)
        assert 0.55 < np.mean(kernel == 0) < 0.75
    else:
        assert len(np.unique(kernel)) <= kernel.size // 2


def test_hashed_baseline_hashes_matrices_and_trains_vectors_whole():
    """HashedNets hashes weight matrices; a bias starts from the layer's own initialization (an LSTM's
    forget gate at 1, the others at 0) and trains whole: hashed into a few entries, every gate started
    at a random offset and a 40x FSC baseline stayed at chance."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 8))
    fresh = keras.Model(inputs, keras.layers.Dense(4, name="out")(keras.layers.LSTM(16, name="lstm")(inputs)))
    blc = tfdiff.compress_baseline(fresh, tfdiff.HashDiff(compression=4.0, num_hashes=1))
    start = tfdiff.named_weights(tfdiff.strip(blc))
    np.testing.assert_array_equal(start["lstm/2/bias"], tfdiff.named_weights(fresh)["lstm/2/bias"])
    assert len(np.unique(start["lstm/0/kernel"])) < start["lstm/0/kernel"].size // 2
    blc.compile(keras.optimizers.Adam(0.01), "mse")
    rng = np.random.default_rng(0)
    blc.fit(rng.random((64, 6, 8)).astype("f4"), rng.random((64, 4)).astype("f4"), epochs=2, batch_size=16,
            verbose=0, callbacks=tfdiff.callbacks(blc))
    trained = tfdiff.named_weights(tfdiff.strip(blc))
    assert len(np.unique(trained["lstm/2/bias"])) == trained["lstm/2/bias"].size  # every value its own
    assert compressed_nbytes(blc) <= tfdiff.budget_bytes(sum(v.size for v in trained.values()), 4.0)


@pytest.mark.slow
def test_compress_baseline_prunes_a_bidirectional_rnn_as_its_two_layers():
    """tfmot's registry has no Bidirectional; BLC prunes its forward and backward kernels, not its biases."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 8))
    hidden = keras.layers.Bidirectional(keras.layers.LSTM(16), name="bi")(inputs)
    fresh = keras.Model(inputs, keras.layers.Dense(4, name="out")(hidden))
    blc = tfdiff.compress_baseline(fresh, tfdiff.SparseDiff(compression=4.0, begin_step=0, end_step=8, frequency=2))
    blc.compile("adam", "mse")
    rng = np.random.default_rng(0)
    blc.fit(rng.random((64, 6, 8)).astype("f4"), rng.random((64, 4)).astype("f4"), epochs=3, batch_size=16,
            verbose=0, callbacks=tfdiff.callbacks(blc))
    weights = tfdiff.named_weights(tfdiff.strip(blc))
    for name in ("bi/0/kernel", "bi/1/recurrent_kernel", "bi/3/kernel", "bi/4/recurrent_kernel"):
        assert np.mean(weights[name] == 0) > 0.6, name
    assert np.all(weights["bi/2/bias"] != 0) and np.all(weights["bi/5/bias"] != 0)
    assert compressed_nbytes(blc) <= tfdiff.budget_bytes(sum(v.size for v in weights.values()), 4.0)


def _mixed_model(seed=0):
    """About 7k parameters: Embedding + GRU and Conv1D + BiLSTM + LSTM branches."""
    keras.utils.set_random_seed(seed)
    tokens = keras.Input((6,), dtype="int32")
    feats = keras.Input((8, 6))
    a = keras.layers.GRU(16, name="gru")(keras.layers.Embedding(100, 8, name="embed")(tokens))
    b = keras.layers.Conv1D(8, 3, padding="same", name="conv")(feats)
    b = keras.layers.Bidirectional(keras.layers.LSTM(10, return_sequences=True), name="bilstm")(b)
    b = keras.layers.LSTM(20, name="lstm")(b)
    out = keras.layers.Dense(5, name="out")(keras.layers.Concatenate()([a, b]))
    return keras.Model([tokens, feats], out)


@pytest.mark.slow
@pytest.mark.parametrize("method", [tfdiff.SparseDiff(compression=20.0, begin_step=0, end_step=12, frequency=3),
                                    tfdiff.HashDiff(compression=20.0),
                                    # rank-1 factors (scalings) of its twelve matrices alone take more than 20x allows
                                    tfdiff.LowRankDiff(compression=5.0), tfdiff.SeedDiff(compression=10.0)],
                         ids=["sparse", "hash", "lowrank", "seed"])
def test_a_small_mixed_model_ships_the_diff_it_trained(method):
    """The budget is planned before training: a 6.7k-parameter model's diff fits with
    nothing cut, and the folded model is the trained one up to float16 rounding."""
    base = _mixed_model()
    params = sum(v.size for v in tfdiff.named_weights(base).values())
    assert 6000 < params < 7500
    diff_model = tfdiff.wrap(base, method)
    rng = np.random.default_rng(0)
    x = [rng.integers(0, 100, size=(96, 6)).astype("int32"), rng.normal(size=(96, 8, 6)).astype("float32")]
    y = rng.normal(size=(96, 5)).astype("float32")
    diff_model.compile(keras.optimizers.Adam(0.01), "mse")
    diff_model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=tfdiff.callbacks(diff_model))
    diff = tfdiff.extract(diff_model, generation=1)
    assert diff.cut_values == 0 and diff.nbytes + 68 <= tfdiff.budget_bytes(diff.num_params, method.compression)
    trained = tfdiff.strip(diff_model)(x).numpy()
    folded = tfdiff.fold(base, diff)(x).numpy()
    assert np.abs(trained - folded).max() < 1e-2
    assert np.abs(trained - base(x).numpy()).max() > 1e-2  # the diff did change the model


def batchnorm_models():
    """Conv1D+BN, Conv2D+BN and Dense+BN (no bias, so folding adds one), BN statistics moved off 0/1."""
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    conv1d = keras.Sequential([keras.Input((20, 16)), keras.layers.Conv1D(32, 5, name="conv"),
                               keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(),
                               keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(4, name="out")])
    image = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(5, 3, name="conv")(image)
    x = keras.layers.BatchNormalization(name="bn")(x)
    conv2d = keras.Model(image, keras.layers.Dense(3, name="out")(keras.layers.Flatten()(x)))
    dense = keras.Sequential([keras.Input((7,)), keras.layers.Dense(9, use_bias=False, name="hidden"),
                              keras.layers.BatchNormalization(name="bn", epsilon=1e-2),
                              keras.layers.Dense(2, name="out")])
    for model in (conv1d, conv2d, dense):
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                shape = layer.gamma.shape
                layer.set_weights([rng.uniform(0.5, 2, shape), rng.normal(size=shape),
                                   rng.normal(size=shape), rng.uniform(0.2, 3, shape)])
    return {"conv1d": (conv1d, (20, 16)), "conv2d": (conv2d, (8, 8, 2)), "dense": (dense, (7,))}


@pytest.mark.parametrize("kind", ["conv1d", "conv2d", "dense"])
def test_fold_batchnorm_gives_the_same_outputs_and_no_normalization(kind):
    model, shape = batchnorm_models()[kind]
    folded = tfdiff.fold_batchnorm(model)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    assert not any("moving" in name for name in tfdiff.named_weights(folded))
    x = np.random.default_rng(1).normal(size=(4,) + shape).astype("float32")
    np.testing.assert_allclose(folded(x).numpy(), model(x, training=False).numpy(), atol=1e-4)


@pytest.mark.slow
def test_a_conv_batchnorm_model_converts_and_takes_two_diffs_bit_exact(tmp_path):
    from device import applier, convert
    from device.converter import ConversionError
    from device.tflite import TFLiteFile
    model, shape = batchnorm_models()["conv1d"]
    with pytest.raises(ConversionError, match="fold_batchnorm"):
        convert(model)
    base = tfdiff.fold_batchnorm(model)
    device_model = tmp_path / "device.tflite"
    convert(base, device_model)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(32,) + shape).astype("float32")
    y = rng.normal(size=(32, 4)).astype("float32")
    for generation, method in [(1, tfdiff.SparseDiff(compression=4.0, end_step=8, frequency=2)),
                               (2, tfdiff.HashDiff(compression=4.0, seed=2))]:
        diff_model = tfdiff.wrap(base, method)
        diff_model.compile(keras.optimizers.Adam(0.01), "mse")
        diff_model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=tfdiff.callbacks(diff_model))
        diff = tfdiff.extract(diff_model, generation=generation)
        diff.save(tmp_path / f"gen{generation}.tfdiff")
        base = tfdiff.fold(base, diff)
        applier.apply(device_model, tmp_path / f"gen{generation}.tfdiff", allow_unsigned=True)
        expected = TFLiteFile(convert(base))
        patched = TFLiteFile(device_model.read_bytes())
        for name in tfdiff.named_weights(base):
            held = [bytes(f.buffer_bytes(g.buffer)[4 * g.offset:4 * (g.offset + g.count)])
                    for f in (patched, expected) for g in f.weight_map().segments(name)]
            assert held[:len(held) // 2] == held[len(held) // 2:], (generation, name)


@pytest.mark.parametrize("rule", ["topk", "dare", "bitdelta"])
def test_a_posthoc_diff_cuts_a_fine_tuned_delta_to_the_budget(rule):
    """FT - F_t, cut after training: within budget, applied by fold, moving the model towards FT."""
    base = _mlp(units=128)
    tuned = keras.models.clone_model(base)
    tuned.set_weights(base.get_weights())
    _train(tuned)
    diff = tfdiff.posthoc_diff(base, tuned, compression=20.0, generation=1, rule=rule, seed=4)
    params = sum(v.size for v in tfdiff.named_weights(base).values())
    assert diff.nbytes + 68 <= tfdiff.budget_bytes(params, 20.0) and diff.num_params == params
    kept = sum(e.values.size for e in diff.entries)
    assert kept > params / 20  # coded float16 values and gaps: more than the paper's N / 20
    folded = tfdiff.named_weights(tfdiff.fold(base, diff))
    before, after = tfdiff.named_weights(base), tfdiff.named_weights(tuned)
    for entry in diff.entries:
        delta = (after[entry.name] - before[entry.name]).reshape(-1)[entry.indices]
        if rule == "bitdelta":  # signs, times one scale per weight: its mean kept |delta|
            delta = np.sign(delta) * np.abs(delta).mean()
            assert len(np.unique(np.abs(entry.values))) == 1
        scale = params / kept if rule == "dare" else 1.0  # DARE rescales what it keeps by 1 / p
        np.testing.assert_allclose(entry.values.astype(np.float32), delta * scale, rtol=2e-3, atol=1e-7)
    if rule == "bitdelta":  # two values a weight code in about a bit each: far more deltas than top-k's
        topk = tfdiff.posthoc_diff(base, tuned, compression=20.0, generation=1, rule="topk")
        assert kept > 2 * sum(e.values.size for e in topk.entries)
    if rule in ("topk", "bitdelta"):  # the largest deltas: the folded model is nearer FT than the base is
        distance = lambda w: sum(float(np.sum((w[n] - after[n]) ** 2)) for n in after)  # noqa: E731
        assert distance(folded) < 0.8 * distance(before)
    with pytest.raises(ValueError, match="Received: rule='median'"):
        tfdiff.posthoc_diff(base, tuned, compression=20.0, generation=1, rule="median")


def test_a_sparse_diff_starts_from_a_warm_diff_and_ships_within_budget():
    """`wrap(..., start=...)`: the diff model starts as base (+) start, then trains and prunes as any."""
    base = _mlp(units=128)
    tuned = keras.models.clone_model(base)
    tuned.set_weights(base.get_weights())
    _train(tuned)
    warm = tfdiff.posthoc_diff(base, tuned, compression=20.0, generation=1, rule="topk")
    method = tfdiff.SparseDiff(compression=20.0, begin_step=4, end_step=20, frequency=4)
    diff_model = tfdiff.wrap(base, method, start=warm)
    x = _data(8)[0]
    np.testing.assert_allclose(diff_model(x).numpy(), tfdiff.fold(base, warm)(x).numpy(), atol=1e-5)
    _train(diff_model)
    diff = tfdiff.extract(diff_model, generation=1, strict=True)
    params = sum(v.size for v in tfdiff.named_weights(base).values())
    assert diff.nbytes + 68 <= tfdiff.budget_bytes(params, 20.0) and diff.cut_values == 0
    with pytest.raises(ValueError, match="`start` takes a sparse"):
        tfdiff.wrap(base, tfdiff.HashDiff(compression=20.0), start=warm)
