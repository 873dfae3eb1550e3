"""Each benchmark part once, on tiny inputs: the code keeps working."""
import pytest
import json

from benchmarks.__main__ import run


pytestmark = pytest.mark.slow

def test_every_part_on_tiny_inputs(tiny_fsc_run, tiny_fsc_int8_run, tmp_path):
    run_dir, _, _ = tiny_fsc_run
    report = run(("wire", "apply", "train", "latency", "fuzz", "attack", "int8"), str(tmp_path), run_dir=str(run_dir),
                 tiny=True,
                 int8_run=str(tiny_fsc_int8_run))
    saved = json.load(open(tmp_path / "benchmarks.json"))
    assert saved == json.loads(json.dumps(report))
    methods = {row["method"] for row in saved["wire"]}
    assert {"tflite raw", "tflite zstd-19", "bsdiff4", "tfdiff sparse-8x", "tfdiff hash-8x",
            "tfdiff lowrank-8x", "post-hoc topk-8x of FT"} <= methods
    for row in saved["wire"]:
        assert set(row) == {"gen", "method", "bytes", "accuracy"}
        if row["method"].startswith(("post-hoc", "tfdiff")):  # within the run's 8x budget
            assert row["bytes"] + 68 <= json.load(open(run_dir / "results.json"))["generations"][1]["rows"][
                "Diff-sparse-8x"]["budget_bytes"]
    modes = {(r["method"], r["mode"]) for r in saved["apply"]}
    assert modes == {(method, mode) for method in ("sparse", "hash") for mode in ("inplace", "swap", "out")}
    for r in saved["apply"]:
        assert r["seconds"] > 0 and r["peak_rss_mb"] > 0 and r["cp_seconds"] > 0 and r["model_bytes"] > 0
    assert set(saved["train_step_ratio"]) == {"sparse", "sparse-global", "hash", "lowrank", "seed"}
    assert set(saved["train_keras3_ratio"]) == {"plain", "sparse", "hash"}
    assert all(t > 0 for t in saved["train_keras3_seconds"].values())
    assert saved["latency"]["same_bytes"] and saved["latency_ratio"] > 0
    # 60 diff and model mutations (15 per method and strategy) plus 10 journals through recover.
    assert saved["fuzz"]["cases"] == 70 and saved["fuzz"]["unexpected"] == saved["fuzz"]["model_changed"] == 0
    attack = saved["attack"]["summary"]
    assert attack["foreign_diffs_applied"] == attack["genuine_diffs_refused"] == attack["side_files_accepted"] == 0
    assert attack["exit_status_lies"] == attack["exit_2_on_bad_input"] == attack["bytes_left_by_killed_runs"] == 0
    int8 = saved["int8"]
    assert [r["model"] for r in int8["rows"]] == ["BL", "BL", "Diff-sparse-8x"]
    last, timing = int8["rows"][-1], int8["latency"][0]
    assert last["int8_bit_exact"] is True and last["int8_bytes"] <= last["budget_bytes"]
    assert timing["int8_ms"] > 0 and timing["int8_model_bytes"] < timing["float32_model_bytes"]
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "Machine:" in text and "commit" in text
    assert all(when["command"].startswith("python -m benchmarks") for when in saved["measured"].values())
    assert (tmp_path / "wire.png").exists()
