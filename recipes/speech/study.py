"""Studies behind a recipe's settings: is BL converged, and which diff regime is best?

    python -m recipes.fsc.study RUN_DIR curve [--steps 500 1000 2000 3000]
    python -m recipes.fsc.study RUN_DIR diff [--steps 150 300] [--lr 0.003 0.01] [--window 0.05,0.55 ...]
                                            [--gen 3 --chain Diff-hash-20x]
    python -m recipes.fsc.study RUN_DIR methods [--methods sparse lowrank ...] [--ratios 20 40 100 200]
                                               [--steps 250 500 1000] [--seeds 3] [--posthoc topk dare bitdelta]

RUN_DIR is a run of the recipe (its corpus, features and config are reused).
Studies choose settings, so they measure on the valid split (--split,
default valid); the test split only reports, in the recipe's results.

- `curve` trains BL from scratch at generation --gen (default 0) once per
  step count (and per seed, with --seeds), each with its own full
  learning-rate schedule, and reports the metric (and those of valid's
  recording conditions) against steps, with the mean and a t-interval over
  seeds: where more steps stop helping is where BL has converged.
- `diff` learns a generation-1 diff on top of the run's generation-0 BL
  for every (steps, learning rate, pruning window) and reports the folded
  model's metric (bit for bit the device's) beside BL's at generation 1.
  With --gen G --chain KEY, the diff of generation G starts from the run's
  chain KEY at G - 1 and is reported beside BL and KEY at G: a chain its
  earlier diffs moved may want another rate.
- `methods` decides between the diff methods: at generation 1, on top of
  the run's generation-0 BL, every method at every ratio and step count,
  with --seeds seeds each (the run's own learning rates), and the post-hoc
  baselines (BL of generation 0 fine-tuned for the same steps with no
  budget, FT, and its delta cut to each ratio's bytes by each --posthoc
  rule); a table of the mean [95 % t-interval] over seeds and the bytes,
  and a plot of the metric against bytes, one line per method and steps
  (study-methods.png). `--workers N` measures its cells in N processes;
  finished cells are kept in RUN_DIR/study/methods-SPLIT.jsonl, so an
  interrupted study resumes, and a larger grid measures only its new cells.

- `seeds` reruns a finished run's first --generations (default 2) with the
  seeds 1 .. --seeds - 1 (the run itself is seed 0), each in
  RUN_DIR/seeds/<seed> on the same corpus and settings, and reports each
  row's mean over the seeds with a 95 % t-interval, on test (these are
  the run's own rows, reported, not a choice), and each row's difference to
  its seed's BL. `--workers N` trains each generation's rows in N processes.

Each writes RUN_DIR/study-{curve,diff,seeds,methods}.json and .md, and prints the table.
"""
import argparse
import importlib
import json
import os
import shutil
import time

import tfdiff
from tfdiff import keras
from tfdiff.posthoc import RULES as POSTHOC_RULES

from .flywheel import Flywheel, FlywheelConfig, fine_tune, learn_diff, seed_row, sensitivity_of, steps_at
from .provenance import provenance
from .report import METHOD_TITLES, methods_plot, study_markdown, write_report
from .workers import run_concurrently


def _measure(task, model, gen, split):
    """{metric: value on `split`}, with valid's recording conditions when measuring on valid."""
    if split == "valid" and hasattr(task, "validate"):
        # validate measures valid itself among its keys: each split is measured once.
        measured = task.validate(model, gen)
        if f"valid_{task.metric}" in measured:
            return {task.metric: measured.pop(f"valid_{task.metric}"), **measured}
    return {task.metric: task.evaluate(model, gen, split)}


