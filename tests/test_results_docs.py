"""Every generated table in the docs is the table its JSON gives today (recipes/speech/report.py)."""
import glob
import os

from recipes.speech.report import docs_tables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_recorded_table_matches_its_json():
    checked = []
    for doc in glob.glob(os.path.join(ROOT, "docs", "*.md")) + [os.path.join(ROOT, "README.md")]:
        for name, stale in docs_tables(doc):
            assert not stale, f"{os.path.relpath(doc, ROOT)}: the table of {name} differs from its JSON; run " \
                              f"python -m recipes.speech.report --docs {os.path.relpath(doc, ROOT)}"
            checked.append(name)
    assert any(name.startswith("fsc-demo") for name in checked), checked


def test_a_table_that_differs_from_its_json_is_found(tmp_path):
    import json
    import shutil
    shutil.copy(os.path.join(ROOT, "docs", "fsc-demo-results.json"), tmp_path / "r.json")
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- table: r.json -->\n| made up |\n<!-- /table -->\n")
    assert docs_tables(str(doc)) == [("r.json", True)]
    docs_tables(str(doc), write=True)
    assert docs_tables(str(doc)) == [("r.json", False)]
    assert json.load(open(tmp_path / "r.json"))["task"] in doc.read_text()


def test_the_benchmark_tables_match_their_json():
    import json
    import re

    from benchmarks.report import apply_markdown, attack_markdown
    text = open(os.path.join(ROOT, "docs", "BENCHMARKS.md")).read()
    found = set()
    for part, render in (("attack", attack_markdown), ("apply", apply_markdown)):
        for name, body in re.findall(rf"<!-- {part}: (\S+) -->\n(.*?)<!-- /{part} -->", text, re.S):
            assert body == render(json.load(open(os.path.join(ROOT, "docs", name)))[part]), name
            found.add(part)
    assert found == {"attack", "apply"}


def test_the_provenance_line_says_when_each_flywheel_started_not_a_range_of_one():
    import json

    from recipes.speech.report import markdown_table
    results = json.load(open(os.path.join(ROOT, "docs", "fsc-demo4-warm-results.json")))
    first = results["provenance"][0]
    text = markdown_table(results)
    assert f"flywheel started {first['date']}," in text and " to " + first["date"] not in text
    results["provenance"].append({**first, "date": "2030-01-01T00:00:00+00:00"})
    assert f"2 invocations, flywheels started {first['date']} to 2030-01-01T00:00:00+00:00," in markdown_table(results)
