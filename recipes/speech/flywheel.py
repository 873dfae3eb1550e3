"""The model flywheel of the paper, shared by both recipes.

Generation 0 trains the unconstrained model and converts it once: that
.tflite is what every device holds. Each later generation trains, on the
grown data set:

- BL: a fresh model, unconstrained;
- BLC-{method}-{r}x: the paper's compressed baseline, a fresh model
  trained from scratch for as many steps as BL, under the same byte budget
  the whole time it matters (tfdiff.compress_baseline: magnitude pruning
  late in training, or HashedNets);
- Diff-{method}-{r}x: a diff learned on top of the model the device holds
  after the previous diffs of this chain, applied to the chain's .tflite
  with device.apply and evaluated there, with LiteRT;
- BLinf: the generation-0 model, never updated.

With `quantize="int8"` every device model is TFLite's dynamic-range int8
(tfdiff/quantized.py): generation 0 is converted to int8 once, diffs are
learned against the chain's int8 weights and ship int8 deltas, and BL, BLC
and BLinf are measured after the same int8 conversion, so every column
compares int8 models under LiteRT.

Every finished row is written to results.json at once, with the models and
diffs it needs, so an interrupted run resumes where it stopped. Each row
holds the test metric (the table), the valid metrics (what studies choose
by), and, for tasks that score each utterance, a 95 % interval from a
bootstrap over test speakers; rows after BL also hold the paired interval
of their difference to BL, and each Diff row that of its difference to its
BLC. results.json records the provenance of every
invocation (commit, command, machine, date, packages, seed).
"""
import importlib
import json
import os
import shutil
import time
import zlib

import numpy as np

import device
import tfdiff
from device.applier import installed_generation
from tfdiff import keras
from tfdiff.posthoc import RULES as POSTHOC_RULES

from .intervals import bootstrap, metric, paired
from .provenance import provenance
from .report import BLC_METHODS, METHOD_TITLES, blc_key
from .task import Task
from .workers import run_concurrently


