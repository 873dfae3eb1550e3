"""Helpers shared by tests: a layer run through what a DiffWrapper promises, and who recorded a voice."""
import numpy as np

import tfdiff
from tfdiff import keras


def run_diff_layer_test(layer, method, input_shape, input_dtype="float32", vocab=None, steps=3):
    """Config round trip, build, identity at start, `fit` steps, frozen base.

    Returns the trained diff model, so a test can go on to extract and fold.
    """
    rng = np.random.default_rng(0)
    if vocab:
        x = rng.integers(1, vocab, size=(16,) + input_shape).astype(input_dtype)
    else:
        x = rng.normal(size=(16,) + input_shape).astype(input_dtype)
    inputs = keras.Input(input_shape, dtype=input_dtype)
    outputs = keras.layers.Flatten()(layer(inputs))
    base = keras.Model(inputs, outputs)

    wrapper = tfdiff.DiffWrapper(layer.__class__.from_config(layer.get_config()), method)
    config = wrapper.get_config()
    again = tfdiff.DiffWrapper.from_config(config)
    assert again.get_config() == config, "get_config does not round-trip"

    diff_model = tfdiff.wrap(base, method)
    np.testing.assert_array_equal(diff_model(x).numpy(), base(x).numpy(),
                                  err_msg="wrapped model differs from its base at start")
    frozen = tfdiff.named_weights(diff_model)
    assert frozen.keys() == tfdiff.named_weights(base).keys()
    trainable = {w.name: w.numpy() for w in diff_model.trainable_weights}
    assert trainable and all("diff" in name for name in trainable), sorted(trainable)

    y = rng.normal(size=diff_model.output_shape[1:]).astype("float32")
    y = np.broadcast_to(y, (16,) + y.shape)
    diff_model.compile(keras.optimizers.Adam(0.05), "mse")
    diff_model.fit(x, y, batch_size=4, epochs=1, steps_per_epoch=steps, verbose=0,
                   callbacks=tfdiff.callbacks(diff_model))
    after = tfdiff.named_weights(diff_model)
    for name, value in frozen.items():
        np.testing.assert_array_equal(after[name], value, err_msg=f"base weight {name} moved")
    moved = [w.name for w in diff_model.trainable_weights
             if not np.array_equal(w.numpy(), trainable[w.name])]
    assert moved, "no diff variable changed during fit"
    return base, diff_model, x


# Who recorded what, written out here independently of recipes/speech/synth.py: a split that
# is disjoint by voice name (kal vs kal16, flite slt vs festival's HTS slt) must still fail.
SAME_PERSON = [{("flite", "kal"), ("flite", "kal16"), ("festival", "kal_diphone")},
               {("flite", "slt"), ("festival", "cmu_us_slt_arctic_hts")}]


def person(engine, voice):
    for i, voices in enumerate(SAME_PERSON):
        if (engine, voice) in voices:
            return f"person{i}"
    return voice.split("+")[1] if engine == "espeak-ng" else f"{engine}/{voice}"
