"""Apply cost on a model at the paper's RNN-T shapes (64M float32 parameters).

Builds the model (6 x LSTM 1024 transcription network with a 640
projection; 256-dim embedding, 2 x LSTM 1024 prediction network with a 640
projection; a tanh joint over 2500 word pieces), converts it, makes a sparse
10x and a hash 10x diff of random values at the budget, and times
`python -m device apply` in place and to a new file against `cp` of the same
file, in fresh processes, medians of repeats.
"""
import os
import subprocess
import tempfile
import time

import numpy as np

import device
import tfdiff
from device.bench import MODES, apply_cost
from device.format import Entry
from tfdiff import keras
from tfdiff.model import seal

PAPER = dict(units=1024, layers=6, pred_layers=2, proj=640, embed=256, vocab=2500, features=192)
TINY = dict(units=32, layers=2, pred_layers=1, proj=16, embed=8, vocab=40, features=24)


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


def _cp_seconds(path, repeats):
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(["cp", path, os.path.join(tmp, "copy.tflite")], check=True)
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def run(out_dir, tiny=False, repeats=3):
    shapes = TINY if tiny else PAPER
    model = rnnt_shaped_model(**shapes)
    path = os.path.join(out_dir, "rnnt-shaped.tflite")
    if not os.path.exists(path):
        device.convert(model, path)
    weights = tfdiff.named_weights(model)
    params = sum(v.size for v in weights.values())
    rows = []
    for method in ("sparse", "hash"):
        diff = random_diff(weights, method, 10.0)
        diff_path = os.path.join(out_dir, f"rnnt-shaped-{method}10x.tfdiff")
        diff.save(diff_path)
        cp_seconds = _cp_seconds(path, repeats)
        for mode in MODES:
            cost = apply_cost(path, diff_path, mode, repeats=repeats)
            rows.append({"method": method, **cost, "cp_seconds": cp_seconds, "diff_bytes": diff.nbytes,
                         "params": params})
    return rows
