import json
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _walkthrough():
    """The README's command blocks from "Keras example" to "Recipes", in order: (language, code)."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme.split("## Keras example", 1)[1].split("## Recipes", 1)[0]
    return re.findall(r"```(python|sh)\n(.*?)```", section, re.S)


def test_readme_keras_example_is_short():
    language, code = _walkthrough()[0]
    assert language == "python" and len(code.strip().splitlines()) <= 15


@pytest.mark.slow
def test_readme_blocks_run_in_order_in_an_empty_directory(tmp_path):
    """Every block, as written, top to bottom: the Python blocks in one session, the shell blocks with
    the virtual environment's commands first on PATH, as a user who ran scripts/setup has them."""
    import subprocess
    import sys

    blocks = _walkthrough()
    assert [language for language, _ in blocks] == ["python", "sh", "python", "sh", "python", "python"]
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
               PYTHONPATH=ROOT)
    env.pop("TFDIFF_PUBLIC_KEY", None)
    # One Python session runs the Python blocks (later blocks use earlier names) and hands each
    # shell block to bash, in README order.
    driver = (
        "import json, subprocess, sys\n"
        "scope = {}\n"
        "for language, code in json.load(open(sys.argv[1])):\n"
        "    if language == 'python':\n"
        "        exec(compile(code, 'README.md', 'exec'), scope)\n"
        "    else:\n"
        "        proc = subprocess.run(['bash', '-euo', 'pipefail', '-c', code])\n"
        "        if proc.returncode:\n"
        "            sys.exit(f'README block failed ({proc.returncode}):\\n{code}')\n")
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    proc = subprocess.run([sys.executable, "-c", driver, "blocks.json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "total (file)" in proc.stdout
    params = 40 * 256 + 256 + 256 * 10 + 10
    assert (tmp_path / "gen1.tfdiff").stat().st_size <= 4 * params / 20
    # The device's model went 0 -> 1 -> 0 (rollback) -> 1 (the embedded applier); new.tflite is generation 1.
    from device import status
    assert status(tmp_path / "model.tflite")["generation"] == 1
    assert status(tmp_path / "new.tflite")["weights_digest"] == status(tmp_path / "model.tflite")["weights_digest"]
    assert (tmp_path / "gen0-int8.tflite").stat().st_size < (tmp_path / "gen0.tflite").stat().st_size


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
