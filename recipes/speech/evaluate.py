"""Evaluate a finished run's models again, on its own corpus or on another one.

    python -m recipes.fsc.evaluate RUN_DIR [--data DIR]
    python -m recipes.librispeech.evaluate RUN_DIR [--data DIR]

Every model the run saved is measured with the task's own metric: BL and
BLC of each generation, BL∞ (generation 0's BL) at each generation, and
each Diff's folded model, which is bit for bit the model its devices hold.
With --data the corpus is another one in the recipe's layout (prepared in
RUN_DIR/evaluate/<name>, with the run's settings and vocabulary). Writes
RUN_DIR/evaluate[-NAME].json and .md, and prints the table.
"""
import argparse
import json
import os

from tfdiff import keras



def evaluate_run(task, run_dir):
    with open(os.path.join(run_dir, "results.json")) as f:
        results = json.load(f)
    models = os.path.join(run_dir, "models")
    rows = []
    for generation in results["generations"]:
        gen = generation["gen"]
        for key in generation["rows"]:
            path = os.path.join(models, "BL-g0.keras" if key == "BLinf" else f"{key}-g{gen}.keras")
            if not os.path.exists(path):
                continue  # a run older than the saving of that model
            value = task.evaluate(keras.models.load_model(path, compile=False), gen)
            rows.append({"gen": gen, "model": key, task.metric: value,
                         "recorded": generation["rows"][key][task.metric]})
            print(json.dumps(rows[-1]), flush=True)
    return {"metric": task.metric, "rows": rows}


def markdown(result, corpus):
    metric = result["metric"]
    lines = [f"{metric} (%) on {corpus}; `recorded` is the run's own figure.", "",
             f"| gen | model | {metric} | recorded |", "|---|---|---|---|"]
    lines += [f"| {r['gen']} | {r['model']} | {100 * r[metric]:.1f} | {100 * r['recorded']:.1f} |"
              for r in result["rows"]]
    return "\n".join(lines)


def main(recipe, prog, argv=None):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run of the recipe")
    parser.add_argument("--data", help="another corpus in the recipe's layout (default: the run's own)")
    args = parser.parse_args(argv)
    task = recipe.load_task(args.run_dir, args.data)
    result = evaluate_run(task, args.run_dir)
    name = "evaluate" + (f"-{os.path.basename(os.path.normpath(args.data))}" if args.data else "")
    corpus = args.data or "the run's corpus"
    with open(os.path.join(args.run_dir, name + ".json"), "w") as f:
        json.dump({"corpus": corpus, **result}, f, indent=2)
    table = markdown(result, corpus)
    with open(os.path.join(args.run_dir, name + ".md"), "w") as f:
        f.write(table + "\n")
    print(table)
    return 0
