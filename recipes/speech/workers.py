"""A generation's independent trainings in worker processes, one per core.

Within a generation, BL, every BLC and every diff chain's next diff depend
only on earlier generations, so they can train side by side. TensorFlow's
LSTM steps use a core poorly on their own, so `workers` processes with
`threads` intra-op threads each (cores // workers by default) can beat one
process using every core; docs/BENCHMARKS.md has the measured gain. The
engine is the standard library's process pool (spawned, so no TensorFlow
state is forked); each worker loads the run's task from its run directory
(`recipe.load_task`), and the parent alone writes results.json, as rows
finish. An interrupted run resumes with the rows still missing.
"""
import importlib
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

_FLYWHEEL = None  # the worker process's own Flywheel


def run_concurrently(flywheel, pending):
    """Yield (key, row) for each (key, job) of `pending` as workers finish them."""
    if not pending:
        return
    workers = min(flywheel.workers, len(pending))
    threads = flywheel.threads or max(1, (os.cpu_count() or 1) // flywheel.workers)
    recipe_module = type(flywheel.task).__module__
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_start,
                             initargs=(recipe_module, flywheel.run_dir, flywheel.scale,
                                       flywheel.config.get_config(), threads)) as pool:
        futures = {pool.submit(_row, job): key for key, job in pending}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _start(recipe_module, run_dir, scale, config, threads):
    """Worker initializer: TensorFlow's threads first (they are fixed at its first op), then the task."""
    global _FLYWHEEL
    from tfdiff import keras  # noqa: F401  (selects tf_keras before TensorFlow loads)
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from . import recipe
    from .flywheel import Flywheel, FlywheelConfig
    task = recipe.load_task(importlib.import_module(recipe_module).prepare, run_dir)
    _FLYWHEEL = Flywheel(task, FlywheelConfig.from_config(config), run_dir, scale)


def _row(job):
    return _FLYWHEEL.row(job)
