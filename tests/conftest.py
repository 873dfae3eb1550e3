import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# Two xdist workers share two cores: TensorFlow's default of one intra-op thread per core in each
# oversubscribes them (its thread pools spin while they wait). Subprocesses inherit this.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# scripts/test runs the suite on two workers (pytest-xdist, --dist loadgroup): the test step
# keeps one core busy, and the machine has two. A file's tests stay on one worker, so its
# module fixtures are built once; the files that share the tiny FSC runs (session fixtures) share one.
SHARED_RUN_FILES = {"test_fsc.py": "tiny-fsc-runs", "test_benchmarks.py": "tiny-fsc-runs"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups into the test ids
def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.xdist_group(SHARED_RUN_FILES.get(item.path.name, str(item.path))))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    # xdist marks a grouped test by its id; a pytest it does not support drops the mark and the
    # groups are dealt out one test at a time, each worker building the shared runs again.
    if node.config.getoption("dist", None) == "loadgroup" and ids and not any("@" in i for i in ids):
        raise pytest.UsageError("pytest-xdist's --dist loadgroup is not grouping tests with this pytest "
                                "(pytest-dev/pytest-xdist#1386): install the versions requirements.lock pins")


def run_recipe_mirrored(recipe, out, timeout=900):
    """A recipe's tiny synthetic flywheel under MirroredStrategy on two logical CPUs, in a subprocess
    (tests/distributed_worker.py): one run checks both the recipe and its distributed training."""
    import json
    import subprocess
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "distributed_worker.py"),
                           f"{recipe}-mirrored", str(out)], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return json.load(open(out / "results.json")), open(out / "results.md").read()


@pytest.fixture(scope="session")
def tiny_fsc_run(tmp_path_factory):
    """One tiny synthetic FSC flywheel run (under MirroredStrategy), shared by the recipe and benchmark tests."""
    out = tmp_path_factory.mktemp("fsc") / "run"
    results, table = run_recipe_mirrored("fsc", out)
    return out, results, table


@pytest.fixture(scope="session")
def tiny_fsc_int8_run(tmp_path_factory):
    """One tiny synthetic FSC run with int8 devices (8x sparse only: tests/test_int8.py covers hash), by the CLI;
    BL and BLC train longer at generation 1 than at 0, and the diff its own count for generation 1."""
    import subprocess
    out = tmp_path_factory.mktemp("fsc-int8") / "run"
    proc = subprocess.run([sys.executable, "-m", "recipes.fsc.run", "--synthetic", "--scale", "tiny", "--out", str(out),
                           "--quantize", "int8", "--set", "flywheel.ratios=[8]", 'flywheel.methods=["sparse"]',
                           "flywheel.bl_steps=[12, 14]", "flywheel.diff_steps=[8, 6]"],
                          cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out
