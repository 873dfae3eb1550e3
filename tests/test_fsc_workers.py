"""The FSC flywheel with worker processes: the rows one process would train, and a killed run that resumes.

Its own file, out of the shared tiny-run group (tests/conftest.py), so pytest-xdist runs it beside that group.
"""
import json
import os

import pytest


def _tiny_flywheel(out, workers, threads=1):
    from recipes.fsc import run as fsc_run
    from recipes.speech.flywheel import Flywheel, FlywheelConfig
    task = fsc_run.prepare(str(out), synthetic=True, scale="tiny")
    return Flywheel(task, FlywheelConfig(**fsc_run.SCALES["tiny"]["flywheel"]), str(out), "tiny", workers=workers,
                    threads=threads)


@pytest.mark.slow
def test_workers_train_the_rows_one_process_would_and_a_killed_run_resumes(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    # Two workers, killed (with their workers) once generation 1 has a finished row but not all of them...
    concurrent = tmp_path / "concurrent"
    script = (f"import sys; sys.path.insert(0, {os.getcwd()!r}); from tests.test_fsc_workers import _tiny_flywheel; "
              f"_tiny_flywheel({str(concurrent)!r}, workers=2).run()")
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline, rows = time.time() + 600, {}
    while time.time() < deadline and proc.poll() is None and not rows:
        time.sleep(0.2)
        try:
            generations = json.load(open(concurrent / "results.json"))["generations"]
            rows = generations[1]["rows"] if len(generations) > 1 else {}
        except (OSError, ValueError):
            pass
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < len(rows) < 6, rows  # killed mid-generation (of BL, two BLC, two Diff and BL∞)
    # ... resume and finish, with the rows a single one-thread worker trains one after the other.
    resumed = _tiny_flywheel(concurrent, workers=2).run()
    sequential = _tiny_flywheel(tmp_path / "sequential", workers=1).run()
    for gen in (0, 1):
        got, want = resumed["generations"][gen]["rows"], sequential["generations"][gen]["rows"]
        assert set(got) == set(want) == ({"BL", "BLinf"} if gen == 0 else set(want))
        for key in want:
            for field in ("accuracy", "valid_accuracy", "bytes", "ci95", "minus_BL_ci95"):
                assert got[key].get(field) == want[key].get(field), (gen, key, field)
    assert all(row["device_matches_fold"] for key, row in resumed["generations"][1]["rows"].items()
               if key.startswith("Diff"))