def bl_curve(task, run_dir, steps_list, gen=0, split="valid", seeds=(0,)):
    """BL from scratch at generation `gen` for every step count and seed, measured on `split`.

    With more than one seed, `summary` holds each step count's mean and 95 %
    t-interval over the seeds: one training moves by 2-4 points from its seed
    alone, so a setting is chosen by its interval, not one row.
    """
    rows, own_seed = [], getattr(task, "seed", 0)
    try:
        for steps in steps_list:
            for seed in seeds:
                start = time.time()
                task.seed = seed  # new_model and the data order draw from it
                seed_row(task, ("curve", gen, steps))
                model = task.new_model(gen)
                task.train(model, gen, steps, [], f"curve {steps} steps seed {seed}")
                row = {"steps": steps, "seed": seed, **_measure(task, model, gen, split),
                       "train_seconds": time.time() - start}
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        task.seed = own_seed
    result = {"study": "curve", "gen": gen, "split": split, "seeds": list(seeds), "rows": rows}
    if len(seeds) > 1:
        result["summary"] = [{"steps": steps, **{key: _t_interval([r[key] for r in rows if r["steps"] == steps])
                                                for key in rows[0] if key.endswith(("accuracy", "wer"))}}
                             for steps in steps_list]
    return result


def _gen0_bl(task, run_dir, bl_steps):
    """The run's own generation-0 BL, trained (and saved) here if the run has none yet."""
    base_path = os.path.join(run_dir, "models", "BL-g0.keras")
    if os.path.exists(base_path):
        return keras.models.load_model(base_path, compile=False)
    base = task.new_model(0)
    task.train(base, 0, steps_at(bl_steps, 0), [], "gen 0 BL")
    os.makedirs(os.path.dirname(base_path), exist_ok=True)
    base.save(base_path)
    return base


def diff_grid(task, run_dir, steps_list, learning_rates, windows, method="sparse", ratio=40, bl_steps=None,
              split="valid", gen=1, chain=None, flywheel=None):
    """A diff learned at generation `gen` for every (steps, learning rate, pruning window), measured on `split`.

    It starts from the run's generation-0 BL (`gen` 1), or from chain `chain`'s
    model of generation `gen` - 1 (a Diff row's key, e.g. "Diff-hash-20x"): a
    rate that suits generation 1 need not suit a chain its earlier diffs have
    moved. `flywheel`: the run's settings (budget, hashes, pruning frequency,
    learning rates); a learning rate of None is the run's for `method`.
    """
    if gen < 1 or (gen > 1 and not chain):
        raise ValueError(f"a diff study at generation {gen} needs `gen` >= 1, and a chain for `gen` > 1 "
                         f"(e.g. 'Diff-hash-20x'). Received: gen={gen}, chain={chain!r}")
    if gen == 1:
        base = _gen0_bl(task, run_dir, bl_steps)
    else:
        path = os.path.join(run_dir, "models", f"{chain}-g{gen - 1}.keras")
        if not os.path.exists(path):
            raise ValueError(f"the run has no model of chain {chain!r} at generation {gen - 1} ({path}). "
                             f"Received: chain={chain!r}, gen={gen}")
        base = keras.models.load_model(path, compile=False)
    rows = []
    for steps in steps_list:
        for learning_rate in learning_rates:
            for window in windows:
                config = FlywheelConfig.from_config({**(flywheel or {}), "diff_steps": steps, "diff_prune": window})
                rate = config.learning_rate(method, gen) if learning_rate is None else learning_rate
                start = time.time()
                # Generation 1 keeps the draws of the studies recorded before --gen existed.
                seed_row(task, ("diff", method, ratio, steps, learning_rate, window) if gen == 1
                         else ("diff", gen, chain, method, ratio, steps, rate, window))
                # seed=gen: the hash functions and bases the run's own diff of this generation drew.
                diff = learn_diff(task, base, config.method(method, ratio, steps, window, seed=gen), gen, steps,
                                  f"diff {steps} steps lr {rate} window {window}", rate)
                folded = tfdiff.fold(base, diff)
                row = {"steps": steps, "learning_rate": rate, "window": list(window),
                       **_measure(task, folded, gen, split), "bytes": diff.nbytes,
                       "train_seconds": time.time() - start}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return {"study": "diff", "method": method, "ratio": ratio, "gen": gen, "chain": chain, "split": split,
            "rows": rows, "BL": _bl_at(task, run_dir, bl_steps, split, gen),
            "chain_row": _run_metric(task, run_dir, split, gen, chain) if chain else None}


