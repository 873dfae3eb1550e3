"""Regenerate the golden files: python -m tests.golden.make (only for an intended format change).

A tiny model (Embedding, LSTM, Dense) converted to .tflite, one sparse and one
hash diff for it, and the .tflite each diff patches it into. tests/test_golden.py
checks that today's code reads, writes and applies them byte for byte.
The v1-*.tfdiff files are frozen: format v1 is read, never written.
int8-base.tflite is a Dense model converted with dynamic-range int8 (weight
map version 2: an int8 kernel, a float32 bias); int8-sparse.tfdiff is a
sparse diff learned against its int8 weights (int8 entries for the kernel),
int8-sparse-patched.tflite what it patches the base into (`make_int8`).
lowrank.tfdiff is a low-rank diff for base.tflite and lowrank-patched.tflite
what it patches it into (`make_lowrank`, added with method code 3); seed.tfdiff
and seed-patched.tflite the same for a seed-basis diff (method code 4), and
seed-basis.json the first values of `device.hashing.random_basis`.
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

    model = golden_model()
    device.convert(model, os.path.join(HERE, "base.tflite"))
    rng = np.random.default_rng(7)
    x = rng.integers(0, 30, size=(64, 5)).astype("int32")
    y = rng.normal(size=(64, 4)).astype("float32")
    for name, method in (("sparse", tfdiff.SparseDiff(compression=4.0, begin_step=0, end_step=8, frequency=2)),
                         ("hash", tfdiff.HashDiff(compression=4.0, num_hashes=2, seed=3))):
        golden_diff(model, name, method, x, y)
    make_int8()
    make_journals()


def golden_model():
    """The model of base.tflite: Embedding, LSTM, Dense, seeded."""
    from tfdiff import keras
    keras.utils.set_random_seed(7)
    tokens = keras.Input((5,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(30, 8, name="embed")(tokens)
    x = keras.layers.LSTM(12, name="lstm")(x)
    # Named: the .tflite's tensor names carry the model's, which Keras would number after earlier models.
    return keras.Model(tokens, keras.layers.Dense(4, name="out")(x), name="model")


def make_int8():
    import device
    import device.tflite
    import tfdiff
    from tfdiff import keras

    keras.utils.set_random_seed(7)
    features = keras.Input((64,), name="features")
    model = keras.Model(features, keras.layers.Dense(32, name="dense")(features))
    base_path = os.path.join(HERE, "int8-base.tflite")
    device.convert(model, base_path, quantize="int8")
    rng = np.random.default_rng(7)
    x = rng.normal(size=(64, 64)).astype("float32")
    y = rng.normal(size=(64, 32)).astype("float32")
    diff_model = tfdiff.wrap(model, tfdiff.SparseDiff(compression=4.0, begin_step=0, end_step=8, frequency=2),
                             int8=tfdiff.Int8Model.load(base_path))
    diff_model.compile(keras.optimizers.Adam(0.01), "mse")
    diff_model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=tfdiff.callbacks(diff_model))
    diff = tfdiff.extract(diff_model, generation=1)
    diff.graph_digest = device.tflite.graph_digest_of(base_path)
    diff.save(os.path.join(HERE, "int8-sparse.tfdiff"))
    patched = os.path.join(HERE, "int8-sparse-patched.tflite")
    shutil.copyfile(base_path, patched)
    device.apply(patched, os.path.join(HERE, "int8-sparse.tfdiff"), allow_unsigned=True)
    remove_side_files(patched)


def make_matrix_diffs(names=("lowrank", "seed")):
    """lowrank.tfdiff and seed.tfdiff for base.tflite, their patched models, and seed-basis.json."""
    import json
    import device
    import device.tflite
    import tfdiff
    from device.hashing import random_basis

    model = golden_model()
    if device.tflite.graph_digest_of(os.path.join(HERE, "base.tflite")) != _graph_of(model):
        raise RuntimeError("the model rebuilt here is not the golden base.tflite's")
    rng = np.random.default_rng(7)
    x = rng.integers(0, 30, size=(64, 5)).astype("int32")
    y = rng.normal(size=(64, 4)).astype("float32")
    methods = {"lowrank": tfdiff.LowRankDiff(compression=4.0, seed=3), "seed": tfdiff.SeedDiff(compression=4.0, seed=3)}
    for name in names:
        golden_diff(model, name, methods[name], x, y)
    if "seed" in names:
        basis = {f"seed {seed}, stream {k}": random_basis(8, seed, k).tolist() for seed, k in ((0, 0), (7, 1))}
        with open(os.path.join(HERE, "seed-basis.json"), "w") as f:
            json.dump(basis, f, indent=1)


def golden_diff(model, name, method, x, y):
    """NAME.tfdiff learned for base.tflite with `method`, and NAME-patched.tflite, what it patches base.tflite into."""
    import device
    import device.tflite
    import tfdiff
    from tfdiff import keras

    diff_model = tfdiff.wrap(model, method)
    diff_model.compile(keras.optimizers.Adam(0.01), "mse")
    diff_model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=tfdiff.callbacks(diff_model))
    diff = tfdiff.extract(diff_model, generation=1)
    diff.graph_digest = device.tflite.graph_digest_of(os.path.join(HERE, "base.tflite"))
    diff.save(os.path.join(HERE, f"{name}.tfdiff"))
    patched = os.path.join(HERE, f"{name}-patched.tflite")
    shutil.copyfile(os.path.join(HERE, "base.tflite"), patched)
    device.apply(patched, os.path.join(HERE, f"{name}.tfdiff"), allow_unsigned=True)
    remove_side_files(patched)


def _graph_of(model):
    import device
    import device.tflite
    with tempfile.TemporaryDirectory() as tmp:
        device.convert(model, os.path.join(tmp, "model.tflite"))
        return device.tflite.graph_digest_of(os.path.join(tmp, "model.tflite"))


def remove_side_files(model):
    """The applier's state, lock and rollback record: the golden patched model is the file alone."""
    import glob
    for path in glob.glob(glob.escape(model) + ".tfdiff-*"):
        os.unlink(path)


def make_journals(methods=("sparse", "hash", "int8-sparse")):
    for method in methods:
        with tempfile.TemporaryDirectory() as tmp:
            os.chmod(tmp, 0o755)
            model = os.path.join(tmp, "model.tflite")
            shutil.copyfile(os.path.join(HERE, base_of(method)), model)
            diff = os.path.join(HERE, f"{method}.tfdiff")
            proc = subprocess.run([sys.executable, "-m", "device", "apply", model, diff, "--allow-unsigned",
                                   "--strategy", "inplace"],
                                  env=dict(os.environ, TFDIFF_CRASH_AT="journal-committed"),
                                  cwd=os.path.dirname(os.path.dirname(HERE)))
            if proc.returncode != -signal.SIGKILL:
                raise RuntimeError(f"the apply was to be killed at its commit point; it exited {proc.returncode}")
            shutil.copyfile(model + ".tfdiff-journal", os.path.join(HERE, f"{method}.tfdiff-journal"))


def base_of(method):
    """The golden base model a golden diff applies to."""
    return "int8-base.tflite" if method.startswith("int8-") else "base.tflite"


if __name__ == "__main__":
    if sys.argv[1:] == ["int8"]:  # only the int8 files: the others stay as they are
        make_int8()
        make_journals(("int8-sparse",))
    elif sys.argv[1:2] == ["matrix"]:  # only the low-rank and seed files (or those named after "matrix")
        make_matrix_diffs(tuple(sys.argv[2:]) or ("lowrank", "seed"))
    else:
        make()
