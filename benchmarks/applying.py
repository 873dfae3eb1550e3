"""Apply cost on a model at the paper's RNN-T shapes (64M float32 parameters).

Builds the model (6 x LSTM 1024 transcription network with a 640
projection; 256-dim embedding, 2 x LSTM 1024 prediction network with a 640
projection; a tanh joint over 2500 word pieces), converts it, makes a sparse
10x and a hash 10x diff of random values at the budget, and times
`python -m device apply` in place, by the copy strategy and to a new file,
against `cp` (and `cp` + fsync) of the same file, in fresh processes, medians
of repeats: once on this machine's disk, and once as a small device would
run it, on a tmpfs with one CPU (`taskset -c 0`). Bytes written are counted by
the kernel (/proc/self/io), not predicted.
"""
import os

import numpy as np

import device
import tfdiff
from device.bench import MODES, apply_cost, copy_seconds
from device.format import Entry
from tfdiff import keras
from tfdiff.model import seal

PAPER = dict(units=1024, layers=6, pred_layers=2, proj=640, embed=256, vocab=2500, features=192)
TINY = dict(units=32, layers=2, pred_layers=1, proj=16, embed=8, vocab=40, features=24)
# For scripts/arm64-check: under emulation the paper's shapes would take minutes per apply; ratios need less.
MEDIUM = dict(units=256, layers=2, pred_layers=1, proj=160, embed=64, vocab=500, features=80)


def rnnt_shaped_model(units, layers, pred_layers, proj, embed, vocab, features):
    keras.utils.set_random_seed(0)
    feats = keras.Input((8, features), batch_size=1, name="features")
    tokens = keras.Input((4,), batch_size=1, dtype="int32", name="tokens")
    x = feats
    for i in range(layers):
        x = keras.layers.LSTM(units, return_sequences=True, name=f"enc_lstm{i}")(x)
    enc = keras.layers.Dense(proj, name="enc_proj")(x)
    y = keras.layers.Embedding(vocab, embed, name="pred_embed")(tokens)
    for i in range(pred_layers):
        y = keras.layers.LSTM(units, return_sequences=True, name=f"pred_lstm{i}")(y)
    pred = keras.layers.Dense(proj, name="pred_proj")(y)
    joint = keras.layers.Add()([keras.layers.Reshape((8, 1, proj))(enc), keras.layers.Reshape((1, 4, proj))(pred)])
    joint = keras.layers.Dense(proj, activation="tanh", name="joint")(joint)
    return keras.Model([feats, tokens], keras.layers.Dense(vocab, name="joint_out")(joint))


def random_diff(weights, method, compression, seed=0):
    rng = np.random.default_rng(seed)
    entries = []
    for name in sorted(weights):
        size = weights[name].size
        if method == "sparse":
            kept = np.sort(rng.choice(size, max(1, size // int(compression)), replace=False))
            values = rng.normal(0, 0.01, kept.size).astype(np.float16)
            entries.append(Entry(name, weights[name].shape, "sparse", values, kept))
        else:
            table = rng.normal(0, 0.01, max(1, int(size // compression))).astype(np.float16)
            entries.append(Entry(name, weights[name].shape, "hash", table, None, seed, 3))
    diff = tfdiff.Diff(method, entries, b"", b"", generation=1, seed=seed,
                       num_hashes=3 if method == "hash" else 0)
    return seal(diff, weights)


def make(out_dir, shapes):
    """The model converted to out_dir/rnnt-shaped.tflite, and its sparse and hash 10x diffs beside it.

    Returns (model path, {method: (diff path, DiffFile)}, parameter count).
    """
    model = rnnt_shaped_model(**shapes)
    path = os.path.join(out_dir, "rnnt-shaped.tflite")
    if not os.path.exists(path):
        device.convert(model, path)
    weights = tfdiff.named_weights(model)
    diffs = {}
    for method in ("sparse", "hash"):
        diff = random_diff(weights, method, 10.0)
        diffs[method] = (os.path.join(out_dir, f"rnnt-shaped-{method}10x.tfdiff"), diff)
        diff.save(diffs[method][0])
    return path, diffs, sum(v.size for v in weights.values())


def run(out_dir, tiny=False, repeats=3):
    """The rows of the apply benchmark: each diff in each mode, on this machine's disk and, as a small device
    would, on a tmpfs with one CPU (`taskset -c 0`)."""
    path, diffs, params = make(out_dir, TINY if tiny else PAPER)
    rows = []
    for method, (diff_path, diff) in diffs.items():
        for setting, directory, cpus in (("disk", None, None), ("tmpfs, 1 CPU", "/dev/shm", "0")):
            if directory and not os.path.isdir(directory):
                continue
            cp = {"cp_seconds": copy_seconds(path, repeats, directory),
                  "cp_fsync_seconds": copy_seconds(path, repeats, directory, fsync=True)}
            for mode in MODES:
                cost = apply_cost(path, diff_path, mode, repeats=repeats, directory=directory, cpus=cpus)
                rows.append({"method": method, "setting": setting, **cost, **cp, "diff_bytes": diff.nbytes,
                             "params": params})
    return rows


if __name__ == "__main__":  # python -m benchmarks.applying DIR: the medium model and diffs, for arm64-check
    import sys
    make(sys.argv[1], MEDIUM)
