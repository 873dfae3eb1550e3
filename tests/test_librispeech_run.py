"""A tiny LibriSpeech flywheel under MirroredStrategy: two generations, a few steps, the device path checked."""
import os

import pytest

pytestmark = pytest.mark.slow


def test_tiny_run_end_to_end(tmp_path):
    from conftest import run_recipe_mirrored

    out = tmp_path / "run"
    saved, table = run_recipe_mirrored("librispeech", out)
    assert saved["task"] == "librispeech" and len(saved["generations"]) == 2
    assert saved["strategy"] == "MirroredStrategy"
    gen0, gen1 = saved["generations"]
    assert gen0["hours"] <= gen1["hours"]
    assert {"BL", "BLC-sparse-4x", "BLC-hash-4x", "Diff-sparse-4x", "Diff-hash-4x"} <= set(gen1["rows"])
    for key, row in gen1["rows"].items():
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
