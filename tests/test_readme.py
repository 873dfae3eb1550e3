import os
import re

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
