"""Latency of a .tflite model under LiteRT, and the applier's own cost."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np


def latency(model_path, runs=50, warmup=5, threads=1, seed=0):
    """Median and p90 milliseconds of one invoke on random inputs, per signature."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=os.fspath(model_path), num_threads=threads)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(seed)
    for detail in interpreter.get_input_details():
        shape = [max(1, int(d)) for d in detail["shape"]]
        if np.issubdtype(detail["dtype"], np.integer):
            value = rng.integers(0, 2, size=shape).astype(detail["dtype"])
        else:
            value = rng.normal(size=shape).astype(detail["dtype"])
        interpreter.set_tensor(detail["index"], value)
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        interpreter.reset_all_variables()  # each run is a fresh utterance for fused LSTMs
        interpreter.invoke()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
            "runs": runs, "threads": threads}


MODES = ("inplace", "swap", "out")  # --strategy inplace, --strategy copy (renamed over the model), --out


def apply_cost(model_path, diff_path, mode="inplace", repeats=3, public_key=None):
    """Seconds, peak RSS and bytes kept for rollback of `python -m device apply`, in a fresh process.

    `mode`: "inplace" (journal), "swap" (the copy strategy: a new file
    renamed over the model, the old one kept) or "out" (a new file beside).
    Median of repeats; each patches a fresh copy of the model, so the
    original is untouched.
    With `public_key` the signature check is part of the cost; without it
    the diff is applied with --allow-unsigned.
    """
    trust = ["--public-key", os.path.abspath(public_key)] if public_key else ["--allow-unsigned"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            copy = os.path.join(tmp, "model.tflite")
            shutil.copyfile(model_path, copy)
            for name in os.listdir(tmp):  # the last repeat's output, state, undo record, lock: a fresh device
                if name.startswith(("model.tflite.", "patched.tflite")):
                    os.unlink(os.path.join(tmp, name))
            if mode not in MODES:
                raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
            out = {"inplace": ["--strategy", "inplace"], "swap": ["--strategy", "copy"],
                   "out": ["--out", os.path.join(tmp, "patched.tflite")]}[mode]
            # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the
            # (large) parent across fork and exec, VmHWM starts afresh.
            script = ("import sys, time; from device.__main__ import main; "
                      "t = time.perf_counter(); code = main(sys.argv[1:]); "
                      "hwm = next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')); "
                      "print('BENCH', time.perf_counter() - t, hwm); sys.exit(code)")
            # The child runs in the repository root: every path it gets is absolute.
            proc = subprocess.run([sys.executable, "-c", script, "apply", copy, os.path.abspath(diff_path)]
                                  + out + trust,
                                  capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(
                                      os.path.abspath(__file__))))
            line = [text for text in proc.stdout.splitlines() if text.startswith("BENCH")]
            if proc.returncode == 1:  # a refusal, in the child's one line: the caller's refusal too
                raise ValueError(proc.stderr.strip().split("error: ", 1)[-1])
            if proc.returncode or not line:
                raise RuntimeError(f"apply failed: {proc.stderr.strip() or proc.stdout.strip()}")
            _, seconds, maxrss_kb = line[0].split()
            # The rollback record: the journal kept as the undo record, or the previous model file.
            kept = sum(os.path.getsize(copy + suffix) for suffix in (".tfdiff-undo", ".tfdiff-previous")
                       if os.path.exists(copy + suffix))
            results.append((float(seconds), int(maxrss_kb) / 1024, kept))
    seconds, rss = np.median([r[0] for r in results]), np.median([r[1] for r in results])
    return {"mode": mode, "seconds": float(seconds), "peak_rss_mb": float(rss),
            "model_bytes": os.path.getsize(model_path), "rollback_bytes": int(results[-1][2])}


def main(model_path, diff_path=None, runs=50, threads=1, public_key=None, as_json=False):
    report = {"model": os.fspath(model_path), "latency": latency(model_path, runs=runs, threads=threads)}
    if diff_path:
        report["apply"] = [apply_cost(model_path, diff_path, mode, public_key=public_key) for mode in MODES]
    if as_json:
        print(json.dumps(report, indent=2))
        return report
    lat = report["latency"]
    print(f"{report['model']}: inference median {lat['median_ms']:.3f} ms, p90 {lat['p90_ms']:.3f} ms "
          f"({runs} runs, {threads} thread{'s' if threads > 1 else ''})")
    for cost in report.get("apply", []):
        how = {"inplace": "in place (journal)", "swap": "by a copy renamed over it", "out": "to a new file"}
        print(f"apply {how[cost['mode']]}: {cost['seconds']:.3f} s, peak RSS {cost['peak_rss_mb']:.1f} MB, "
              f"{cost['rollback_bytes']} bytes kept for rollback")
    return report
