"""The part every recipe's run.py shares: the strategy, the flywheel, the report, the command line."""
import argparse
import time

from .distribute import STRATEGIES, make_strategy, output_dir
from .flywheel import Flywheel, FlywheelConfig
from .report import write_report


def run(prepare, scales, out, data_dir=None, synthetic=False, scale="demo", seed=0, strategy="default"):
    """Prepare the recipe's task, run the flywheel, write the report; returns (results, table)."""
    distribution = make_strategy(strategy)
    out = output_dir(out, strategy)
    task = prepare(out, data_dir, synthetic, scale, seed)
    flywheel = Flywheel(task, FlywheelConfig(**scales[scale]["flywheel"]), out, scale, distribution)
    results = flywheel.run()
    return results, write_report(results, out)


def main(run_recipe, prog, doc, data_help, scales, argv=None):
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help=data_help)
    source.add_argument("--synthetic", action="store_true", help="generate a corpus with espeak-ng")
    parser.add_argument("--out", required=True, help="run directory (rerun to resume)")
    parser.add_argument("--scale", default="demo", choices=sorted(scales))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategy", default="default", choices=STRATEGIES,
                        help="tf.distribute strategy; multiworker reads TF_CONFIG")
    args = parser.parse_args(argv)
    start = time.time()
    _, table = run_recipe(args.out, args.data, args.synthetic, args.scale, args.seed, args.strategy)
    print(table)
    print(f"done in {time.time() - start:.0f} s; results in {args.out}/results.json, results.md, results.png")
