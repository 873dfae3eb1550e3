"""A generation's independent trainings in worker processes, one per core.

Within a generation, BL, every BLC and every diff chain's next diff depend
only on earlier generations, so they can train side by side. TensorFlow's
LSTM steps use a core poorly on their own, so `workers` processes with
`threads` intra-op threads each (cores // workers by default) can beat one
process using every core; docs/BENCHMARKS.md has the measured gain. The
engine is the standard library's process pool (spawned, so no TensorFlow
state is forked); each worker loads the run's task from its run directory
(`task.load_task`), and the parent alone writes results.json, as rows
finish. An interrupted run resumes with the rows still missing.

Jobs may wait on others (a diff on its chain's previous generation): the
pool is handed at most one job per worker, the first of `pending` whose
inputs are ready, so a later generation's independent trainings fill a
worker that would otherwise wait for the last job of a generation.
"""
import contextlib
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context

# TensorFlow reads these when its runtime starts, which in a spawned worker may be while the
# parent's main module is imported again, before any code of ours could call tf.config.
_THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


@contextlib.contextmanager
def process_pool(workers, threads=None, initializer=None, initargs=()):
    """A pool of `workers` spawned processes whose TensorFlow uses `threads` threads (None: its default)."""
    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    if threads is not None:
        os.environ.update({name: str(threads) for name in _THREAD_VARIABLES})
    try:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=initializer,
                                 initargs=initargs) as pool:
            yield pool
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_concurrently(workers, threads, initializer, initargs, work, pending, ready=None):
    """Yield (key, work(job)) for each (key, job) of `pending` as worker processes finish them.

    Each of min(workers, len(pending)) processes first runs
    `initializer(*initargs)`; `initializer` and `work` are module-level
    functions (the flywheel's), so a spawned process can find them. `threads`
    per process, default the cores shared among the processes that will run
    (a lone job gets them all). `ready(key, job)`, if given, says whether a
    job's inputs exist; it is asked again after the caller has taken each
    result, so a job can wait on what the caller records. Of the ready jobs,
    the first in `pending`'s order starts first.
    """
    if not pending:
        return
    workers = min(workers, len(pending))
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    waiting, running = list(pending), {}
    with process_pool(workers, threads, initializer, initargs) as pool:
        try:
            while waiting or running:
                for key, job in [(k, j) for k, j in waiting if ready is None or ready(k, j)][:workers - len(running)]:
                    running[pool.submit(work, job)] = key
                    waiting.remove((key, job))
                if not running:
                    raise RuntimeError(f"no job can start: {[key for key, _ in waiting]} wait on jobs not given")
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield running.pop(future), future.result()
        except BaseException:
            # A failed job (or the caller stopping) ends the run now: without this the pool's exit would
            # first wait for the jobs still running, whose results no one would keep.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
