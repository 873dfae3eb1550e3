"""python -m benchmarks {all,wire,apply,train,latency,fuzz,attack,int8} --out DIR [--run FSC_RUN]
                       [--int8-run FSC_INT8_RUN] [--tiny]

Writes DIR/benchmarks.json (every figure, with the machine), DIR/BENCHMARKS.md
and DIR/*.png. `wire`, `latency` and `int8` need a finished FSC run (--run);
without one, it is first run (the demo) into DIR/fsc-run. `int8` compares it
with a run of int8 devices (--int8-run, made like --run but with
`--quantize int8`; without one, into DIR/fsc-run-int8). --tiny shrinks
every part for the test suite.
"""
import argparse
import json
import os
import sys

from benchmarks import machine

PARTS = ("wire", "apply", "train", "latency", "fuzz", "attack", "int8")


def run(parts, out, run_dir=None, tiny=False, int8_run=None):
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "benchmarks.json")
    report = json.load(open(path)) if os.path.exists(path) else {}
    report["machine"] = machine.describe()
    # Parts may be rerun alone; each keeps the commit and time it was measured at.
    measured = report.setdefault("measured", {})
    for part in parts:
        measured[part] = {**{k: report["machine"][k] for k in ("commit", "date")},
                          "command": " ".join(["python -m benchmarks", *sys.argv[1:]])}
    if ({"wire", "latency", "int8"} & set(parts)) and run_dir is None:
        from recipes.fsc.run import run as fsc_run
        run_dir = os.path.join(out, "fsc-run")
        fsc_run(run_dir, synthetic=True, scale="tiny" if tiny else "demo")
    if "wire" in parts:
        from benchmarks import wire
        report["wire"] = wire.run(run_dir, out)
        report["fsc_run"] = os.path.abspath(run_dir)
    if "apply" in parts:
        from benchmarks import applying
        report["apply"] = applying.run(out, tiny=tiny, repeats=1 if tiny else 3)
    if "train" in parts:
        from benchmarks import training
        result = training.run(steps=5, warmup=2, rounds=1, tiny=True) if tiny else training.run()
        report["train_step_ratio"] = result["ratio"]
        report["train_step_seconds"] = result["step_seconds"]
        keras3 = training.run_keras3(steps=5, warmup=2, rounds=1, tiny=True) if tiny else training.run_keras3()
        report["train_keras3_ratio"] = keras3["ratio"]
        report["train_keras3_seconds"] = keras3["step_seconds"]
    if "latency" in parts:
        from benchmarks import latency
        with open(os.path.join(run_dir, "results.json")) as f:
            ratio = json.load(f)["flywheel"]["ratios"][-1]
        result = latency.run(os.path.join(run_dir, "devices", "gen0.tflite"),
                             os.path.join(run_dir, "models", "BL-g0.keras"),
                             os.path.join(run_dir, "diffs", f"Diff-sparse-{ratio}x-g1.tfdiff"), out,
                             runs=20 if tiny else 200, rounds=1 if tiny else 3)
        report["latency_ratio"] = result["ratio"]
        report["latency"] = result
    if "int8" in parts:
        from benchmarks import int8
        if int8_run is None:
            from recipes.fsc.run import RECIPE, run as fsc_run
            with open(os.path.join(run_dir, "results.json")) as f:
                recorded = json.load(f)
            scale = recorded["scale"]
            settings = RECIPE.settings(scale, ["flywheel.quantize=int8", 'flywheel.methods=["sparse"]',  # compared
                                               f"flywheel.ratios={json.dumps(recorded['flywheel']['ratios'])}"])
            int8_run = os.path.join(out, "fsc-run-int8")
            fsc_run(int8_run, synthetic=True, scale=scale, settings=settings)
        report["int8"] = int8.run(run_dir, int8_run, runs=20 if tiny else 200, rounds=1 if tiny else 3)
    if "fuzz" in parts:
        from benchmarks import fuzz
        report["fuzz"] = fuzz.run(count=60 if tiny else 2000)
    if "attack" in parts:
        from benchmarks import attack
        report["attack"] = attack.run(crafted_mib=4 if tiny else 64)
    with open(path + ".tmp", "w") as f:
        json.dump(report, f, indent=2)
    os.replace(path + ".tmp", path)
    from benchmarks.report import write
    write(report, out)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("all",) + PARTS)
    parser.add_argument("--out", required=True)
    parser.add_argument("--run", help="a finished FSC run directory (for wire and latency)")
    parser.add_argument("--int8-run", help="a finished FSC run with --quantize int8 (for int8)")
    parser.add_argument("--tiny", action="store_true", help="tiny inputs, for tests")
    args = parser.parse_args(argv)
    parts = PARTS if args.part == "all" else (args.part,)
    run(parts, args.out, args.run, args.tiny, args.int8_run)
    print(open(os.path.join(args.out, "BENCHMARKS.md")).read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
