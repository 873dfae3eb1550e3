"""Training overhead: `fit` step time with DiffWrapper against the plain model.

The FSC demo model, one fixed batch of features, the same trainer and
optimizer; the variants run interleaved in one process, and each
figure is the median step time after a warm-up. `run_keras3` builds the
same model in tf_keras and in Keras 3 (TensorFlow backend) and times the
same plain `fit` (an MSE toward fixed embeddings: the recipes' triplet
trainer is tf_keras's) in both, wrapped and not.
"""
import time

import numpy as np

import tfdiff
from recipes.fsc import model as slu_model
from recipes.speech.features import FEATURE_DIM
from tfdiff import keras
import tensorflow as tf


def _step_times(package):
    class StepTimes(package.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    timer = StepTimes()
    timer.times = []
    return timer


def _interleaved(fits, rounds, warmup):
    """{name: median step seconds} of `fits` ({name: (fit, its timer callback)}), run in turn `rounds` times."""
    for _ in range(rounds):  # interleaved, so drift in machine speed hits all alike
        for fit, timer in fits.values():
            before = len(timer.times)
            fit()
            del timer.times[before:before + warmup]
    return {name: float(np.median(timer.times)) for name, (_, timer) in fits.items()}


def _config(tiny):
    if tiny:
        return slu_model.SluConfig.demo(speech_units=16, text_units=16, proj_dim=16, vocab_size=50,
                                        frames=20, batch_size=8)
    return slu_model.SluConfig.demo(batch_size=64, vocab_size=300)


def run(steps=60, warmup=10, rounds=3, tiny=False):
    config = _config(tiny)
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(config.batch_size, config.frames, FEATURE_DIM)).astype(np.float32)
    phrases = rng.integers(1, config.vocab_size, size=(20, config.max_tokens)).astype(np.int32)
    labels = rng.integers(0, 20, size=config.batch_size).astype(np.int32)
    data = tf.data.Dataset.from_tensors((feats, labels)).repeat()
    keras.utils.set_random_seed(0)
    base = slu_model.build_slu(config)
    variants = {"plain": base,
                "sparse": tfdiff.wrap(base, tfdiff.SparseDiff(compression=20.0, begin_step=0,
                                                              end_step=steps * rounds, frequency=10)),
                "sparse-global": tfdiff.wrap(base, tfdiff.SparseDiff(compression=20.0, begin_step=0,
                                                                     end_step=steps * rounds, frequency=10,
                                                                     allocation="global")),
                "hash": tfdiff.wrap(base, tfdiff.HashDiff(compression=20.0, num_hashes=3)),
                "lowrank": tfdiff.wrap(base, tfdiff.LowRankDiff(compression=20.0)),
                "seed": tfdiff.wrap(base, tfdiff.SeedDiff(compression=20.0))}
    fits = {}
    for name, model in variants.items():
        trainer = slu_model.TripletTrainer(model, phrases, config)
        trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
        timer = _step_times(keras)
        fits[name] = _fit(trainer, data, steps + warmup, [timer] + tfdiff.callbacks(model)), timer
    median = _interleaved(fits, rounds, warmup)
    return {"step_seconds": median, "ratio": {name: median[name] / median["plain"] for name in median
                                              if name != "plain"},
            "batch": config.batch_size, "steps_measured": steps * rounds}


def run_keras3(steps=60, warmup=10, rounds=3, tiny=False):
    """Step seconds of the same fit in tf_keras and Keras 3, plain and wrapped; ratio = Keras 3 / tf_keras."""
    import keras as keras3

    config = _config(tiny)
    rng = np.random.default_rng(0)
    inputs = (rng.normal(size=(config.batch_size, config.frames, FEATURE_DIM)).astype(np.float32),
              rng.integers(1, config.vocab_size, size=(config.batch_size, config.max_tokens)).astype(np.int32))
    targets = tuple(rng.normal(size=(config.batch_size, config.proj_dim)).astype(np.float32) for _ in range(2))
    data = tf.data.Dataset.from_tensors((inputs, targets)).repeat()
    methods = {"plain": None,
               "sparse": tfdiff.SparseDiff(compression=20.0, begin_step=0, end_step=steps * rounds, frequency=10),
               "hash": tfdiff.HashDiff(compression=20.0, num_hashes=3)}
    fits = {}
    for label, package in (("tf_keras", keras), ("keras3", keras3)):
        package.utils.set_random_seed(0)
        base = slu_model.build_slu(config, keras=package)
        for name, method in methods.items():
            model = base if method is None else tfdiff.wrap(base, method)
            model.compile(optimizer=package.optimizers.Adam(1e-3), loss=["mse", "mse"])
            timer = _step_times(package)
            fits[f"{label} {name}"] = _fit(model, data, steps + warmup, [timer] + tfdiff.callbacks(model)), timer
    median = _interleaved(fits, rounds, warmup)
    return {"step_seconds": median,
            "ratio": {name: median[f"keras3 {name}"] / median[f"tf_keras {name}"] for name in methods},
            "batch": config.batch_size, "steps_measured": steps * rounds}


def _fit(model, data, steps, callbacks):
    def fit():
        model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=callbacks)
    return fit
