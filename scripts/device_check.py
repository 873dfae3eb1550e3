"""The device's round trip on whatever machine runs it: apply, rollback, apply, LiteRT.

    python scripts/device_check.py WORK_DIR [BENCH_DIR] > report.json

Uses only the device runtime (numpy, flatbuffers, cryptography, ai-edge-litert)
on the golden files (tests/golden): a signed sparse diff applied in place, a
rollback, the hash diff applied, the patched model run by LiteRT, and after
a rollback each, the low-rank and the seed diffs applied in place. Prints
sha256 of each model state and the LiteRT outputs as JSON, for
scripts/arm64-check to compare across machines. With BENCH_DIR (a model and
its sparse and hash 10x diffs, from `python -m benchmarks.applying`), also the
apply benchmark's ratios on this machine: seconds of each apply over seconds
of copying the model with fsync, in this process.
"""
import hashlib
import json
import os
import platform
import shutil
import sys
import time

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


def main(work, bench=None):
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
    for method in ("sparse", "hash", "lowrank", "seed"):
        diffs[method] = os.path.join(work, f"{method}.tfdiff")
        signing.sign(os.path.join(GOLDEN, f"{method}.tfdiff"), key, out=diffs[method])
    report = {"machine": platform.machine(), "python": platform.python_version(), "numpy": np.__version__,
              "base": sha(model)}
    applier.apply(model, diffs["sparse"], public_key=pub, strategy="inplace")  # the journal, and its rollback
    report["sparse_applied"] = sha(model)
    report["sparse_matches_golden"] = report["sparse_applied"] == sha(os.path.join(GOLDEN, "sparse-patched.tflite"))
    report["rolled_back_to_generation"] = applier.rollback(model, public_key=pub)
    report["rolled_back_matches_base"] = sha(model) == report["base"]
    applier.apply(model, diffs["hash"], public_key=pub)
    report["hash_applied"] = sha(model)
    report["hash_matches_golden"] = report["hash_applied"] == sha(os.path.join(GOLDEN, "hash-patched.tflite"))
    report["litert_outputs"] = litert_outputs(model)
    applier.rollback(model, public_key=pub)
    applier.apply(model, diffs["lowrank"], public_key=pub, strategy="inplace")  # A B, term by term, on this CPU
    report["lowrank_applied"] = sha(model)
    report["lowrank_matches_golden"] = report["lowrank_applied"] == sha(os.path.join(GOLDEN, "lowrank-patched.tflite"))
    applier.rollback(model, public_key=pub)
    applier.apply(model, diffs["seed"], public_key=pub, strategy="inplace")  # bases drawn on this CPU
    report["seed_applied"] = sha(model)
    report["seed_matches_golden"] = report["seed_applied"] == sha(os.path.join(GOLDEN, "seed-patched.tflite"))
    if bench:
        report["apply_ratios"] = apply_ratios(work, bench)
    print(json.dumps(report, indent=2))


def apply_ratios(work, bench):
    """{diff and strategy: apply seconds / (copy + fsync seconds)} of the benchmark's model, medians of 3."""
    source = os.path.join(bench, "rnnt-shaped.tflite")
    copy = os.path.join(work, "bench.tflite")

    def fresh():
        for name in os.listdir(work):
            if name.startswith("bench.tflite"):
                os.unlink(os.path.join(work, name))
        start = time.perf_counter()
        shutil.copyfile(source, copy)
        with open(copy, "rb+") as f:
            os.fsync(f.fileno())
        return time.perf_counter() - start
    copy_seconds = sorted(fresh() for _ in range(3))[1]
    ratios = {}
    for method in ("sparse", "hash"):
        for strategy in ("inplace", "copy"):
            times = []
            for _ in range(3):
                fresh()
                start = time.perf_counter()
                applier.apply(copy, os.path.join(bench, f"rnnt-shaped-{method}10x.tfdiff"), allow_unsigned=True,
                              strategy=strategy)
                times.append(time.perf_counter() - start)
            ratios[f"{method} 10x {strategy}"] = round(sorted(times)[1] / copy_seconds, 1)
    return {"model_bytes": os.path.getsize(source), "copy_fsync_seconds": round(copy_seconds, 3), **ratios}


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
