import json
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_keras_example_runs(tmp_path, monkeypatch, capsys):
    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme.split("## Keras example", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 14
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "total (file)" in out
    size = os.path.getsize(tmp_path / "gen1.tfdiff")
    params = 40 * 256 + 256 + 256 * 10 + 10
    assert size <= 4 * params / 20


@pytest.mark.slow
def test_readme_task_example_runs_the_flywheel(tmp_path, monkeypatch, capsys):
    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme.split("## Your own task", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    rows = json.load(open(tmp_path / "runs" / "keywords" / "results.json"))["generations"][2]["rows"]
    assert {"BL", "BLinf", "BLC-sparse-4x", "Diff-sparse-4x", "BLC-hash-4x", "Diff-hash-4x"} == set(rows)
    assert all(rows[key]["device_matches_fold"] for key in ("Diff-sparse-4x", "Diff-hash-4x"))
    assert rows["BL"]["accuracy"] > rows["BLinf"]["accuracy"]  # two unseen keywords sink the old model