def methods_grid(task, run_dir, methods, ratios, steps_list, seeds, posthoc=(), flywheel=None, bl_steps=None,
                 split="valid", workers=None):
    """Generation-1 rows of every method x ratio x steps x seed, and the post-hoc baselines (module docstring).

    `flywheel` is the run's FlywheelConfig settings (learning rates, budget,
    pruning window), so each method trains as the run's diffs do. Every row
    is a cell of its own, seeded by its name (`seed_row`), so `workers`
    processes (recipes/speech/workers.py) give the rows one process gives;
    each finished cell is kept in RUN_DIR/study/methods-SPLIT.jsonl, and a
    study run again measures only the cells still missing.
    """
    # The run's training settings; what the study sets itself, and the BLC rows it does not train, left out.
    settings = {k: v for k, v in (flywheel or {}).items()
                if k not in ("methods", "ratios", "diff_steps", "posthoc", "blc_methods")}
    cells = _MethodCells(task, run_dir, settings, bl_steps, split)
    _gen0_bl(task, run_dir, bl_steps)  # trained here once, if the run has none, before any worker needs it
    ft = [("FT", None, steps, seed) for seed in seeds for steps in steps_list] \
        if posthoc or "sparse-warm" in methods else []  # FT: a row of its own, and where sparse-warm starts
    rest = [(f"Posthoc-{rule}", ratio, steps, seed) for seed in seeds for steps in steps_list
            for rule in posthoc for ratio in ratios]
    rest += [(f"Diff-{name}", ratio, steps, seed) for seed in seeds for steps in steps_list
             for name in methods for ratio in ratios]
    rest.sort(key=lambda cell: -cell[2])  # the longest trainings first, so no worker is left with one at the end
    done = cells.done()
    for phase in (ft, rest):  # post-hoc cuts and warm starts read their FT model
        pending = [(cell, cell) for cell in phase if cell not in done]
        if workers is None:
            finished = ((cell, cells.row(cell)) for cell, _ in pending)
        else:
            finished = run_concurrently(workers, None, _start_cells,
                                        (type(task).__module__, run_dir, settings, bl_steps, split),
                                        _cell_row, pending)
        for cell, row in finished:
            cells.keep(row)
            done[cell] = row
    rows = [done[cell] for cell in ft + sorted(rest, key=lambda c: (c[3], c[2], c[0], c[1]))]
    return {"study": "methods", "split": split, "seeds": list(seeds), "rows": rows,
            "summary": _methods_summary(rows, task.metric), "BL_gen1": _bl_at(task, run_dir, bl_steps, split),
            "row_commits": sorted({row["commit"] for row in rows})}


