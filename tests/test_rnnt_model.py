"""The RNN-T model: trains with tfdiff, and the patched TFLite decodes like the folded Keras model."""
import numpy as np
import pytest
import tensorflow as tf

import device
import tfdiff
from recipes.librispeech import model as rnnt_model
from tfdiff import keras

CONFIG = rnnt_model.RnntConfig.demo(enc_layers=2, enc_units=16, pred_units=16, proj=16, embed_dim=8, joint_dim=16,
                               vocab_size=12, time_reduction=2)


def batches(seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(8, 9, 192)).astype(np.float32)
    labels = rng.integers(1, CONFIG.vocab_size, size=(8, 3)).astype(np.int32)
    lengths = np.array([3, 2, 3, 1, 3, 2, 3, 3], np.int32)
    frames = np.full(8, 9, np.int32)
    return tf.data.Dataset.from_tensors(((features, labels, frames, lengths), 0)).repeat()


def train(model, epochs, callbacks=()):
    trainer = rnnt_model.RnntTrainer(model)
    trainer.compile(optimizer=keras.optimizers.Adam(0.02))
    history = trainer.fit(batches(), epochs=epochs, steps_per_epoch=4, verbose=0, callbacks=list(callbacks))
    return history.history["loss"]


@pytest.mark.slow
def test_patched_tflite_decodes_like_the_folded_keras_model(tmp_path):
    # The demo's bidirectional encoder; the unidirectional one decodes on the device in the tiny recipe run.
    keras.utils.set_random_seed(0)
    base = rnnt_model.build_rnnt(rnnt_model.RnntConfig(**{**CONFIG.get_config(), "enc_bidirectional": True}))
    losses = train(base, 6)
    assert losses[-1] < losses[0]
    device.convert(base, tmp_path / "base.tflite", signatures=rnnt_model.signatures(base))

    diff_model = tfdiff.wrap(base, tfdiff.SparseDiff(compression=4.0, begin_step=0, end_step=6, frequency=2))
    assert "encoder/enc_lstm0/0/kernel" in tfdiff.named_weights(diff_model)
    train(diff_model, 2, tfdiff.callbacks(diff_model))
    diff = tfdiff.extract(diff_model, generation=1)
    diff.save(tmp_path / "g1.tfdiff")
    folded = tfdiff.fold(base, diff)
    device.apply(tmp_path / "base.tflite", tmp_path / "g1.tfdiff", allow_unsigned=True)

    keras_side = rnnt_model.KerasRecognizer(folded)
    device_side = rnnt_model.TfliteRecognizer(tmp_path / "base.tflite")
    features = np.random.default_rng(5).normal(size=(3, 9, 192)).astype(np.float32)
    for x in features:
        assert device_side.encode(x).shape == (5, 16)  # 9 frames, reduced by 2 with a zero frame padded
        np.testing.assert_allclose(device_side.encode(x), keras_side.encode(x), atol=1e-5)
        assert rnnt_model.greedy(device_side, x, 16, 1) == rnnt_model.greedy(keras_side, x, 16, 1)
        assert rnnt_model.beam(device_side, x, 16, 1, width=3) == rnnt_model.beam(keras_side, x, 16, 1, width=3)


def test_time_reduction_concatenates_adjacent_frames_and_pads_the_end():
    frames = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    reduced = rnnt_model.TimeReduction(2)(frames).numpy()
    assert reduced.shape == (2, 3, 6)
    np.testing.assert_array_equal(reduced[0, 0], np.concatenate([frames[0, 0], frames[0, 1]]))
    np.testing.assert_array_equal(reduced[1, 2], np.concatenate([frames[1, 4], np.zeros(3, np.float32)]))
    assert [rnnt_model.reduced_length(n, 2) for n in (1, 2, 5)] == [1, 1, 3]
    config = rnnt_model.RnntConfig.from_config(CONFIG.get_config())
    assert config.get_config() == CONFIG.get_config()
    with pytest.raises(ValueError, match="time_reduction=2"):
        rnnt_model.RnntConfig(enc_layers=1, time_reduction=2)


def test_batched_beam_search_equals_one_hypothesis_at_a_time():
    keras.utils.set_random_seed(3)
    recognizer = rnnt_model.KerasRecognizer(rnnt_model.build_rnnt(CONFIG))
    calls = []
    joint = recognizer.joint
    recognizer.joint = lambda frame, predicted: calls.append(len(predicted)) or joint(frame, predicted)
    for x in np.random.default_rng(2).normal(size=(2, 9, 192)).astype(np.float32):
        batched = rnnt_model.beam(recognizer, x, 16, 1, width=4)
        assert max(calls) > 1  # the rounds really were batched
        calls.clear()
        assert rnnt_model.beam(recognizer, x, 16, 1, width=4, batched=False) == batched
        assert max(calls) == 1
        calls.clear()


def test_greedy_over_a_batch_equals_greedy_one_utterance_at_a_time():
    keras.utils.set_random_seed(4)
    recognizer = rnnt_model.KerasRecognizer(rnnt_model.build_rnnt(CONFIG))
    rng = np.random.default_rng(6)
    # Lengths differ, so utterances leave the batch at different frames.
    utterances = [rng.normal(size=(n, 192)).astype(np.float32) for n in (9, 3, 14, 1, 6)]
    alone = [rnnt_model.greedy(recognizer, x, 16, 1) for x in utterances]
    assert sum(map(len, alone)) > len(utterances)  # the untrained joint emits: the symbol loop runs
    assert rnnt_model.greedy_batch(recognizer, utterances, 16, 1) == alone
    assert rnnt_model.greedy_batch(recognizer, [], 16, 1) == []


@pytest.mark.parametrize("kind", ["plain", "sparse", "hash", "blc", "fused tanh"])
def test_joint_lattice_computes_the_models_logits_and_gradients(kind):
    keras.utils.set_random_seed(7)
    model = rnnt_model.build_rnnt(CONFIG)
    sparse = tfdiff.SparseDiff(compression=4.0, begin_step=0, end_step=6, frequency=2)
    if kind == "sparse":
        model = tfdiff.wrap(model, sparse)
    elif kind == "hash":
        model = tfdiff.wrap(model, tfdiff.HashDiff(compression=4.0))
    elif kind == "blc":
        model = tfdiff.compress_baseline(model, sparse)
    elif kind == "fused tanh":  # a model saved before joint_tanh was its own layer: called whole
        model.get_layer("joint").get_layer("joint_hidden").activation = keras.activations.tanh
    for variable in model.variables:
        if "pruning_step" in variable.name:  # what tfmot's callback sets before a step
            variable.assign(1)
    (features, labels, _, _), _ = next(iter(batches()))
    labels = np.pad(labels, [[0, 0], [1, 0]])
    with tf.GradientTape(persistent=True) as tape:
        whole = model([features, labels], training=True)
        lattice = rnnt_model.joint_lattice(model, features, labels, training=True)
        losses = [tf.reduce_sum(tf.sin(logits)) for logits in (whole, lattice)]
    np.testing.assert_allclose(lattice, whole, atol=1e-5)
    for a, b in zip(*(tape.gradient(loss, model.trainable_variables) for loss in losses)):
        np.testing.assert_allclose(tf.convert_to_tensor(b), tf.convert_to_tensor(a), rtol=1e-4, atol=1e-4)