class FlywheelConfig:
    """What the flywheel trains: ratios, methods and step counts; `get_config` round-trips.

    Args:
        generations: models in the chain, generation 0 included.
        ratios: compressions (byte budgets 4N / ratio) of every method.
        methods: any of "sparse", "hash" (the paper's), "sparse-global"
            (a sparse diff allocated across layers), "sparse-sensitive" (the
            same, each weight's magnitudes weighed by how much the loss on
            valid feels it: the task's `sensitivity`), "sparse-warm" (a sparse
            diff starting from the top-k of FT - F_t, FT trained first in the
            same job), "lowrank" (W + A B) and "seed" (random bases from a
            seed, scalings on the wire).
        bl_steps: training steps of BL, and of BLC (trained from scratch too);
            or a list, one per generation from 0 (the last for every later
            one): a generation with more data trains longer.
        diff_steps: training steps of each diff; or a list, as `bl_steps`
            (its first entry, generation 0's, unused: nothing is diffed there).
        diff_prune, blc_prune: the pruning window, as fractions of the
            training's steps; the steps after it fine-tune the final mask.
        diff_learning_rate: peak learning rate of the diffs (None: the
            task's own), or {method: rate} (a method not named: the task's);
            the diffs start at zero, so their scale is theirs. A rate may be
            a list, one per generation from 1 (the last for every later
            one): a hash diff scales |W| of a chain its earlier diffs moved.
        budget: "coded" (fill the byte budget after entropy coding), "wire"
            (fill it before: LZMA2 then leaves about a fifth unspent) or
            "nominal" (the paper's N / ratio values), see tfdiff/budget.py.
            BLC is planned the same way, and its bytes counted coded.
        num_hashes: K of the hash methods.
        prune_frequency: steps between pruning-mask updates.
        quantize: None (float32 device models) or "int8".
        blc_methods: the methods BLC is trained with (None: the paper's
            among `methods`, sparse and hash); each BLC trains as long as
            BL, so a run short of time drops some.
        posthoc: rules of `tfdiff.posthoc_diff` ("topk", "dare", "bitdelta"), each a
            chain of rows "Posthoc-RULE-Rx": the device's model fine-tuned
            with every weight free for `diff_steps`, its delta cut after the
            fact to the budget; and a row "FT", that fine-tuning with no
            budget (a chain from BL of generation 0). Empty: neither.
        teacher_weight: 0, or the share of each diff's loss spent matching
            the same generation's BL (distillation; the task must take a
            teacher: `distills`). BL then trains before the diffs of its
            generation, beside the BLCs, and the diffs after it.
    """

    def __init__(self, generations=4, ratios=(20, 40), methods=("sparse", "hash"), bl_steps=1000,
                 diff_steps=400, diff_prune=(0.05, 0.55), blc_prune=(0.3, 0.8), diff_learning_rate=None,
                 budget="wire", num_hashes=3, prune_frequency=10, quantize=None, blc_methods=None, posthoc=(),
                 teacher_weight=0.0):
        if generations < 2:
            raise ValueError(f"`generations` must be at least 2. Received: generations={generations}")
        for name, window in (("diff_prune", diff_prune), ("blc_prune", blc_prune)):
            if not 0 <= window[0] < window[1] <= 1:
                raise ValueError(f"`{name}` must be (start, end) fractions, 0 <= start < end <= 1. "
                                 f"Received: {name}={window!r}")
        if not methods or not set(methods) <= set(METHOD_TITLES):
            raise ValueError(f"`methods` must be some of {list(METHOD_TITLES)}. Received: methods={list(methods)!r}")
        self.generations, self.ratios, self.methods = generations, tuple(ratios), tuple(methods)
        for name, value in (("bl_steps", bl_steps), ("diff_steps", diff_steps)):
            steps = value if isinstance(value, (list, tuple)) else [value]
            if not steps or not all(isinstance(n, int) and n > 0 for n in steps):
                raise ValueError(f"`{name}` must be a positive integer or a non-empty list of them, one per "
                                 f"generation. Received: {name}={value!r}")
        self.bl_steps, self.diff_steps = bl_steps, diff_steps
        self.diff_prune, self.blc_prune = tuple(diff_prune), tuple(blc_prune)
        rates = diff_learning_rate.values() if isinstance(diff_learning_rate, dict) else [diff_learning_rate]
        for rate in rates:
            if isinstance(rate, (list, tuple)) and not (rate and all(isinstance(r, (int, float)) and r > 0
                                                                     for r in rate)):
                raise ValueError("a learning rate per generation must be a non-empty list of positive numbers. "
                                 f"Received: diff_learning_rate={diff_learning_rate!r}")
        self.diff_learning_rate = diff_learning_rate
        self.budget, self.num_hashes, self.prune_frequency = budget, num_hashes, prune_frequency
        if quantize not in (None, "int8"):
            raise ValueError(f"`quantize` must be None or 'int8'. Received: quantize={quantize!r}")
        self.quantize = quantize
        if blc_methods is not None and not set(blc_methods) <= set(methods) & set(BLC_METHODS):
            raise ValueError(f"`blc_methods` must be among `methods` and {BLC_METHODS}. Received: "
                             f"blc_methods={blc_methods!r}, methods={list(methods)}")
        self.blc_methods = None if blc_methods is None else tuple(blc_methods)
        if not set(posthoc) <= set(POSTHOC_RULES) or (posthoc and quantize):
            raise ValueError(f"`posthoc` must be some of {POSTHOC_RULES}, with float32 devices. Received: "
                             f"posthoc={list(posthoc)!r}, quantize={quantize!r}")
        self.posthoc = tuple(posthoc)
        if not isinstance(teacher_weight, (int, float)) or not 0 <= teacher_weight < 1:
            raise ValueError(f"`teacher_weight` must be in [0, 1). Received: teacher_weight={teacher_weight!r}")
        self.teacher_weight = float(teacher_weight)

    def get_config(self):
        config = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}
        # Runs recorded before a setting existed keep their settings: its default is left out.
        for key, default in (("quantize", None), ("blc_methods", None), ("posthoc", []), ("teacher_weight", 0.0)):
            if config[key] == default:
                del config[key]
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def learning_rate(self, method, gen=1):
        """The diffs' peak learning rate for `method` at generation `gen` (None: the task's own)."""
        rate = self.diff_learning_rate
        rate = rate.get(method) if isinstance(rate, dict) else rate
        return rate[min(gen, len(rate)) - 1] if isinstance(rate, (list, tuple)) else rate

    def bl_steps_at(self, gen):
        """BL's (and BLC's) training steps at generation `gen`.

        >>> FlywheelConfig(bl_steps=[1500, 2000]).bl_steps_at(3)
        2000
        """
        return steps_at(self.bl_steps, gen)

    def diff_steps_at(self, gen):
        """Each diff's (and FT's) training steps at generation `gen`."""
        return steps_at(self.diff_steps, gen)

    @property
    def blc_method_names(self):
        """The methods a BLC row is trained with."""
        return tuple(m for m in self.methods if m in BLC_METHODS) if self.blc_methods is None else self.blc_methods

    def method(self, name, ratio, steps, prune, seed, sensitivity=None):
        """The diff method `name` at `ratio` for `steps` (`sensitivity`: "sparse-sensitive"'s scales)."""
        if name in ("sparse", "sparse-global", "sparse-warm", "sparse-sensitive"):
            begin, end = int(prune[0] * steps), max(int(prune[1] * steps), int(prune[0] * steps) + 1)
            return tfdiff.SparseDiff(compression=float(ratio), begin_step=begin, end_step=end,
                                     frequency=max(1, min(self.prune_frequency, (end - begin) // 4)),
                                     budget=self.budget,
                                     allocation="layer" if name in ("sparse", "sparse-warm") else "global",
                                     sensitivity=sensitivity if name == "sparse-sensitive" else None)
        if name == "lowrank":
            return tfdiff.LowRankDiff(compression=float(ratio), seed=seed, budget=self.budget)
        if name == "seed":
            return tfdiff.SeedDiff(compression=float(ratio), seed=seed, budget=self.budget)
        return tfdiff.HashDiff(compression=float(ratio), num_hashes=self.num_hashes, seed=seed,
                               budget=self.budget)


def steps_at(steps, gen):
    """`steps` (`FlywheelConfig`'s bl_steps or diff_steps: a count, or a list from generation 0) at `gen`."""
    return steps[min(gen, len(steps) - 1)] if isinstance(steps, (list, tuple)) else steps


class Flywheel:
    """Runs a task (recipes/speech/task.py) through the generations; see the module docstring.

    Example: the README's "Your own task".
    """

    def __init__(self, task: Task, config: FlywheelConfig, run_dir: str, scale: str, strategy=None, workers=None,
                 threads=None):
        import tensorflow as tf
        if workers is not None and workers < 1:
            raise ValueError("`workers` must be None (train in this process) or at least 1. "
                             f"Received: workers={workers!r}")
        self.task, self.config, self.run_dir, self.scale = task, config, run_dir, scale
        self.workers, self.threads = workers, threads
        self.base_tflite = os.path.join(run_dir, "devices", "gen0.tflite")
        # Models are built and trained in the strategy's scope; conversion,
        # folding and evaluation happen outside it, on plain models.
        self.strategy = strategy or tf.distribute.get_strategy()
        for sub in ("models", "diffs", "devices"):
            os.makedirs(os.path.join(run_dir, sub), exist_ok=True)
        self.results_path = os.path.join(run_dir, "results.json")
        self.results = self._load()
        self.results.setdefault("strategy", type(self.strategy).__name__)  # how the run was trained
        self.results.setdefault("provenance", []).append(provenance(seeds=[getattr(task, "seed", 0)]))
        os.makedirs(os.path.join(run_dir, "scores"), exist_ok=True)

    # -- state ---------------------------------------------------------------
    def _load(self):
        if os.path.exists(self.results_path):
            with open(self.results_path) as f:
                results = json.load(f)
            saved, wanted = results.get("flywheel") or {}, self.config.get_config()
            # More generations extend a run: a generation's data and models do not depend on
            # how many follow it. Any other setting changes what the finished rows mean.
            extendable = saved.get("generations", wanted["generations"] + 1) <= wanted["generations"]
            if not extendable or {**saved, "generations": 0} != {**wanted, "generations": 0} \
                    or results.get("scale") != self.scale:
                raise ValueError(f"{self.results_path} was made with other settings; use a new --out")
            results["flywheel"] = wanted
            return results
        return {"task": self.task.name, "metric": self.task.metric, "scale": self.scale,
                "flywheel": self.config.get_config(), "generations": []}

    def _save(self):
        tmp = self.results_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.results, f, indent=2)
        os.replace(tmp, self.results_path)

    def _row(self, gen):
        while len(self.results["generations"]) <= gen:
            g = len(self.results["generations"])
            self.results["generations"].append({"gen": g, **self.task.describe(g), "rows": {}})
        return self.results["generations"][gen]["rows"]

    def _record(self, gen, key, row):
        self._row(gen)[key] = row
        self._save()
        print(f"gen {gen} {key}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                for k, v in row.items()), flush=True)

    def _model_path(self, key, gen):
        return os.path.join(self.run_dir, "models", f"{key}-g{gen}.keras")

    def _load_model(self, key, gen):
        return keras.models.load_model(self._model_path(key, gen), compile=False)

    # -- the run ---------------------------------------------------------------
    def run(self):
        """Every generation's rows not yet in results.json; returns the results.

        The rows of all generations are one pool of jobs: a job starts once
        its inputs are recorded (`_ready`), so BL and BLC, which start from
        scratch, train beside any generation's diffs.
        """
        pending = [((0, "BL"), ("bl", 0))] if "BL" not in self._row(0) else []
        pending += [((gen, key), job) for gen in range(1, self.config.generations) for key, job in self._pending(gen)]
        self._base()
        for (gen, key), row in self._run_jobs(pending):
            self._record(gen, key, row)
            self._base()
            if not (self._pending(gen) if gen else "BLinf" not in self._row(0)):
                self._intervals(gen)
        for gen in range(self.config.generations):  # a run killed between a record and its intervals
            self._intervals(gen)
        return self.results

    def _base(self):
        """Once generation 0's BL is trained: the devices' first model (its .tflite) and its BL∞ row."""
        if "BL" not in self._row(0):
            return
        if not os.path.exists(self.base_tflite):
            self._convert(self._load_model("BL", 0), self.base_tflite)
        if "BLinf" not in self._row(0):
            value, extras = self.task.evaluate_tflite(self.base_tflite, 0)
            self._scores(0, "BLinf", extras.pop("scores", None))
            self._record(0, "BLinf", {self.task.metric: value, **extras,
                                      "tflite_bytes": os.path.getsize(self.base_tflite)})

    def _run_jobs(self, pending):
        """Yield ((gen, key), row) for `pending`'s jobs as they finish: here, or in the worker processes."""
        if self.workers is not None:
            yield from run_concurrently(self.workers, self.threads, _start_worker,
                                        (type(self.task).__module__, self.run_dir, self.scale,
                                         self.config.get_config()), _worker_row, pending, self._ready)
            return
        waiting = list(pending)
        while waiting:
            key, job = next(((k, j) for k, j in waiting if self._ready(k, j)), (None, None))
            if job is None:
                raise RuntimeError(f"no job can start: {[k for k, _ in waiting]} wait on jobs not given")
            waiting.remove((key, job))
            yield key, self.row(job)

    def _ready(self, key, job):
        """Whether job `job`'s inputs are recorded: a chain's previous generation (BL's for generation 1,
        with the devices' first model), and this generation's BL when the diffs learn from it."""
        (gen, name), kind = key, job[0]
        if kind in ("bl", "blc"):
            return True
        base = os.path.exists(self.base_tflite) and "BLinf" in self._row(0)
        if gen == 1 or kind == "blinf":
            previous = base
        else:
            previous = (name if kind != "ft" else "FT") in self._row(gen - 1)
        return previous and (kind not in ("diff", "posthoc") or not self.config.teacher_weight
                             or "BL" in self._row(gen))

    def _pending(self, gen):
        """[(key, job)]: generation `gen`'s rows not yet recorded, the longest trainings first; each
        depends only on earlier generations (a diff chain on its own previous one, `_ready`)."""
        c, rows = self.config, self._row(gen)
        blc_methods = c.blc_method_names
        jobs = [("BL", ("bl", gen))]
        jobs += [(f"BLC-{m}-{r}x", ("blc", gen, m, r)) for m in blc_methods for r in c.ratios]
        jobs += [(f"Diff-{m}-{r}x", ("diff", gen, m, r)) for m in c.methods for r in c.ratios]
        jobs += [(f"Posthoc-{rule}-{r}x", ("posthoc", gen, rule, r)) for rule in c.posthoc for r in c.ratios]
        jobs += [("FT", ("ft", gen))] if c.posthoc else []
        jobs += [("BLinf", ("blinf", gen))]
        return [(key, job) for key, job in jobs if key not in rows]

    def row(self, job):
        """Run one job of `_pending` in this process: its row (models and scores saved, not recorded)."""
        kind, gen, *args = job
        seed_row(self.task, job)
        return {"bl": self._bl, "blc": self._blc, "diff": self._diff, "posthoc": self._posthoc, "ft": self._ft,
                "blinf": self._blinf}[kind](gen, *args)

    def _blinf(self, gen):
        static = self._load_model("BL", 0)
        measured = (self._tflite_measured(self.base_tflite, gen, "BLinf") if self.config.quantize
                    else self._measured(static, gen, "BLinf"))
        return {**measured, **self._held_out(static, gen)}

    # -- intervals ---------------------------------------------------------------
    def _scores_path(self, key, gen):
        return os.path.join(self.run_dir, "scores", f"{key}-g{gen}.npy")

    def _scores(self, gen, key, scores):
        """Keep the per-utterance test scores of a row (recipes/speech/intervals.py), for its interval."""
        if scores is not None:
            np.save(self._scores_path(key, gen), np.asarray(scores, np.float32))

    def _intervals(self, gen):
        """95 % intervals of generation `gen`'s rows (bootstrap over test speakers), and of each row's
        difference to BL, from the saved per-utterance scores."""
        if not hasattr(self.task, "groups"):
            return
        groups, rows = self.task.groups(gen), self._row(gen)
        saved = {key: np.load(self._scores_path(key, gen)) for key in rows
                 if os.path.exists(self._scores_path(key, gen))}
        for key, scores in saved.items():
            rows[key]["ci95"] = list(bootstrap(scores, groups, seed=gen))
            if key != "BL" and "BL" in saved:
                rows[key]["minus_BL_ci95"] = list(paired(scores, saved["BL"], groups, seed=gen))
            # "Every Diff above its BLC" is a claim about a difference, so it needs the paired interval too.
            if key.startswith("Diff-") and blc_key(key) in saved:
                rows[key]["minus_BLC_ci95"] = list(paired(scores, saved[blc_key(key)], groups, seed=gen))
        self._save()

    def _bl(self, gen):
        start, steps = time.time(), self.config.bl_steps_at(gen)
        with self.strategy.scope():
            model = self.task.new_model(gen)
            self.task.train(model, gen, steps, [], f"gen {gen} BL")
        train_seconds = time.time() - start
        model.save(self._model_path("BL", gen))
        return {**self._measured(model, gen, "BL"), **self._held_out(model, gen),
                "steps": steps, "train_seconds": train_seconds}

    def _convert(self, model, path):
        convert = getattr(self.task, "convert", device.convert)
        return convert(model, path, quantize=self.config.quantize) if self.config.quantize else convert(model, path)

    def _measured(self, model, gen, key):
        """{metric: value} of a Keras model, or of its int8 .tflite under LiteRT when the devices are int8."""
        if not self.config.quantize:
            return {self.task.metric: self._keras_metric(model, gen, key)}
        path = os.path.join(self.run_dir, "devices", f"{key}-g{gen}.tflite")
        self._convert(model, path)
        return {**self._tflite_measured(path, gen, key), "keras_" + self.task.metric: self.task.evaluate(model, gen)}

    def _keras_metric(self, model, gen, key):
        if not hasattr(self.task, "scores"):
            return self.task.evaluate(model, gen)
        scores = self.task.scores(model, gen)
        self._scores(gen, key, scores)
        return metric(scores)

    def _tflite_measured(self, path, gen, key):
        value, extras = self.task.evaluate_tflite(path, gen)
        self._scores(gen, key, extras.pop("scores", None))
        return {self.task.metric: value}

    def _held_out(self, model, gen):
        """Metrics on data the table does not report: valid (the task's `validate`) and robustness."""
        out = self.task.validate(model, gen) if hasattr(self.task, "validate") else {}
        return {**out, **(self.task.robustness(model, gen) if hasattr(self.task, "robustness") else {})}

    def _blc(self, gen, name, ratio):
        c, steps = self.config, self.config.bl_steps_at(gen)
        start = time.time()
        method = c.method(name, ratio, steps, c.blc_prune, seed=gen)
        with self.strategy.scope():
            # A fresh model: BL's initialization, never BL's trained weights.
            blc = tfdiff.compress_baseline(self.task.new_model(gen), method, seed=gen)
            self.task.train(blc, gen, steps, tfdiff.callbacks(blc), f"gen {gen} BLC-{name}-{ratio}x")
        train_seconds = time.time() - start
        plain = tfdiff.strip(blc)
        plain.save(self._model_path(f"BLC-{name}-{ratio}x", gen))  # for re-evaluation (recipes/speech/evaluate.py)
        params = sum(v.size for v in tfdiff.named_weights(plain).values())
        return {**self._measured(plain, gen, f"BLC-{name}-{ratio}x"), **self._held_out(plain, gen),
                "bytes": tfdiff.compressed_nbytes(blc), "budget_bytes": tfdiff.budget_bytes(params, ratio),
                "trained_from": "scratch", "steps": steps, "train_seconds": train_seconds}

    def _chain(self, gen, key):
        """(F_t, the server's view of the device holding it, the device's .tflite) of chain `key` at `gen`."""
        device_model = os.path.join(self.run_dir, "devices", f"{key}.tflite")
        if gen == 1 and not os.path.exists(device_model):
            shutil.copyfile(self.base_tflite, device_model)
        previous = self._load_model("BL" if gen == 1 else key, 0 if gen == 1 else gen - 1)
        # An int8 chain learns against the int8 weights its device holds (their scales frozen).
        return previous, tfdiff.DeviceModel.load(previous, device_model, quantized=bool(self.config.quantize)), \
            device_model

    def _ft(self, gen):
        start, steps = time.time(), self.config.diff_steps_at(gen)
        previous = self._load_model("BL" if gen == 1 else "FT", 0 if gen == 1 else gen - 1)
        tuned = fine_tune(self.task, previous, gen, steps, f"gen {gen} FT",
                          self.config.learning_rate("ft", gen), self.strategy)
        train_seconds = time.time() - start
        tuned.save(self._model_path("FT", gen))
        return {**self._measured(tuned, gen, "FT"), **self._held_out(tuned, gen), "trained_from": "FT of gen - 1",
                "steps": steps, "train_seconds": train_seconds}

    def _posthoc(self, gen, rule, ratio):
        key = f"Posthoc-{rule}-{ratio}x"
        start = time.time()
        previous, before, device_model = self._chain(gen, key)
        tuned = fine_tune(self.task, previous, gen, self.config.diff_steps_at(gen), f"gen {gen} {key} (fine-tuning)",
                          self.config.learning_rate("ft", gen), self.strategy)
        diff = tfdiff.posthoc_diff(previous, tuned, ratio, gen, rule=rule, seed=gen)
        return self._shipped(gen, key, ratio, before, device_model, diff, start)

    def _diff(self, gen, name, ratio):
        c, key = self.config, f"Diff-{name}-{ratio}x"
        start = time.time()
        previous, before, device_model = self._chain(gen, key)
        method = c.method(name, ratio, c.diff_steps_at(gen), c.diff_prune, seed=gen,
                          sensitivity=sensitivity_of(self.task, previous, gen) if name == "sparse-sensitive" else None)
        teacher = {"teacher": self._load_model("BL", gen), "teacher_weight": c.teacher_weight} \
            if c.teacher_weight else {}
        start_from = None
        if name == "sparse-warm":  # from FT - F_t's top-k, as its post-hoc row ships it, rather than zero
            tuned = fine_tune(self.task, previous, gen, c.diff_steps_at(gen), f"gen {gen} {key} (fine-tuning)",
                              c.learning_rate("ft", gen), self.strategy)
            start_from = tfdiff.posthoc_diff(previous, tuned, ratio, gen, rule="topk", seed=gen)
        diff = learn_diff(self.task, previous, method, gen, c.diff_steps_at(gen), f"gen {gen} {key}",
                          c.learning_rate(name, gen), self.strategy, int8=before.int8, start=start_from, **teacher)
        return self._shipped(gen, key, ratio, before, device_model, diff, start)

    def _shipped(self, gen, key, ratio, before, device_model, diff, start):
        """Chain `key`'s row once `diff` is made: saved, patched on its device, measured there and in Keras."""
        c = self.config
        diff_path = os.path.join(self.run_dir, "diffs", f"{key}-g{gen}.tfdiff")
        diff.save(diff_path)
        server = before.patched(diff)  # what the device must hold after the diff
        folded = server.model
        folded.save(self._model_path(key, gen))
        train_seconds = time.time() - start

        start = time.time()
        # A run killed during or after this apply, before the row was recorded, left the device at this
        # generation (or mid-update): bring it back to the chain's previous one, bit for bit, first.
        device.recover(device_model, allow_unsigned=True)
        if installed_generation(device_model) >= gen:
            device.rollback(device_model, allow_unsigned=True)
        device.apply(device_model, diff_path, allow_unsigned=True)  # the server checks its own diff
        apply_seconds = time.time() - start
        value, extras = self.task.evaluate_tflite(device_model, gen)
        self._scores(gen, key, extras.pop("scores", None))
        exact = {"device_matches_fold": server.matches(device_model)}
        # bytes as saved (unsigned); the budget holds the 68-byte signature too. N is what the diff
        # covers: every weight, but a low-rank diff's matrices only.
        return {self.task.metric: value, **self._held_out(folded, gen), "bytes": diff.nbytes,
                "budget_bytes": tfdiff.budget_bytes(diff.num_params, ratio),
                "nominal_compression": round(diff.nominal_compression, 2),
                "wire_compression": round(diff.wire_compression, 2), "cut_values": diff.cut_values,
                **extras, **exact, "keras_" + self.task.metric: self.task.evaluate(folded, gen),
                "steps": c.diff_steps_at(gen), "train_seconds": train_seconds, "apply_seconds": apply_seconds}


def fine_tune(task, previous, gen, steps, label, learning_rate=None, strategy=None):
    """A copy of `previous` trained further on generation `gen`'s data for `steps`, every weight free (FT)."""
    import tensorflow as tf
    with (strategy or tf.distribute.get_strategy()).scope():
        model = keras.models.clone_model(previous)
        model.set_weights(previous.get_weights())
        task.train(model, gen, steps, [], label, learning_rate=learning_rate)
    return model


def learn_diff(task, previous, method, gen, steps, label, learning_rate=None, strategy=None, int8=None,
               start=None, **teacher):
    """The diff `method` learns from `previous` on generation `gen`'s data in `steps`, as extracted.

    `start`: a sparse diff the values start from (`tfdiff.wrap`'s). `teacher`: `teacher` and
    `teacher_weight`, for a task that `distills`.
    """
    import tensorflow as tf
    if teacher and not getattr(task, "distills", False):
        raise ValueError(f"task {task.name!r} cannot learn from a teacher; set teacher_weight to 0")
    with (strategy or tf.distribute.get_strategy()).scope():
        diff_model = tfdiff.wrap(previous, method, int8=int8, start=start)
        task.train(diff_model, gen, steps, tfdiff.callbacks(diff_model), label, learning_rate=learning_rate,
                   **teacher)
    return tfdiff.extract(diff_model, generation=gen)


def sensitivity_of(task, model, gen):
    """The task's measure of how much its loss on valid feels each weight of `model` (a "sparse-sensitive" diff)."""
    if not hasattr(task, "sensitivity"):
        raise ValueError(f"task {task.name!r} has no `sensitivity`; the sparse-sensitive diff needs one")
    return task.sensitivity(model, gen)


def seed_row(task, row):
    """Seed every generator from the task's seed and `row`, so that a row (of the flywheel or of a study)
    is the same whichever process runs it and whatever ran there before: SpecAugment's masks draw from
    TensorFlow's global generator."""
    keras.utils.set_random_seed(zlib.crc32(f"{getattr(task, 'seed', 0)}/{row}".encode()) % 2 ** 31)


_WORKER = None  # a worker process's own Flywheel (recipes/speech/workers.py)


def _start_worker(recipe_module, run_dir, scale, config):
    """Worker initializer: the run's task and a Flywheel over it (results are written by the parent)."""
    global _WORKER
    task = importlib.import_module(recipe_module).RECIPE.load_task(run_dir)
    _WORKER = Flywheel(task, FlywheelConfig.from_config(config), run_dir, scale)


def _worker_row(job):
    return _WORKER.row(job)