class _MethodCells:
    """The methods study's cells, (key, ratio, steps, seed), each measured to one row, and the rows kept."""

    def __init__(self, task, run_dir, settings, bl_steps, split):
        self.task, self.run_dir, self.settings, self.bl_steps, self.split = task, run_dir, settings, bl_steps, split
        self.path = os.path.join(run_dir, "study", f"methods-{split}.jsonl")
        self._base = None

    def done(self):
        """{cell: row} of the cells measured before (a line cut short by an interruption is not one)."""
        done, lines = {}, []
        if os.path.exists(self.path):
            with open(self.path) as f:
                lines = f.read().splitlines()
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[(row["key"], row["ratio"], row["steps"], row["seed"])] = row
        if len(done) < len(lines):  # rows appended later must not join the cut line
            with open(self.path + ".tmp", "w") as f:
                f.writelines(json.dumps(row) + "\n" for row in done.values())
            os.replace(self.path + ".tmp", self.path)
        return done

    def keep(self, row):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    def _ft_path(self, steps, seed):
        return os.path.join(self.run_dir, "study", f"FT-g1-{steps}steps-seed{seed}.keras")

    def row(self, cell):
        """Train and measure one cell: its row, with the commit it was measured at."""
        key, ratio, steps, seed = cell
        if self._base is None:
            self._base = _gen0_bl(self.task, self.run_dir, self.bl_steps)
        base, task = self._base, self.task
        config = FlywheelConfig(**{**self.settings, "diff_steps": steps})
        start, diff = time.time(), None
        if key == "FT":
            seed_row(task, ("methods", "FT", steps, seed))
            model = fine_tune(task, base, 1, steps, f"FT {steps} steps seed {seed}", config.learning_rate("ft"))
            os.makedirs(os.path.dirname(self._ft_path(steps, seed)), exist_ok=True)
            model.save(self._ft_path(steps, seed))
        elif key.startswith("Posthoc-"):
            tuned = keras.models.load_model(self._ft_path(steps, seed), compile=False)
            diff = tfdiff.posthoc_diff(base, tuned, ratio, 1, rule=key[len("Posthoc-"):], seed=seed)
            model = tfdiff.fold(base, diff)
        else:
            name = key[len("Diff-"):]
            seed_row(task, ("methods", name, ratio, steps, seed))
            method = config.method(name, ratio, steps, config.diff_prune, seed=1 + seed,
                                   sensitivity=sensitivity_of(task, base, 1) if name == "sparse-sensitive" else None)
            warm = None
            if name == "sparse-warm":
                tuned = keras.models.load_model(self._ft_path(steps, seed), compile=False)
                warm = tfdiff.posthoc_diff(base, tuned, ratio, 1, rule="topk", seed=seed)
            try:
                diff = learn_diff(task, base, method, 1, steps, f"{name} {ratio}x {steps} steps seed {seed}",
                                  config.learning_rate(name), start=warm)
            except tfdiff.BudgetError as e:  # a finding, not a failure: the method cannot ship in these bytes
                return {"key": key, "ratio": ratio, "steps": steps, "seed": seed, task.metric: None,
                        "bytes": None, "refused": str(e), "train_seconds": time.time() - start,
                        "commit": provenance(seeds=[])["commit"]}
            model = tfdiff.fold(base, diff)
        return {"key": key, "ratio": ratio, "steps": steps, "seed": seed, **_measure(task, model, 1, self.split),
                "bytes": None if diff is None else diff.nbytes, "train_seconds": time.time() - start,
                "commit": provenance(seeds=[])["commit"]}


_CELLS = None  # a worker process's own _MethodCells


def _start_cells(recipe_module, run_dir, settings, bl_steps, split):
    """Worker initializer: the run's task, loaded from its directory, and the study's cells over it."""
    global _CELLS
    task = importlib.import_module(recipe_module).RECIPE.load_task(run_dir)
    _CELLS = _MethodCells(task, run_dir, settings, bl_steps, split)


def _cell_row(cell):
    return _CELLS.row(cell)


def _methods_summary(rows, metric):
    """[{key, ratio, steps, values, mean, ci95, bytes}] over the seeds of each (key, ratio, steps)."""
    groups, summary = {}, []
    for row in rows:
        groups.setdefault((row["key"], row["ratio"], row["steps"]), []).append(row)
    for (key, ratio, steps), members in list(groups.items()):
        if any("refused" in r for r in members):  # the method's smallest diff exceeds these bytes
            summary.append({"key": key, "ratio": ratio, "steps": steps, "values": [], "mean": None, "ci95": None,
                            "bytes": None, "refused": members[0]["refused"]})
            del groups[(key, ratio, steps)]
    for (key, ratio, steps), members in groups.items():
        spread = _t_interval([r[metric] for r in members])
        if len(members) < 2:
            spread["ci95"] = None  # one seed: no interval
        nbytes = [r["bytes"] for r in members if r["bytes"] is not None]
        summary.append({"key": key, "ratio": ratio, "steps": steps, **spread,
                        "bytes": max(nbytes) if nbytes else None})
    return summary


def _run_metric(task, run_dir, split, gen, key):
    """Row `key`'s metric on `split` at generation `gen` in the run's results, or None."""
    name = task.metric if split == "test" else f"{split}_{task.metric}"
    try:
        with open(os.path.join(run_dir, "results.json")) as f:
            return json.load(f)["generations"][gen]["rows"][key][name]
    except (OSError, KeyError, IndexError):
        return None


def _bl_at(task, run_dir, bl_steps, split, gen=1):
    """BL's metric on `split` at generation `gen`: the run's, or a BL trained here for the comparison."""
    value = _run_metric(task, run_dir, split, gen, "BL")
    if value is not None:
        return value
    path = os.path.join(run_dir, "models", f"BL-g{gen}.keras")  # trained once for all the studies of this run
    if os.path.exists(path):
        model = keras.models.load_model(path, compile=False)
    else:
        model = task.new_model(gen)
        task.train(model, gen, steps_at(bl_steps, gen), [], f"gen {gen} BL")
        model.save(path)
    return task.evaluate(model, gen, split)


