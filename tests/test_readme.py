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


def test_readme_int8_example_runs(tmp_path, monkeypatch):
    import numpy as np

    import device
    readme = open(os.path.join(ROOT, "README.md")).read()
    keras_code = re.search(r"```python\n(.*?)```", readme.split("## Keras example", 1)[1], re.S).group(1)
    section = readme.split("### Int8 models", 1)[1]
    command = re.search(r"```sh\n(.*?)```", section, re.S).group(1).strip()
    assert command == "python -m device convert gen0.keras gen0.tflite --quantize int8"
    int8_code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(keras_code, "README.md", "exec"), scope)
    device.convert(scope["base"], "gen0.tflite", quantize="int8")  # what the command does with gen0.keras
    exec(compile(int8_code, "README.md", "exec"), scope)
    diff, int8 = scope["diff"], scope["int8"]
    assert int8.int8_names and {e.name for e in diff.entries if e.values.dtype == np.int8} == set(int8.int8_names)
    assert scope["next_int8"].digest() == diff.target_digest


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
