"""Inference latency of a patched .tflite against a fresh conversion of the
folded model: the same model, so the ratio should be 1.00 within noise."""
import os

import numpy as np

import device
import tfdiff
from device.bench import latency
from tfdiff import keras


def run(model_path, keras_model_path, diff_path, out_dir, runs=200, rounds=3):
    """`model_path` is the device's base .tflite, `keras_model_path` its Keras model."""
    patched = os.path.join(out_dir, "patched.tflite")
    device.apply(model_path, diff_path, out=patched, allow_unsigned=True, force=True)  # the server's own diff
    base = keras.models.load_model(keras_model_path, compile=False)
    fresh = os.path.join(out_dir, "fresh.tflite")
    device.convert(tfdiff.fold(base, tfdiff.Diff.load(diff_path)), fresh)
    medians = {"patched": [], "fresh": []}
    for _ in range(rounds):
        for name, path in (("patched", patched), ("fresh", fresh)):
            medians[name].append(latency(path, runs=runs)["median_ms"])
    patched_ms, fresh_ms = float(np.median(medians["patched"])), float(np.median(medians["fresh"]))
    return {"patched_ms": patched_ms, "fresh_ms": fresh_ms, "ratio": patched_ms / fresh_ms,
            "same_bytes": open(patched, "rb").read() == open(fresh, "rb").read()}