def seed_runs(recipe, task, run_dir, seeds, generations=2, workers=None):
    """The run's first `generations` of `recipe` again with each seed in `seeds`; rows of every seed, 0 included."""
    with open(os.path.join(run_dir, "config.json")) as f:
        saved = json.load(f)
    with open(os.path.join(run_dir, "results.json")) as f:
        base = json.load(f)
    if len(base["generations"]) < generations:
        raise ValueError(f"{run_dir} has {len(base['generations'])} generations; the study needs {generations}")
    settings = json.loads(json.dumps(saved["settings"]))
    settings["flywheel"]["generations"] = generations
    per_seed = {0: base["generations"][:generations]}
    for seed in seeds:
        out = os.path.join(run_dir, "seeds", str(seed))
        os.makedirs(out, exist_ok=True)
        shutil.copyfile(os.path.join(run_dir, "vocab.txt"), os.path.join(out, "vocab.txt"))
        features = os.path.join(out, "features")  # the same corpus and frames: the same features
        if not os.path.exists(features) and os.path.isdir(os.path.join(run_dir, "features")):
            os.symlink(os.path.abspath(os.path.join(run_dir, "features")), features)
        seeded = recipe.prepare(out, data_dir=saved["data"], scale=saved["scale"], seed=seed, settings=settings)
        flywheel = Flywheel(seeded, FlywheelConfig(**settings["flywheel"]), out, saved["scale"], workers=workers)
        per_seed[seed] = flywheel.run()["generations"]
        write_report(flywheel.results, out)
    return {"study": "seeds", "seeds": sorted(per_seed), "generations": generations, "metric": task.metric,
            "rows": _over_seeds(per_seed, task.metric)}


def _over_seeds(per_seed, metric):
    """[{gen, key, values, mean, ci95, minus_BL: {values, mean, ci95}}] over the seeds."""
    out = []
    first = next(iter(per_seed.values()))
    for gen, generation in enumerate(first):
        for key in generation["rows"]:
            values = [runs[gen]["rows"][key][metric] for runs in per_seed.values()]
            row = {"gen": gen, "key": key, **_t_interval(values)}
            if key != "BL":
                row["minus_BL"] = _t_interval([runs[gen]["rows"][key][metric] - runs[gen]["rows"]["BL"][metric]
                                               for runs in per_seed.values()])
            out.append(row)
    return out


def _t_interval(values):
    """Mean and 95 % t-interval of a few seeds' values."""
    import numpy as np
    values = [float(v) for v in values]
    mean = float(np.mean(values))
    if len(values) < 2:
        return {"values": values, "mean": mean, "ci95": [mean, mean]}
    # Student's t, 97.5th percentile, for 1-9 degrees of freedom: a few seeds are all a run affords.
    t = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262][min(len(values) - 1, 9) - 1]
    half = t * float(np.std(values, ddof=1)) / len(values) ** 0.5
    return {"values": values, "mean": mean, "ci95": [mean - half, mean + half]}


def task_scale(run_dir):
    with open(os.path.join(run_dir, "config.json")) as f:
        return json.load(f)["scale"]


