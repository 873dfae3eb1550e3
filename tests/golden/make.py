"""Regenerate the golden files: python -m tests.golden.make (only for an intended format change).

A tiny model (Embedding, LSTM, Dense) converted to .tflite, one sparse and one
hash diff for it, and the .tflite each diff patches it into. tests/test_golden.py
checks that today's code reads, writes and applies them byte for byte.
The v1-*.tfdiff files are frozen: format v1 is read, never written.
METHOD.tfdiff-journal is what an apply of METHOD.tfdiff to base.tflite,
killed at its commit point, leaves (`make_journals`); the v3-*.tfdiff-journal
files, made the same way by the applier before journal format 4, are frozen.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def make():
    import device
    import device.tflite
    import tfdiff
    from tfdiff import keras

    keras.utils.set_random_seed(7)
    tokens = keras.Input((5,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(30, 8, name="embed")(tokens)
    x = keras.layers.LSTM(12, name="lstm")(x)
    model = keras.Model(tokens, keras.layers.Dense(4, name="out")(x))
    device.convert(model, os.path.join(HERE, "base.tflite"))
    rng = np.random.default_rng(7)
    x = rng.integers(0, 30, size=(64, 5)).astype("int32")
    y = rng.normal(size=(64, 4)).astype("float32")
    for name, method in (("sparse", tfdiff.SparseDiff(compression=4.0, begin_step=0, end_step=8, frequency=2)),
                         ("hash", tfdiff.HashDiff(compression=4.0, num_hashes=2, seed=3))):
        diff_model = tfdiff.wrap(model, method)
        diff_model.compile(keras.optimizers.Adam(0.01), "mse")
        diff_model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=tfdiff.callbacks(diff_model))
        diff = tfdiff.extract(diff_model, generation=1)
        diff.graph_digest = device.tflite.graph_digest_of(os.path.join(HERE, "base.tflite"))
        diff.save(os.path.join(HERE, f"{name}.tfdiff"))
        patched = os.path.join(HERE, f"{name}-patched.tflite")
        shutil.copyfile(os.path.join(HERE, "base.tflite"), patched)
        device.apply(patched, os.path.join(HERE, f"{name}.tfdiff"), allow_unsigned=True)
        for suffix in (".tfdiff-state", ".tfdiff-lock", ".tfdiff-undo"):
            os.unlink(patched + suffix)
    make_journals()


def make_journals():
    for method in ("sparse", "hash"):
        with tempfile.TemporaryDirectory() as tmp:
            os.chmod(tmp, 0o755)
            model = os.path.join(tmp, "model.tflite")
            shutil.copyfile(os.path.join(HERE, "base.tflite"), model)
            diff = os.path.join(HERE, f"{method}.tfdiff")
            proc = subprocess.run([sys.executable, "-m", "device", "apply", model, diff, "--allow-unsigned",
                                   "--strategy", "inplace"],
                                  env=dict(os.environ, TFDIFF_CRASH_AT="journal-committed"),
                                  cwd=os.path.dirname(os.path.dirname(HERE)))
            if proc.returncode != -signal.SIGKILL:
                raise RuntimeError(f"the apply was to be killed at its commit point; it exited {proc.returncode}")
            shutil.copyfile(model + ".tfdiff-journal", os.path.join(HERE, f"{method}.tfdiff-journal"))


if __name__ == "__main__":
    make()
