"""A tiny LibriSpeech flywheel: under MirroredStrategy with the device path checked, its studies, and
its rows trained by worker processes."""
import json
import os

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from conftest import run_recipe_mirrored

    out = tmp_path_factory.mktemp("librispeech") / "run"
    saved, table = run_recipe_mirrored("librispeech", out)
    return out, saved, table


def test_tiny_run_end_to_end(tiny_run):
    out, saved, table = tiny_run
    assert saved["task"] == "librispeech" and len(saved["generations"]) == 2
    assert saved["strategy"] == "MirroredStrategy"
    gen0, gen1 = saved["generations"]
    assert gen0["hours"] <= gen1["hours"]
    assert {"BL", "BLC-sparse-4x", "BLC-hash-4x", "Diff-sparse-4x", "Diff-hash-4x"} <= set(gen1["rows"])
    for key, row in gen1["rows"].items():
        # Every row: test WER (the table), valid WER (what studies choose by), a speaker-bootstrap interval.
        assert 0 <= row["wer"] and "valid_wer" in row or key == "BLinf", key
        assert row["ci95"][0] - 1e-9 <= row["wer"] <= row["ci95"][1] + 1e-9, key
        if key != "BL":
            low, high = row["minus_BL_ci95"]
            assert low - 1e-9 <= row["wer"] - gen1["rows"]["BL"]["wer"] <= high + 1e-9, key
        if key.startswith("BLC"):
            assert row["steps"] == saved["flywheel"]["bl_steps"], key
        if key.startswith("Diff"):
            assert row["bytes"] <= row["budget_bytes"] and row["rtf"] > 0
            # The patched .tflite holds the folded model's bits and decodes the test set identically.
            assert row["device_matches_fold"] and row["wer"] == row["keras_wer"], key
    for name in ("results.md", "results.png", "devices/gen0.tflite", "devices/Diff-sparse-4x.tflite"):
        assert os.path.exists(out / name), name
    assert "| 1 |" in table

    # Beam search on the device's models, with LiteRT alone.
    from recipes.librispeech import decode
    cached = os.stat(out / "features" / "test.npz").st_mtime_ns
    decoded = decode.decode_run(str(out), width=2, limit=2)
    # It decodes the run's own test utterances: their cached features, not a new set.
    assert os.stat(out / "features" / "test.npz").st_mtime_ns == cached
    assert set(decoded["models"]) == {"BLinf", "Diff-sparse-4x", "Diff-hash-4x"}
    assert all(row["rtf"] > 0 for row in decoded["models"].values())
    assert decoded["utterances"] == 2 and decoded["beam"] == 2
    assert decoded["models"]["Diff-sparse-4x"]["gen"] == 1
    assert os.path.exists(out / "decode-beam2.json") and "| BLinf | 0 |" in decode.table(decoded)


def test_studies_measure_on_valid_by_default(tiny_run):
    from recipes.librispeech import run
    from recipes.speech import study

    out, saved, _ = tiny_run
    study.main(run.RECIPE, "study", [str(out), "curve", "--steps", "2"])
    curve = json.load(open(out / "study-curve.json"))
    assert curve["split"] == "valid" and curve["rows"][0]["wer"] >= 0  # the wer of the valid split
    study.main(run.RECIPE, "study", [str(out), "diff", "--steps", "4", "--ratio", "4"])
    grid = json.load(open(out / "study-diff.json"))
    assert grid["split"] == "valid" and grid["BL"] == saved["generations"][1]["rows"]["BL"]["valid_wer"]


def test_worker_processes_train_every_row_of_the_asr_flywheel(tiny_run, tmp_path):
    # The scheduler is the FSC one, whose test (tests/test_fsc_workers.py) requires the rows one process would
    # train; here each worker loads the ASR task from the run directory and its rows come back complete.
    from recipes.librispeech import run
    from recipes.speech.flywheel import Flywheel, FlywheelConfig

    config = {**run.SCALES["tiny"]["flywheel"], "methods": ("sparse",)}
    out = str(tmp_path / "workers")
    task = run.prepare(out, data_dir=str(tiny_run[0] / "corpus"), scale="tiny")
    results = Flywheel(task, FlywheelConfig(**config), out, "tiny", workers=2, threads=1).run()
    gen0, gen1 = (g["rows"] for g in results["generations"])
    assert set(gen0) == {"BL", "BLinf"} and set(gen1) == {"BL", "BLC-sparse-4x", "Diff-sparse-4x", "BLinf"}
    for key, row in gen1.items():
        assert "ci95" in row and ("valid_wer" in row or key == "BLinf"), key
    assert gen1["Diff-sparse-4x"]["device_matches_fold"]
