"""The FSC flywheel with worker processes: the rows one process would train, a killed run that resumes, and
the run again under another seed (`study seeds`).

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
def test_workers_train_the_rows_one_process_would_a_killed_run_resumes_and_seeds_rerun_it(tmp_path):
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
    # `study seeds`: the finished run's generations again under seed 1, beside its own seed 0.
    from recipes.fsc import run as fsc_run
    from recipes.speech import study
    study.main(fsc_run.RECIPE, "study", [str(tmp_path / "sequential"), "seeds", "--seeds", "2", "--workers", "2"])
    seeds = json.load(open(tmp_path / "sequential" / "study-seeds.json"))
    recorded = sequential["generations"][1]["rows"]
    assert seeds["seeds"] == [0, 1] and {r["key"] for r in seeds["rows"] if r["gen"] == 1} == set(recorded)
    for row in seeds["rows"]:
        assert len(row["values"]) == 2 and row["ci95"][0] <= row["mean"] <= row["ci95"][1], row
        if row["gen"] == 1:
            assert row["values"][0] == recorded[row["key"]]["accuracy"]
    assert json.load(open(tmp_path / "sequential" / "seeds" / "1" / "config.json"))["seed"] == 1


def _job(job):
    """A job for run_concurrently: "fail" raises; a path is written after a pause, as a sign the job ran."""
    import time
    if job == "fail":
        raise ValueError("this job fails")
    time.sleep(0.3)
    open(job, "w").close()


def test_a_failed_job_stops_the_pool_without_running_the_queued_ones(tmp_path):
    from recipes.speech.workers import run_concurrently
    pending = [("fail", "fail")] + [(i, str(tmp_path / f"ran-{i}")) for i in range(40)]
    with pytest.raises(ValueError, match="this job fails"):
        for _ in run_concurrently(2, 1, None, (), _job, pending):
            pass
    assert len(list(tmp_path.iterdir())) < 40  # the queued jobs were cancelled, not run to no one


def test_a_method_that_cannot_fit_is_a_row_of_the_study_table_not_a_crash():
    from recipes.speech.report import study_markdown
    from recipes.speech.study import _methods_summary
    rows = [{"key": "Diff-lowrank", "ratio": 200, "steps": 500, "seed": s, "accuracy": None, "bytes": None,
             "refused": "a 200x budget cannot hold rank-1 lowrank values"} for s in (0, 1)]
    rows += [{"key": "Diff-sparse", "ratio": 200, "steps": 500, "seed": s, "accuracy": 0.6 + s / 100, "bytes": 3900}
             for s in (0, 1)]
    summary = _methods_summary(rows, "accuracy")
    table = study_markdown({"study": "methods", "split": "valid", "seeds": [0, 1], "summary": summary,
                            "BL_gen1": 0.78}, "accuracy")
    assert "| Diff-lowrank | does not fit |" in table
    assert "- Diff-lowrank at 200x does not fit: a 200x budget cannot" in table
    assert "| Diff-sparse | 60.5 [" in table and "], 3.8 |" in table


def test_a_job_starts_once_the_result_it_waits_on_was_taken(tmp_path):
    from recipes.speech.workers import run_concurrently
    taken = []
    pending = [("later", str(tmp_path / "later")), ("first", str(tmp_path / "first")),
               ("free", str(tmp_path / "free"))]

    def ready(key, job):
        return key != "later" or "first" in taken

    for key, _ in run_concurrently(2, 1, None, (), _job, pending, ready):
        taken.append(key)
    assert set(taken) == {"first", "free", "later"} and taken.index("later") > taken.index("first")
    with pytest.raises(RuntimeError, match=r"no job can start: \['later'\]"):
        for _ in run_concurrently(2, 1, None, (), _job, pending[:1], ready=lambda key, job: False):
            pass
