"""int8 against float32 device models: bytes per update, accuracy, and LiteRT latency of the patched model.

Compares two finished FSC runs of the same scale and seed, one with float32
devices and one with `--quantize int8`, generation by generation and ratio
by ratio (sparse diffs: the int8 devices take no others).
"""
import json
import os

import numpy as np

from device.bench import latency


def run(float_run, int8_run, runs=200, rounds=3):
    results = {name: json.load(open(os.path.join(path, "results.json")))
               for name, path in (("float32", float_run), ("int8", int8_run))}
    if results["int8"]["flywheel"].get("quantize") != "int8" or results["float32"]["flywheel"].get("quantize"):
        raise ValueError(f"need a float32 run and an int8 run. Received: {float_run!r}, {int8_run!r}")
    ratios = sorted(set(results["float32"]["flywheel"]["ratios"]) & set(results["int8"]["flywheel"]["ratios"]))
    generations = min(len(r["generations"]) for r in results.values())
    rows = []
    for gen in range(generations):
        for key in ["BL"] + [f"Diff-sparse-{r}x" for r in ratios if gen > 0]:
            pair = {name: r["generations"][gen]["rows"].get(key) for name, r in results.items()}
            if not all(pair.values()):
                continue
            # runs recorded before the flywheel's one device view called the check "device_bit_exact"
            exact = pair["int8"].get("device_matches_fold", pair["int8"].get("device_bit_exact"))
            rows.append({"gen": gen, "model": key, "budget_bytes": pair["int8"].get("budget_bytes"),
                         **{f"{name}_accuracy": row["accuracy"] for name, row in pair.items()},
                         **{f"{name}_bytes": row.get("bytes") for name, row in pair.items()},
                         "int8_bit_exact": exact})
    # The patched models each chain's device ends with, timed alternately so drift hits both alike.
    timing = []
    for ratio in ratios:
        paths = {name: os.path.join(path, "devices", f"Diff-sparse-{ratio}x.tflite")
                 for name, path in (("float32", float_run), ("int8", int8_run))}
        medians = {name: [] for name in paths}
        for _ in range(rounds):
            for name, path in paths.items():
                medians[name].append(latency(path, runs=runs)["median_ms"])
        ms = {name: float(np.median(values)) for name, values in medians.items()}
        timing.append({"ratio": ratio, "generation": generations - 1, "float32_ms": ms["float32"],
                       "int8_ms": ms["int8"], "int8_to_float32": ms["int8"] / ms["float32"],
                       **{f"{name}_model_bytes": os.path.getsize(path) for name, path in paths.items()}})
    return {"float_run": os.path.abspath(float_run), "int8_run": os.path.abspath(int8_run),
            "rows": rows, "latency": timing, "threads": 1, "runs": runs, "rounds": rounds}
