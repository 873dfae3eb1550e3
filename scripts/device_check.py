"""The device's round trip on whatever machine runs it: apply, rollback, apply, LiteRT.

    python scripts/device_check.py WORK_DIR > report.json

Uses only the device runtime (numpy, flatbuffers, cryptography, ai-edge-litert)
on the golden files (tests/golden): a signed sparse diff applied in place, a
rollback, the hash diff applied, and the patched model run by LiteRT. Prints
sha256 of each model state and the LiteRT outputs as JSON, for
scripts/arm64-check to compare across machines.
"""
import hashlib
import json
import os
import platform
import shutil
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from device import applier, signing  # noqa: E402

GOLDEN = os.path.join(ROOT, "tests", "golden")


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def litert_outputs(path):
    from ai_edge_litert.interpreter import Interpreter
    lite = Interpreter(model_path=path, num_threads=1)
    lite.allocate_tensors()
    tokens = (np.arange(5, dtype=np.int32)[None] * 7) % 30
    lite.set_tensor(lite.get_input_details()[0]["index"], tokens)
    lite.invoke()
    return lite.get_tensor(lite.get_output_details()[0]["index"]).reshape(-1).tolist()


def main(work):
    os.makedirs(work, exist_ok=True)
    key, pub = os.path.join(work, "k.pem"), os.path.join(work, "k.pub")
    for path in (key, pub):
        if os.path.exists(path):
            os.unlink(path)
    signing.keygen(key, pub)
    model = os.path.join(work, "model.tflite")
    for name in os.listdir(work):
        if name.startswith("model.tflite."):
            os.unlink(os.path.join(work, name))
    shutil.copyfile(os.path.join(GOLDEN, "base.tflite"), model)
    diffs = {}
    for method in ("sparse", "hash"):
        diffs[method] = os.path.join(work, f"{method}.tfdiff")
        signing.sign(os.path.join(GOLDEN, f"{method}.tfdiff"), key, out=diffs[method])
    report = {"machine": platform.machine(), "python": platform.python_version(), "numpy": np.__version__,
              "base": sha(model)}
    applier.apply(model, diffs["sparse"], public_key=pub)
    report["sparse_applied"] = sha(model)
    report["sparse_matches_golden"] = report["sparse_applied"] == sha(os.path.join(GOLDEN, "sparse-patched.tflite"))
    report["rolled_back_to_generation"] = applier.rollback(model)
    report["rolled_back_matches_base"] = sha(model) == report["base"]
    applier.apply(model, diffs["hash"], public_key=pub)
    report["hash_applied"] = sha(model)
    report["hash_matches_golden"] = report["hash_applied"] == sha(os.path.join(GOLDEN, "hash-patched.tflite"))
    report["litert_outputs"] = litert_outputs(model)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
