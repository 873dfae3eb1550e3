"""tfdiff under tf.distribute: one process with two replicas, and two workers on localhost.

The recipes' tiny flywheels run under MirroredStrategy in their own tests
(tests/conftest.py `run_recipe_mirrored`)."""
import pytest
import json
import os
import socket
import subprocess
import sys

import numpy as np

import tfdiff

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "distributed_worker.py")


pytestmark = pytest.mark.slow

def train(kind, out, env=None):
    return subprocess.Popen([sys.executable, WORKER, kind, str(out)], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT, **(env or {})),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=300):
    output, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, output[-3000:]


def assert_close(a, b):
    assert [e.name for e in a.entries] == [e.name for e in b.entries]
    assert a.base_digest == b.base_digest
    for x, y in zip(a.entries, b.entries):
        dense_x, dense_y = np.zeros(x.size, np.float32), np.zeros(y.size, np.float32)
        dense_x[x.indices], dense_y[y.indices] = x.values, y.values
        np.testing.assert_allclose(dense_x, dense_y, atol=2e-3, err_msg=x.name)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mirrored_two_replicas_matches_one_process(tmp_path):
    finish(train("default", tmp_path / "single.tfdiff"))
    finish(train("mirrored", tmp_path / "mirrored.tfdiff"))
    assert_close(tfdiff.Diff.load(tmp_path / "single.tfdiff"), tfdiff.Diff.load(tmp_path / "mirrored.tfdiff"))


def test_two_workers_on_localhost_extract_identical_diffs(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    procs = [train("multiworker", tmp_path / f"worker{i}.tfdiff",
                   {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
             for i in range(2)]
    for proc in procs:
        finish(proc)
    finish(train("default", tmp_path / "single.tfdiff"))
    first, second = [(tmp_path / f"worker{i}.tfdiff").read_bytes() for i in range(2)]
    assert first == second
    assert_close(tfdiff.Diff.load(tmp_path / "worker0.tfdiff"), tfdiff.Diff.load(tmp_path / "single.tfdiff"))
