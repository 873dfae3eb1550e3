"""The device's world without TensorFlow: the golden model and diffs, a server key, and helpers.

tests/golden holds a converted model and sparse and hash diffs made by a real
training (tests/golden/make.py); the safety tests need nothing else. Diffs of
later generations are made here with numpy: entries on the model's weights
and the digests the device's own arithmetic (device/patch.py) gives. Their
values are random, which is all a test of signatures, generations, journals
and kills needs.
"""
import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np

from device import signing, trust
from device.digest import weights_digest
from device.format import UNBOUND, DiffFile, Entry
from device.patch import patch_weight
from device.tflite import TFLiteFile, graph_digest_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden")


def make_world(tmp):
    """In `tmp`: base.tflite, a server key pair, {sparse,hash}.tfdiff (generation 1, signed and bound to
    base.tflite's graph), {sparse,hash}-unsigned.tfdiff (neither) and {sparse,hash}-folded.tflite, what
    each diff patches base into."""
    signing.keygen(tmp / "server.pem", tmp / "server.pub")
    shutil.copyfile(os.path.join(GOLDEN, "base.tflite"), tmp / "base.tflite")
    diffs = {}
    for name in ("sparse", "hash"):
        unbound = DiffFile.load(os.path.join(GOLDEN, f"{name}.tfdiff"))
        unbound.graph_digest = UNBOUND  # as `tfdiff.extract` makes it: signing binds the graph
        unbound.save(tmp / f"{name}-unsigned.tfdiff")
        signing.sign(tmp / f"{name}-unsigned.tfdiff", tmp / "server.pem", out=tmp / f"{name}.tfdiff",
                     model=tmp / "base.tflite")
        shutil.copyfile(os.path.join(GOLDEN, f"{name}-patched.tflite"), tmp / f"{name}-folded.tflite")
        diffs[name] = DiffFile.load(tmp / f"{name}-unsigned.tfdiff")
    return diffs


def weights_of(path):
    """{name: array in Keras layout} of the .tflite at `path`, by its weight map."""
    model = TFLiteFile(open(path, "rb").read())
    return {name: model.weight_values(name).copy() for name in model.weight_map().names()}


def next_diff(model_path, generation, seed, method="sparse", share=0.125):
    """A diff from the model at `model_path` to new weights, bound to its graph (unsigned)."""
    rng = np.random.default_rng(seed)
    weights = weights_of(model_path)
    entries = []
    for name, value in weights.items():
        if method == "hash":
            table = rng.normal(0, 0.01, max(1, int(value.size * share))).astype(np.float16)
            entries.append(Entry(name, value.shape, "hash", table, None, seed, 2))
        else:
            indices = np.sort(rng.choice(value.size, max(1, int(value.size * share)), replace=False))
            entries.append(Entry(name, value.shape, "sparse", rng.normal(0, 0.01, indices.size).astype(np.float16),
                                 indices))
    patched = dict(weights)
    for entry in entries:
        patched[entry.name] = patch_weight(entry, patched[entry.name])
    return DiffFile(method, entries, weights_digest(weights), weights_digest(patched), generation=generation,
                    seed=seed if method == "hash" else 0, num_hashes=2 if method == "hash" else 0,
                    graph_digest=graph_digest_of(model_path))


def signed(tmp, diff, path):
    """Save `diff` at `path` signed by the devices' trusted key, bound to the devices' graph."""
    diff.save(path)
    signing.sign(path, tmp / "server.pem", model=tmp / "base.tflite")
    return path


def weight_bytes(path):
    data = open(path, "rb").read()
    model = TFLiteFile(data)
    wmap = model.weight_map()
    out = {}
    for name in wmap.names():
        out[name] = b"".join(bytes(model.buffer_bytes(s.buffer)[4 * s.offset:4 * (s.offset + s.count)])
                             for s in wmap.segments(name))
    return out


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "device", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env=env)


def trusting(tmp):
    """Make tmp/server.pub the devices' trusted key ($TFDIFF_PUBLIC_KEY) and an empty tmp/keys their key
    directory, so no key of the machine's (/etc/tfdiff/keys) takes part; returns a function that undoes it."""
    (tmp / "keys").mkdir(mode=0o755, exist_ok=True)
    wanted = {trust.KEY_ENVIRONMENT: str(tmp / "server.pub"), trust.KEY_DIR_ENVIRONMENT: str(tmp / "keys")}
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)

    def undo():
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value
    return undo
