"""Bytes on the wire per generation update, against what users ship today.

Needs a finished FSC run (python -m recipes.fsc.run ... --out RUN). For each
update t-1 -> t it compares, each with the accuracy the device ends up with:
the whole new .tflite (raw, zstd -19, zipnn); binary diffs of BL_t's .tflite
against BL_t-1's (bsdiff4, xdelta3, zstd --patch-from); the run's learned
tfdiff diffs; and, when the run has them (`flywheel.posthoc`), its post-hoc
diffs: the device's model fine-tuned with no budget (FT), FT - F_t cut after
the fact to the same bytes. (BL_t - BL_t-1 is no delta to cut: BL_t is
trained from scratch, so its weights share nothing with BL_t-1's.)
"""
import os
import shutil
import subprocess
import sys
import tempfile

import device
from tfdiff import keras


def _zstd19(data):
    import zstandard
    return len(zstandard.ZstdCompressor(level=19).compress(data))


_ZIPNN = ("import sys, zipnn; data = sys.stdin.buffer.read(); "
          "print(len(zipnn.ZipNN(input_format='byte', bytearray_dtype='float32').compress(data)))")


def _zipnn(data):
    # zipnn imports PyTorch, which must not share a process with TensorFlow.
    proc = subprocess.run([sys.executable, "-c", _ZIPNN], input=data, capture_output=True)
    if proc.returncode:
        return None  # not installed: scripts/bench installs it, the tests do not
    return int(proc.stdout.split()[-1])


def _bsdiff(old, new):
    import bsdiff4
    return len(bsdiff4.diff(old, new))


def _cli_patch(command, old_path, new_path):
    if shutil.which(command[0]) is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "patch")
        args = [a.format(old=old_path, new=new_path, out=out) for a in command]
        subprocess.run(args, check=True, capture_output=True)
        return os.path.getsize(out)


XDELTA = ["xdelta3", "-e", "-9", "-f", "-s", "{old}", "{new}", "{out}"]
ZSTD_PATCH = ["zstd", "-19", "-q", "-f", "--patch-from={old}", "{new}", "-o", "{out}"]


def run(run_dir, out_dir):
    import json

    with open(os.path.join(run_dir, "results.json")) as f:
        results = json.load(f)
    tflite_dir = os.path.join(out_dir, "tflite")
    os.makedirs(tflite_dir, exist_ok=True)

    def bl(gen):
        return keras.models.load_model(os.path.join(run_dir, "models", f"BL-g{gen}.keras"), compile=False)

    def bl_tflite(gen):
        path = os.path.join(tflite_dir, f"BL-g{gen}.tflite")
        if not os.path.exists(path):
            device.convert(bl(gen), path)
        return path

    rows = []
    for g in results["generations"][1:]:
        gen, table = g["gen"], g["rows"]
        bl_accuracy = table["BL"]["accuracy"]
        old_path, new_path = bl_tflite(gen - 1), bl_tflite(gen)
        old, new = open(old_path, "rb").read(), open(new_path, "rb").read()
        for method, nbytes in [("tflite raw", len(new)), ("tflite zstd-19", _zstd19(new)),
                               ("tflite zipnn", _zipnn(new)), ("bsdiff4", _bsdiff(old, new)),
                               ("xdelta3 -9", _cli_patch(XDELTA, old_path, new_path)),
                               ("zstd --patch-from", _cli_patch(ZSTD_PATCH, old_path, new_path))]:
            rows.append({"gen": gen, "method": method, "bytes": nbytes,
                         "accuracy": bl_accuracy if nbytes is not None else None})
        for key, row in sorted(table.items()):
            if key.startswith("Diff-"):
                rows.append({"gen": gen, "method": "tfdiff " + key[5:], "bytes": row["bytes"],
                             "accuracy": row["accuracy"]})
            if key.startswith("Posthoc-"):
                rows.append({"gen": gen, "method": f"post-hoc {key[8:]} of FT", "bytes": row["bytes"],
                             "accuracy": row["accuracy"]})
    return rows