def main(recipe, prog, argv=None):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run directory of the recipe (made, synthetic, if it does not exist)")
    parser.add_argument("--scale", default="demo", choices=sorted(recipe.scales),
                        help="the scale of a new run directory")
    parser.add_argument("study", choices=("curve", "diff", "seeds", "methods"))
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override the scale's settings, as for the recipe's run")
    parser.add_argument("--steps", type=int, nargs="+", help="step counts to try")
    parser.add_argument("--gen", type=int, default=None,
                        help="curve: the generation whose BL is trained (default 0); diff: the generation the "
                             "diff is learned at (default 1)")
    parser.add_argument("--chain", default=None,
                        help="diff at --gen > 1: the run's chain (e.g. Diff-hash-20x) whose previous model it "
                             "starts from")
    parser.add_argument("--lr", type=float, nargs="+", default=[None],
                        help="diff: peak learning rates (default: the run's for --method)")
    parser.add_argument("--window", nargs="+", default=["0.05,0.55"],
                        help="diff: pruning windows START,END as fractions of the steps")
    parser.add_argument("--method", default="sparse", choices=tuple(METHOD_TITLES))
    parser.add_argument("--methods", nargs="+", default=list(METHOD_TITLES), choices=tuple(METHOD_TITLES),
                        help="methods: the diff methods compared")
    parser.add_argument("--ratios", type=int, nargs="+", default=[20, 40, 100, 200], help="methods: compressions")
    parser.add_argument("--posthoc", nargs="*", default=list(POSTHOC_RULES), choices=POSTHOC_RULES,
                        help="methods: the post-hoc rules cutting FT - F_t (none: no FT either)")
    parser.add_argument("--ratio", type=int, default=40)
    parser.add_argument("--bl-steps", type=int, default=None,
                        help="diff: steps of the generation-0 BL, if the run has none (default: the scale's)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="how many seeds: seeds, methods (default 3; seeds: the run's own seed 0 included), "
                             "curve (default 1)")
    parser.add_argument("--generations", type=int, default=2, help="seeds: generations rerun per seed")
    parser.add_argument("--workers", type=int, default=None, help="seeds, methods: worker processes, as for the run")
    parser.add_argument("--split", default="valid",
                        help="the split measured (default valid: studies choose settings, test only reports)")
    args = parser.parse_args(argv)
    record = provenance(seeds=[])  # before anything runs: the code the study ran, not the code at its end
    if os.path.exists(os.path.join(args.run_dir, "config.json")):
        if args.set:  # the run's models were made with its saved settings: a study reuses them
            parser.error(f"--set applies to a new run directory; {args.run_dir} has its settings in config.json. "
                         f"Received: --set {' '.join(args.set)}")
        task = recipe.load_task(args.run_dir)
    else:
        try:
            settings = recipe.settings(args.scale, args.set)
        except ValueError as e:
            parser.error(str(e))
        task = recipe.prepare(args.run_dir, synthetic=True, scale=args.scale, settings=settings)
    if args.split not in getattr(task, "splits", ("test",)):
        splits = list(getattr(task, "splits", ("test",)))
        parser.error(f"this recipe's task has no {args.split!r} split (it has {splits}); "
                     f"pass --split test only to report, never to choose a setting. Received: --split {args.split}")
    with open(os.path.join(args.run_dir, "config.json")) as f:
        flywheel = json.load(f)["settings"]["flywheel"]  # the run's: its diffs and studies train alike
    if args.study == "seeds":
        result = seed_runs(recipe, task, args.run_dir, range(1, args.seeds or 3), args.generations, args.workers)
    elif args.study == "methods":
        result = methods_grid(task, args.run_dir, args.methods, args.ratios, args.steps or [250, 500, 1000],
                              range(args.seeds or 3), args.posthoc, flywheel, flywheel["bl_steps"], args.split,
                              args.workers)
    elif args.study == "curve":
        result = bl_curve(task, args.run_dir, args.steps or [500, 1000, 2000, 3000], args.gen or 0, args.split,
                          range(args.seeds or 1))
    else:
        windows = [tuple(float(x) for x in w.split(",")) for w in args.window]
        try:
            result = diff_grid(task, args.run_dir, args.steps or [150, 300], args.lr, windows, args.method,
                               args.ratio,
                               args.bl_steps or recipe.scales[task_scale(args.run_dir)]["flywheel"]["bl_steps"],
                               args.split, args.gen or 1, args.chain, flywheel)
        except ValueError as e:
            parser.error(str(e))
    result["metric"], result["provenance"] = task.metric, {**record, "seeds": result.get("seeds")
                                                           or [getattr(task, "seed", 0)]}
    table = study_markdown(result, task.metric)
    name = os.path.join(args.run_dir, f"study-{args.study}")
    with open(name + ".json", "w") as f:
        json.dump(result, f, indent=2)
    with open(name + ".md", "w") as f:
        f.write(table + "\n")
    if args.study == "methods":
        methods_plot(result, task.metric, name + ".png")
    print(table)
