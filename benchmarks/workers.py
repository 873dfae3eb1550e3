"""python -m benchmarks.workers --run RUN_DIR [--recipe fsc|librispeech] [--steps 300] [--out FILE]

Training throughput of one process using every core against one worker
process per core (recipes/speech/workers.py): the same two BL trainings
of `--steps` steps of the run's task (a run of --recipe, default fsc), first one after the other in one
process (TensorFlow's default threads), then side by side in two spawned
processes with one intra-op thread each. Prints (and writes to --out) one
JSON object with both wall times, their ratio and the provenance.
"""
import argparse
import importlib
import json
import os
import time

from recipes.speech.provenance import provenance
from recipes.speech.workers import process_pool


def _train(recipe, run_dir, steps, trainings):
    """Seconds to train `trainings` BL models in this (fresh) process, task loading excluded."""
    task = importlib.import_module(f"recipes.{recipe}.run").RECIPE.load_task(run_dir)
    start = time.perf_counter()
    for i in range(trainings):
        task.train(task.new_model(0), 0, steps, [], f"training {i}")
    return time.perf_counter() - start


def run(run_dir, steps=300, recipe="fsc"):
    with process_pool(1) as pool:
        one = pool.submit(_train, recipe, run_dir, steps, 2).result()
    with process_pool(2, threads=1) as pool:
        # Task loading differs between processes; each reports its own training time, and the pair's
        # wall time is the slower one.
        two = max(f.result() for f in [pool.submit(_train, recipe, run_dir, steps, 1) for _ in range(2)])
    return {"recipe": recipe, "steps": steps, "trainings": 2, "one_process_seconds": round(one, 1),
            "two_workers_seconds": round(two, 1), "speedup": round(one / two, 3),
            "provenance": provenance(seeds=[0])}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a run directory of --recipe (its corpus and features are reused)")
    parser.add_argument("--recipe", default="fsc", choices=("fsc", "librispeech"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    if not os.path.exists(os.path.join(args.run, "config.json")):
        parser.error(f"{args.run} is not a run directory (no config.json). Received: --run {args.run}")
    result = run(args.run, args.steps, args.recipe)
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    main()
