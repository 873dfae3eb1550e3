"""Training overhead: `fit` step time with DiffWrapper against the plain model.

The FSC demo model, one fixed batch of features, the same trainer and
optimizer; the variants run interleaved in one process, and each
figure is the median step time after a warm-up.
"""
import time

import numpy as np

import tfdiff
from recipes.fsc import model as slu_model
from recipes.speech.features import FEATURE_DIM
from tfdiff import keras
import tensorflow as tf


class _StepTimes(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def run(steps=60, warmup=10, rounds=3, tiny=False):
    config = slu_model.SluConfig.demo(batch_size=64, vocab_size=300)
    if tiny:
        config = slu_model.SluConfig.demo(speech_units=16, text_units=16, proj_dim=16, vocab_size=50,
                                          frames=20, batch_size=8)
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
                "hash": tfdiff.wrap(base, tfdiff.HashDiff(compression=20.0, num_hashes=3)),
                "lowrank": tfdiff.wrap(base, tfdiff.LowRankDiff(compression=20.0))}
    trainers, timers = {}, {}
    for name, model in variants.items():
        trainer = slu_model.TripletTrainer(model, phrases, config)
        trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
        trainers[name], timers[name] = trainer, _StepTimes()
        timers[name].times = []
    for _ in range(rounds):  # interleaved, so drift in machine speed hits all alike
        for name, trainer in trainers.items():
            before = len(timers[name].times)
            trainer.fit(data, epochs=1, steps_per_epoch=steps + warmup, verbose=0,
                        callbacks=[timers[name]] + tfdiff.callbacks(variants[name]))
            del timers[name].times[before:before + warmup]
    median = {name: float(np.median(t.times)) for name, t in timers.items()}
    return {"step_seconds": median, "ratio": {name: median[name] / median["plain"] for name in median
                                              if name != "plain"},
            "batch": config.batch_size, "steps_measured": steps * rounds}
