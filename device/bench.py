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


def apply_cost(model_path, diff_path, mode="inplace", repeats=3, public_key=None, directory=None, cpus=None):
    """Seconds, peak RSS and bytes written by `python -m device apply`, in a fresh process.

    `mode`: "inplace" (journal), "swap" (the copy strategy: a new file
    renamed over the model, the old one kept) or "out" (a new file beside).
    Median of repeats; each patches a fresh copy of the model, so the
    original is untouched. The copies live in a new private directory under
    `directory` (default: the system's temporary directory; "/dev/shm" puts
    them on a tmpfs, as a device's RAM-backed test would). `cpus` (for
    example "0") pins the applier to those CPUs with `taskset`.
    With `public_key` the signature check is part of the cost; without it
    the diff is applied with --allow-unsigned.

    Bytes: `written_bytes` is what the kernel counted the applier sending to
    the storage layer (/proc/self/io write_bytes: whole pages, the model's
    and the journal's; 0 on a tmpfs); `journal_bytes` the undo record an
    in-place apply keeps; `rollback_bytes` what is kept for rollback (that
    record, or the previous model file, a second name for the old one).
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
    trust = ["--public-key", os.path.abspath(public_key)] if public_key else ["--allow-unsigned"]
    pin = ["taskset", "-c", cpus] if cpus else []
    results = []
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        for _ in range(repeats):
            copy = os.path.join(tmp, "model.tflite")
            shutil.copyfile(model_path, copy)
            for name in os.listdir(tmp):  # the last repeat's output, state, undo record, lock: a fresh device
                if name.startswith(("model.tflite.", "patched.tflite")):
                    os.unlink(os.path.join(tmp, name))
            # On disk, as a device's model is: pages still dirty from the copy would hide the apply's writes
            # from its write count, and their writeback would land in its time.
            with open(copy, "rb+") as f:
                os.fsync(f.fileno())
            out = {"inplace": ["--strategy", "inplace"], "swap": ["--strategy", "copy"],
                   "out": ["--out", os.path.join(tmp, "patched.tflite")]}[mode]
            # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the
            # (large) parent across fork and exec, VmHWM starts afresh.
            script = ("import sys, time; from device.__main__ import main; "
                      "t = time.perf_counter(); code = main(sys.argv[1:]); "
                      "hwm = next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')); "
                      "io = next(l.split()[1] for l in open('/proc/self/io') if l.startswith('write_bytes')); "
                      "print('BENCH', time.perf_counter() - t, hwm, io); sys.exit(code)")
            # The child runs in the repository root: every path it gets is absolute.
            proc = subprocess.run(pin + [sys.executable, "-c", script, "apply", copy, os.path.abspath(diff_path)]
                                  + out + trust,
                                  capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(
                                      os.path.abspath(__file__))))
            line = [text for text in proc.stdout.splitlines() if text.startswith("BENCH")]
            if proc.returncode == 1:  # a refusal, in the child's one line: the caller's refusal too
                raise ValueError(proc.stderr.strip().split("error: ", 1)[-1])
            if proc.returncode or not line:
                raise RuntimeError(f"apply failed: {proc.stderr.strip() or proc.stdout.strip()}")
            _, seconds, maxrss_kb, written = line[0].split()
            journal = _size(copy + ".tfdiff-undo")
            kept = journal + _size(copy + ".tfdiff-previous")
            results.append((float(seconds), int(maxrss_kb) / 1024, int(written), journal, kept))
    median = np.median(np.array([r[:3] for r in results], dtype=np.float64), axis=0)
    return {"mode": mode, "seconds": float(median[0]), "peak_rss_mb": float(median[1]),
            "written_bytes": int(median[2]), "journal_bytes": results[-1][3], "rollback_bytes": results[-1][4],
            "model_bytes": os.path.getsize(model_path), "directory": directory or tempfile.gettempdir(),
            "cpus": cpus or "all"}


def copy_seconds(model_path, repeats=3, directory=None, fsync=False):
    """Median seconds of `cp` of the model (and, with `fsync`, `sync FILE` after it): the disk's own cost."""
    times = []
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        target = os.path.join(tmp, "copy.tflite")
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(["cp", os.fspath(model_path), target], check=True)
            if fsync:
                subprocess.run(["sync", target], check=True)
            times.append(time.perf_counter() - start)
            os.unlink(target)
    return float(np.median(times))


def _size(path):
    return os.path.getsize(path) if os.path.exists(path) else 0


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
              f"{cost['written_bytes']} bytes written, {cost['rollback_bytes']} bytes kept for rollback")
    return report
