"""The part every recipe's run.py shares: the strategy, the flywheel, the report, the command line."""
import argparse
import copy
import dataclasses
import json
import os
import time
from typing import Callable, Mapping

from .distribute import STRATEGIES, make_strategy, output_dir
from .flywheel import Flywheel, FlywheelConfig
from .report import write_report
from .task import load_task


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One recipe as the shared code needs it, passed down and never written to.

    Args:
        prog: its command, e.g. "python -m recipes.fsc.run".
        doc: its command-line help.
        data_help: what its `--data` directory holds.
        prepare: `prepare(out, data_dir, synthetic, scale, seed, settings=...)`, its task.
        scales: {scale name: settings}; `settings` hands out copies.

    Example:

    >>> toy = Recipe("toy", "", "", prepare=None, scales={"tiny": {"flywheel": {"bl_steps": 4}}})
    >>> toy.settings("tiny", ["flywheel.bl_steps=8"]), toy.scales["tiny"]
    ({'flywheel': {'bl_steps': 8}}, {'flywheel': {'bl_steps': 4}})
    """

    prog: str
    doc: str
    data_help: str
    prepare: Callable
    scales: Mapping

    def settings(self, scale, assignments=()):
        """A copy of the scale's settings with "a.b=value" `assignments` applied (`override`)."""
        if scale not in self.scales:
            raise ValueError(f"scale must be one of {sorted(self.scales)}. Received: {scale!r}")
        settings = copy.deepcopy(self.scales[scale])
        override(settings, assignments)
        return settings

    def load_task(self, run_dir, data_dir=None):
        """The task of a finished run (recipes/speech/task.py's `load_task`)."""
        return load_task(self.prepare, run_dir, data_dir)


def run(recipe, out, data_dir=None, synthetic=False, scale="demo", seed=0, strategy="default", workers=None,
        settings=None):
    """Prepare `recipe`'s task, run the flywheel, write the report; returns (results, table).

    `workers`: None trains in this process; N trains each generation's rows in N worker
    processes (recipes/speech/workers.py), only with the default strategy. `settings`: the
    scale's settings as overridden; `recipe.settings(scale)` when None.
    """
    if workers is not None and strategy != "default":
        raise ValueError(f"--workers runs one process per core on this machine; it does not combine with "
                         f"--strategy {strategy}. Received: workers={workers}, strategy={strategy!r}")
    distribution = make_strategy(strategy)
    out = output_dir(out, strategy)
    settings = copy.deepcopy(settings) if settings else recipe.settings(scale)
    _check_resumable(out, settings)
    task = recipe.prepare(out, data_dir, synthetic, scale, seed, settings=settings)
    flywheel = Flywheel(task, FlywheelConfig(**settings["flywheel"]), out, scale, distribution, workers=workers)
    results = flywheel.run()
    return results, write_report(results, out)


def _check_resumable(out, settings):
    """Refuse to resume a run made with other settings, before anything (config.json) is written.

    More generations extend a run (the flywheel's own rule); any other setting is the run's.
    """
    path = os.path.join(out, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        saved = json.load(f).get("settings")

    def comparable(value):
        value = json.loads(json.dumps(value))
        value.get("flywheel", {}).pop("generations", None)
        return value
    if saved is not None and comparable(saved) != comparable(settings):
        raise ValueError(f"{out} was made with other settings (its config.json); use a new --out")


def save_config(run_dir, config):
    """RUN_DIR/config.json, written whole or not at all: worker processes read it as they start."""
    path = os.path.join(run_dir, "config.json")
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(config, f, indent=2)
    os.replace(tmp, path)


def main(recipe, argv=None):
    parser = argparse.ArgumentParser(prog=recipe.prog, description=recipe.doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help=recipe.data_help)
    source.add_argument("--synthetic", action="store_true", help="generate a corpus with espeak-ng")
    parser.add_argument("--out", required=True, help="run directory (rerun to resume)")
    parser.add_argument("--scale", default="demo", choices=sorted(recipe.scales))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategy", default="default", choices=STRATEGIES,
                        help="tf.distribute strategy; multiworker reads TF_CONFIG")
    parser.add_argument("--workers", type=int, default=None,
                        help="train each generation's independent rows in N processes, one per core "
                             "(default: all in this process)")
    parser.add_argument("--quantize", choices=["int8"], default=None,
                        help="int8 device models (dynamic-range quantization): diffs in quantized units, every "
                             "row measured on an int8 .tflite (same as --set flywheel.quantize=int8)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override the scale's settings, e.g. flywheel.bl_steps=2000 "
                             "flywheel.diff_learning_rate=0.01 (saved in RUN_DIR with the results)")
    args = parser.parse_args(argv)
    quantized = [f"flywheel.quantize={args.quantize}"] if args.quantize else []
    try:
        settings = recipe.settings(args.scale, quantized + args.set)
    except ValueError as e:
        parser.error(str(e))
    start = time.time()
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be at least 1. Received: --workers {args.workers}")
    _, table = run(recipe, args.out, args.data, args.synthetic, args.scale, args.seed, args.strategy, args.workers,
                   settings=settings)
    print(table)
    print(f"done in {time.time() - start:.0f} s; results in {args.out}/results.json, results.md, results.png")


def override(settings, assignments):
    """Apply "a.b=value" assignments to a nested settings dict; values are JSON or plain strings.

    Example:

    >>> settings = {"flywheel": {"bl_steps": 1000}}
    >>> override(settings, ["flywheel.bl_steps=2000", "flywheel.diff_prune=[0.1, 0.5]"])
    >>> settings
    {'flywheel': {'bl_steps': 2000, 'diff_prune': [0.1, 0.5]}}
    """
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE. Received: {assignment!r}")
        *parents, leaf = key.split(".")
        target = settings
        for part in parents:
            if not isinstance(target.get(part), dict):
                raise ValueError(f"--set: no settings group {part!r} in {key!r}; groups: "
                                 f"{sorted(k for k, v in target.items() if isinstance(v, dict))}")
            target = target[part]
        if not parents and leaf not in target:
            raise ValueError(f"--set: no setting {leaf!r}; settings: {sorted(target)}")
        try:
            target[leaf] = json.loads(raw)
        except json.JSONDecodeError:
            target[leaf] = raw
