"""The FSC recipe: generator, loader, features, loss, and a tiny whole run."""
import csv
import json
import os

import numpy as np
import pytest

from recipes.fsc import data, model as slu_model
from recipes.fsc.phrases import DOMAINS, PHRASES
from recipes.fsc.synth import FIELDS, generate, split_sizes
from recipes.speech import features
from recipes.speech.conditions import CONDITIONS
from recipes.speech.synth import TRAINING_ENGINES, Augmentation, engine_identities, speaker_splits

from tests.helpers import person


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsc") / "corpus"
    counts = generate(str(root), speakers=7, phrases_per_domain=2, seed=3, unseen_speakers=2)
    return root, counts


def test_phrasings_domains_and_person_disjoint_speakers():
    texts = [p[0] for d in DOMAINS for p in PHRASES[d]]
    assert len(texts) == len(set(texts)) >= 120
    assert all(len(PHRASES[d]) >= 20 for d in DOMAINS)
    for seed in range(8):
        splits = speaker_splits(split_sizes(48), seed=seed, reserved=engine_identities("festival"))
        assert {k: len(v) for k, v in splits.items()} == {"train": 34, "valid": 7, "test": 7}
        assert len({s.id for members in splits.values() for s in members}) == 48
        people = {name: {person(s.engine, s.voice) for s in members} for name, members in splits.items()}
        assert not (people["train"] & people["test"] or people["train"] & people["valid"]
                    or people["valid"] & people["test"]), seed
        # Nobody festival speaks through is heard in training, through any engine.
        assert not people["train"] & {person("festival", v) for v in ("kal_diphone", "cmu_us_slt_arctic_hts")}
        for members in splits.values():
            assert {s.engine for s in members} == set(TRAINING_ENGINES)


def test_generator_writes_the_fsc_layout_person_disjoint_with_an_unseen_engine(corpus):
    root, counts = corpus
    conditions = {f"{s}_{c}": 12 for s in ("valid", "test") for c in CONDITIONS}
    assert counts == {"train": 5 * 12, "valid": 12, "test": 12, "unseen_engine": 2 * 12, **conditions}
    speakers = {}
    for split in ("train", "valid", "test", "unseen_engine", *conditions):
        with open(root / "data" / f"{split}_data.csv") as f:
            rows = list(csv.reader(f))
        assert rows[0] == FIELDS
        speakers[split] = {r[2] for r in rows[1:]}
        for row in rows[1:4]:
            assert os.path.exists(root / row[1])
    assert speakers["test_clean"] == speakers["test"] and speakers["valid_quiet"] == speakers["valid"]
    # data/speakers.csv names every speaker once; audited against the table above, no person crosses splits.
    with open(root / "data" / "speakers.csv") as f:
        audit = list(csv.DictReader(f))
    assert sorted(r["speaker"] for r in audit) == sorted(set().union(*(speakers[s] for s in
                                                                      ("train", "valid", "test", "unseen_engine"))))
    split_of = {}
    for r in audit:
        split_of.setdefault(person(r["engine"], r["voice"]), set()).add(r["split"])
    assert all(len(splits) == 1 for who, splits in split_of.items() if "unseen_engine" not in splits), split_of
    assert all("train" not in splits for splits in split_of.values() if "unseen_engine" in splits), split_of
    with open(root / "data" / "augmentation.json") as f:
        assert json.load(f) == Augmentation().get_config()
    # The held-out engine's audio is real speech-length audio, not silence.
    audio = features.read_audio(os.path.join(root, rows[1][1]))
    assert 0.3 * 16000 < audio.size < 5 * 16000 and np.abs(audio).max() > 0.01


def test_loader_reads_audio_and_domains(corpus):
    root, _ = corpus
    test = data.load_split(str(root), "test")
    assert {u.domain for u in test} == set(DOMAINS)
    audio = features.read_audio(test[0].path)
    assert audio.dtype == np.float32 and 0.3 * 16000 < audio.size < 5 * 16000
    assert data.phrases_of(test, ["Heat"]) == sorted({u.transcription for u in test if u.domain == "Heat"})
    with pytest.raises(FileNotFoundError, match="--data must point"):
        data.load_split(str(root / "nowhere"), "train")


def test_features_shapes_padding_and_specaugment():
    audio = np.random.default_rng(0).normal(size=16000).astype(np.float32) * 0.1
    feats = features.utterance_features(audio)
    assert feats.shape == (100 // 3, 192)  # 10 ms hop, stacked by 3
    padded = features.fit_length(feats, 40)
    assert padded.shape == (40, 192) and not padded[:7].any() and np.array_equal(padded[7:], feats)
    assert features.fit_length(feats, 20).shape == (20, 192)
    masked = features.spec_augment(padded, freq_param=10, time_param=3).numpy()
    assert masked.shape == padded.shape and (masked == 0).sum() > (padded == 0).sum()


def test_a_frequency_warp_moves_formants_by_at_most_its_factor():
    import tensorflow as tf
    band = np.zeros((5, features.NUM_MELS), np.float32)
    band[:, 40] = 1.0  # one formant, at band 40 of 64 (about 2.9 kHz)
    stacked = band.reshape(5, -1)
    with pytest.raises(ValueError, match="Received: max_warp=1.5"):
        features.warp_frequencies(stacked, 1.5)
    tf.random.set_seed(0)
    peaks = set()
    for _ in range(30):
        warped = features.warp_frequencies(tf.constant(stacked), 0.15).numpy()
        warped = warped.reshape(5, features.NUM_MELS)
        assert warped.min() >= 0 and warped.max() <= 1 and np.allclose(warped, warped[0])  # every frame alike
        peaks.add(int(warped[0].argmax()))
    # A factor of 1.15 moves 2.9 kHz to 2.5 or 3.3 kHz: a few mel bands, both ways, never more than five.
    assert min(peaks) < 40 < max(peaks) and max(abs(p - 40) for p in peaks) <= 5, peaks
    with pytest.raises(ValueError, match="Received: freq_warp=0.7"):
        slu_model.SluConfig.demo(freq_warp=0.7)


def test_every_phrasing_has_its_own_tokens_under_the_demo_tokenizer():
    # A training split's transcriptions: each phrasing once per speaker (the demo trains 34).
    texts = [p[0] for d in DOMAINS for p in PHRASES[d]] * 34
    config = slu_model.SluConfig.demo()
    vocabulary = slu_model.build_tokenizer(texts, config)
    phrases = sorted(set(texts))
    slu_model.check_distinct_tokens(phrases, vocabulary, config.max_tokens)  # raises on the first collision
    pieces = slu_model.tokenize(phrases, vocabulary, 32)
    assert (pieces > 0).sum(axis=1).max() <= config.max_tokens  # nothing is cut
    with pytest.raises(ValueError, match="have the same tokens"):
        slu_model.check_distinct_tokens(phrases, vocabulary, 2)


def test_triplet_loss_mines_violating_negatives():
    import tensorflow as tf
    text = tf.constant([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    audio = tf.constant([[0.8, 0.6], [0.0, 1.0]])
    labels = tf.constant([0, 1])
    loss = slu_model.triplet_loss(audio, text, labels, margin=0.5).numpy()
    d = np.linalg.norm(audio.numpy()[:, None] - text.numpy()[None], axis=-1)
    violations = [max(0, d[0, 0] - d[0, j] + 0.5) for j in (1, 2)] + [max(0, d[1, 1] - d[1, j] + 0.5) for j in (0, 2)]
    active = [v for v in violations if v > 0]
    assert loss == pytest.approx(sum(active) / len(active), rel=1e-5)
    far = slu_model.triplet_loss(tf.constant([[1.0, 0.0]]), text, tf.constant([0]), margin=0.5)
    assert float(far) == 0.0


@pytest.mark.slow
def test_tiny_run_end_to_end(tiny_fsc_run):
    from recipes.fsc import run as fsc_run
    import tfdiff
    from tfdiff import keras

    out, results, table = tiny_fsc_run
    for name in ("results.json", "results.md", "results.png", "devices/gen0.tflite"):
        assert (out / name).exists(), name
    saved = json.load(open(out / "results.json"))
    assert saved["task"] == "fsc" and saved["scale"] == "tiny"
    gen0, gen1 = saved["generations"]
    assert gen0["domains"] == DOMAINS[:3] and gen1["domains"] == DOMAINS[:4]
    assert saved["strategy"] == "MirroredStrategy"  # the fixture trains on two replicas
    # The fixture's run takes every method (BLC: the paper's two) and the post-hoc baseline.
    expected = {"BL", "BLinf", "FT", "Posthoc-topk-8x", "BLC-sparse-8x", "BLC-hash-8x"} | {
        f"Diff-{m}-8x" for m in ("sparse", "hash", "sparse-global", "lowrank", "seed")}
    assert set(gen1["rows"]) == expected and set(gen0["rows"]) == {"BL", "BLinf"}
    for field in ["unseen_engine_accuracy", "valid_accuracy"] + [f"{c}_accuracy" for c in CONDITIONS]:
        assert field in gen1["rows"]["BL"], field
    record = saved["provenance"][0]
    assert len(record["commit"]) == 40 and record["machine"]["cores"] >= 1 and record["seeds"] == [0]
    # Every measured row has an interval from its per-utterance scores, and rows past BL one against BL.
    for key, row in gen1["rows"].items():
        low, high = row["ci95"]
        assert 0 <= low <= row["accuracy"] <= high <= 1, key
        assert (key == "BL") != ("minus_BL_ci95" in row), key
        # A Diff whose method has a BLC also carries the interval of its difference to that BLC.
        assert ("minus_BLC_ci95" in row) == (key in ("Diff-sparse-8x", "Diff-hash-8x")), key
    low, high = gen1["rows"]["Diff-sparse-8x"]["minus_BLC_ci95"]
    gap = gen1["rows"]["Diff-sparse-8x"]["accuracy"] - gen1["rows"]["BLC-sparse-8x"]["accuracy"]
    assert low <= gap <= high
    for key, row in gen1["rows"].items():
        if key.startswith("BLC"):
            assert row["steps"] == saved["flywheel"]["bl_steps"] and row["bytes"] <= row["budget_bytes"], key
        if key.startswith(("Diff", "Posthoc")):
            # The same bits under LiteRT and Keras: at most one near-tie flips (16 test utterances).
            assert row["cut_values"] == 0 and abs(row["keras_accuracy"] - row["accuracy"]) <= 1 / 16, key
            assert row["bytes"] <= row["budget_bytes"] and row["device_matches_fold"], key
            assert row["latency_ms"] > 0
            size = os.path.getsize(out / "diffs" / f"{key}-g1.tfdiff")
            assert size == row["bytes"]
    assert "| 1 | 4 |" in table and "Diff minus its BLC" in table

    # The patched .tflite and the folded Keras model are the same model.
    folded = keras.models.load_model(out / "models" / "Diff-sparse-8x-g1.keras", compile=False)
    device_model = out / "devices" / "Diff-sparse-8x.tflite"
    assert tfdiff.DeviceModel(folded).matches(device_model)
    config = slu_model.SluConfig.from_config(json.load(open(out / "config.json"))["slu"])
    runner = fsc_run.TfliteSlu(device_model)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(config.frames, 192)).astype(np.float32)
    tokens = rng.integers(0, config.vocab_size, size=config.max_tokens).astype(np.int32)
    audio, text = folded([x[None], tokens[None]], training=False)
    lite = runner(x, tokens)
    np.testing.assert_allclose(lite[0], audio.numpy()[0], atol=1e-5)
    np.testing.assert_allclose(lite[1], text.numpy()[0], atol=1e-5)

    # Resuming retrains nothing: the same results come back at once, with one more provenance record.
    settings = json.load(open(out / "config.json"))["settings"]  # the tiny scale, as the fixture overrode it
    with pytest.raises(ValueError, match="other settings"):  # refused before config.json is touched
        fsc_run.run(str(out), synthetic=True, scale="tiny")
    assert json.load(open(out / "config.json"))["settings"] == settings
    again, _ = fsc_run.run(str(out), synthetic=True, scale="tiny", settings=settings)
    assert len(again.pop("provenance")) == len(saved.pop("provenance")) + 1
    assert again == saved


@pytest.mark.slow
def test_blc_starts_from_a_fresh_model_not_from_bl(tiny_fsc_run, tmp_path):
    import shutil
    import tfdiff
    from recipes.fsc import run as fsc_run
    from recipes.speech.flywheel import Flywheel, FlywheelConfig

    out, _, _ = tiny_fsc_run
    run_dir = tmp_path / "run"  # a copy: _blc writes its model into the run directory
    shutil.copytree(out, run_dir, ignore=shutil.ignore_patterns("corpus"))
    task = fsc_run.load_task(str(run_dir))
    flywheel = Flywheel(task, FlywheelConfig.from_config(json.load(open(run_dir / "results.json"))["flywheel"]),
                        str(run_dir), "tiny")
    started = {}

    def first_weights(model, gen, steps, callbacks, label, learning_rate=None):
        started[label] = tfdiff.named_weights(tfdiff.strip(model))

    task.train = first_weights
    flywheel.row(("blc", 1, "sparse", 4))
    (initial,) = started.values()
    fresh = tfdiff.named_weights(task.new_model(1))
    bl = tfdiff.named_weights(flywheel._load_model("BL", 1))
    kernels = [name for name in fresh if name.endswith("kernel")]
    assert kernels and all(np.array_equal(initial[n], fresh[n]) for n in kernels)
    assert not any(np.array_equal(initial[n], bl[n]) for n in kernels)


@pytest.mark.slow
def test_studies_of_a_run_write_their_tables(tiny_fsc_run):
    import tfdiff
    from recipes.fsc import run as fsc_run
    from recipes.speech import study
    from tfdiff import keras

    out, _, _ = tiny_fsc_run
    args = (fsc_run.RECIPE, "study")
    study.main(*args, [str(out), "curve", "--steps", "2", "6", "--seeds", "2"])
    curve = json.load(open(out / "study-curve.json"))
    assert [(row["steps"], row["seed"]) for row in curve["rows"]] == [(2, 0), (2, 1), (6, 0), (6, 1)]
    mean = curve["summary"][1]["accuracy"]
    assert mean["values"] == [row["accuracy"] for row in curve["rows"][2:]] and mean["ci95"][0] <= mean["mean"]
    assert "Mean [95 % t-interval] over seeds [0, 1]" in open(out / "study-curve.md").read()
    assert curve["split"] == "valid"  # studies choose settings: valid by default, never test
    assert all("valid_clean_accuracy" in row and "unseen_engine_accuracy" not in row for row in curve["rows"])
    study.main(*args, [str(out), "diff", "--steps", "6", "--lr", "0.01", "--window", "0.1,0.5", "0.2,0.9",
                       "--ratio", "4"])
    grid = json.load(open(out / "study-diff.json"))
    assert [row["window"] for row in grid["rows"]] == [[0.1, 0.5], [0.2, 0.9]]
    assert grid["split"] == "valid"
    assert grid["BL"] == json.load(open(out / "results.json"))["generations"][1]["rows"]["BL"]["valid_accuracy"]
    assert "| 6 | 0.01 | 0.1-0.5 |" in open(out / "study-diff.md").read()
    # A later generation of a chain: its diff starts from the chain's previous model (the run's last), and BL
    # of that generation, which the run has not trained, is trained once for the comparison.
    study.main(*args, [str(out), "diff", "--gen", "2", "--chain", "Diff-hash-8x", "--method", "hash",
                       "--steps", "2", "--lr", "0.01", "--ratio", "8"])
    grid = json.load(open(out / "study-diff.json"))
    assert (grid["gen"], grid["chain"], grid["rows"][0]["learning_rate"]) == (2, "Diff-hash-8x", 0.01)
    assert 0 <= grid["BL"] <= 1 and grid["chain_row"] is None and (out / "models" / "BL-g2.keras").exists()
    assert "hash 8x at generation 2, from Diff-hash-8x of generation 1, valid split" in open(
        out / "study-diff.md").read()
    # methods: every method, ratio and step count with seeds, beside the post-hoc baselines, on valid.
    # Two worker processes; then, as if killed after three cells (and mid-line), resumed by one one-thread worker.
    grid = [str(out), "methods", "--methods", "lowrank", "sparse-warm", "sparse-sensitive", "--ratios", "8",
            "--steps", "4", "--seeds", "2", "--posthoc", "topk"]
    study.main(*args, grid + ["--workers", "2"])
    methods = json.load(open(out / "study-methods.json"))
    assert methods["split"] == "valid" and methods["seeds"] == [0, 1] == methods["provenance"]["seeds"]
    assert sorted((r["key"], r["seed"]) for r in methods["rows"]) == [
        (key, seed) for key in ("Diff-lowrank", "Diff-sparse-sensitive", "Diff-sparse-warm", "FT", "Posthoc-topk")
        for seed in (0, 1)]
    kept = out / "study" / "methods-valid.jsonl"
    lines = open(kept).read().splitlines()
    kept.write_text("\n".join(lines[:8]) + "\n" + lines[8][:20])
    study.main(*args, grid + ["--workers", "1"])
    resumed = json.load(open(out / "study-methods.json"))
    assert len(open(kept).read().splitlines()) == len(lines)  # the cut line's cell is measured again
    for got, want in zip(resumed["rows"], methods["rows"], strict=True):
        assert {k: got[k] for k in ("key", "seed", "accuracy", "bytes")} == \
            {k: want[k] for k in ("key", "seed", "accuracy", "bytes")}
    budget = tfdiff.budget_bytes(sum(v.size for v in tfdiff.named_weights(
        keras.models.load_model(out / "models" / "BL-g0.keras", compile=False)).values()), 8)
    for row in methods["summary"]:
        assert len(row["values"]) == 2 and row["ci95"][0] <= row["mean"] <= row["ci95"][1], row
        assert (row["bytes"] is None) == (row["key"] == "FT") and (row["bytes"] or 0) + 68 <= budget, row
    assert "4 steps:" in open(out / "study-methods.md").read()
    assert "| Diff-lowrank | " in open(out / "study-methods.md").read()
    assert (out / "study-methods.png").stat().st_size > 0
    # seeds: tests/test_fsc_workers.py reruns its own (smaller) run under a second seed.
    # A finished run's settings are its own: --set would silently not apply, so it is refused.
    with pytest.raises(SystemExit) as refused:
        study.main(*args, [str(out), "curve", "--steps", "2", "--set", "flywheel.bl_steps=3"])
    assert refused.value.code == 2


@pytest.mark.slow
def test_evaluate_measures_a_finished_runs_models_again(tiny_fsc_run):
    from recipes.fsc import run as fsc_run
    from recipes.speech import evaluate

    out, _, _ = tiny_fsc_run
    assert evaluate.main(fsc_run.RECIPE, "python -m recipes.fsc.evaluate", [str(out)]) == 0
    rows = json.load(open(out / "evaluate.json"))["rows"]
    saved = json.load(open(out / "results.json"))
    expected = {(g["gen"], key) for g in saved["generations"] for key in g["rows"]}
    assert {(r["gen"], r["model"]) for r in rows} == expected
    for row in rows:
        recorded = saved["generations"][row["gen"]]["rows"][row["model"]]
        # Keras models measured again give the same figure. Figures recorded on the device (LiteRT: a Diff's,
        # generation 0's BL∞) may differ by one near-tie of the 16 test utterances.
        expected = recorded.get("keras_accuracy", recorded["accuracy"])
        on_device = row["model"] == "BLinf" and row["gen"] == 0
        assert row["accuracy"] == pytest.approx(expected, abs=1 / 16 + 1e-9 if on_device else 1e-9), row


@pytest.mark.slow
def test_tiny_int8_run_measures_int8_models_and_ships_int8_deltas(tiny_fsc_int8_run):
    import tfdiff

    out = tiny_fsc_int8_run
    saved = json.load(open(out / "results.json"))
    assert saved["flywheel"]["quantize"] == "int8" and saved["flywheel"]["methods"] == ["sparse"]
    gen0, gen1 = saved["generations"]
    assert set(gen1["rows"]) == {"BL", "BLinf", "BLC-sparse-8x", "Diff-sparse-8x"}
    # BL and BLC are measured after the same int8 conversion as the device's model.
    for key in ("BL", "BLC-sparse-8x"):
        assert "keras_accuracy" in gen1["rows"][key] and (out / "devices" / f"{key}-g1.tflite").exists(), key
    assert gen0["rows"]["BL"]["accuracy"] == gen0["rows"]["BLinf"]["accuracy"]
    # Steps per generation: BL and BLC (from scratch alike) at generation 1's count, the diff at its own.
    assert [gen0["rows"]["BL"]["steps"], gen1["rows"]["BL"]["steps"], gen1["rows"]["BLC-sparse-8x"]["steps"],
            gen1["rows"]["Diff-sparse-8x"]["steps"]] == [12, 14, 14, 6]
    for key in ("Diff-sparse-8x",):
        row = gen1["rows"][key]
        assert row["device_matches_fold"] is True and row["bytes"] <= row["budget_bytes"] and row["cut_values"] == 0
    base = tfdiff.Int8Model.load(out / "devices" / "gen0.tflite")
    diff = tfdiff.Diff.load(out / "diffs" / "Diff-sparse-8x-g1.tfdiff")
    assert base.int8_names and {e.name for e in diff.entries if e.values.dtype == np.int8} == set(base.int8_names)
    assert "int8 device models" in open(out / "results.md").read()


def test_the_flywheel_names_every_diff_method_and_trains_blc_with_the_papers():
    from recipes.speech.flywheel import FlywheelConfig

    config = FlywheelConfig(methods=("sparse", "sparse-global", "lowrank", "seed", "hash"), ratios=(20,))
    kinds = {name: config.method(name, 20, 100, (0.1, 0.5), seed=3) for name in config.methods}
    assert {name: type(m).__name__ for name, m in kinds.items()} == {
        "sparse": "SparseDiff", "sparse-global": "SparseDiff", "lowrank": "LowRankDiff", "seed": "SeedDiff",
        "hash": "HashDiff"}
    assert (kinds["sparse"].allocation, kinds["sparse-global"].allocation) == ("layer", "global")
    assert config.blc_method_names == ("sparse", "hash")  # BLC is the paper's: pruned or HashedNets from scratch
    with pytest.raises(ValueError, match="Received: methods=\\['lora'\\]"):
        FlywheelConfig(methods=("lora",))
    with pytest.raises(ValueError, match="blc_methods"):
        FlywheelConfig(methods=("sparse", "lowrank"), blc_methods=("lowrank",))


def test_a_diff_learning_rate_and_bl_steps_can_change_with_the_generation():
    """A rate per generation from 1 (BL's and the diffs' steps: from 0), the last for every later one; the
    flywheel's diffs and the diff study read it through `learning_rate(method, gen)`, and a study at a later
    generation needs the chain it starts from."""
    from recipes.speech.flywheel import FlywheelConfig
    from recipes.speech.study import diff_grid

    config = FlywheelConfig(diff_learning_rate={"hash": [0.03, 0.03, 0.01], "sparse": 0.003})
    assert [config.learning_rate("hash", gen) for gen in (1, 2, 3, 4)] == [0.03, 0.03, 0.01, 0.01]
    assert [config.learning_rate("sparse", gen) for gen in (1, 3)] == [0.003, 0.003]
    assert config.learning_rate("lowrank", 2) is None  # not named: the task's own
    assert FlywheelConfig.from_config(config.get_config()).learning_rate("hash", 3) == 0.01
    for bad in ({"hash": []}, {"hash": [0.03, -1]}, [0.01, "fast"]):
        with pytest.raises(ValueError, match="Received: diff_learning_rate="):
            FlywheelConfig(diff_learning_rate=bad)
    # Steps per generation from 0, the last for every later one (BLC trains BL's; diffs ignore entry 0).
    steps = FlywheelConfig.from_config(FlywheelConfig(bl_steps=[1500, 2000], diff_steps=[1, 500, 900]).get_config())
    assert [steps.bl_steps_at(gen) for gen in (0, 1, 3)] == [1500, 2000, 2000]
    assert [steps.diff_steps_at(gen) for gen in (1, 2, 3)] == [500, 900, 900]
    for name in ("bl_steps", "diff_steps"):
        for bad in ([], [1500, 0], 1500.0):
            with pytest.raises(ValueError, match=f"Received: {name}="):
                FlywheelConfig(**{name: bad})
    with pytest.raises(ValueError, match="Received: gen=3, chain=None"):
        diff_grid(None, "unused", [4], [None], [(0.1, 0.5)], method="hash", gen=3)


def test_a_diff_can_learn_from_its_generations_bl():
    """Distillation over the phrases: least when the student chooses as the teacher does; refused by a task
    that cannot take a teacher; BL then trains before the diffs (tests/distributed_worker.py's run uses it)."""
    import tensorflow as tf
    from recipes.speech.flywheel import FlywheelConfig, learn_diff
    rng = np.random.default_rng(0)
    audio, text = (tf.constant(rng.normal(size=shape).astype(np.float32)) for shape in ((6, 4), (3, 4)))
    same = float(slu_model.distillation_loss(audio, text, audio, text, margin=0.1))
    other = float(slu_model.distillation_loss(audio, text, -audio, text, margin=0.1))
    assert np.isfinite(same) and same < other
    assert FlywheelConfig(teacher_weight=0.5).get_config()["teacher_weight"] == 0.5
    assert "teacher_weight" not in FlywheelConfig().get_config()  # runs recorded before it keep their settings
    with pytest.raises(ValueError, match="Received: teacher_weight=1.0"):
        FlywheelConfig(teacher_weight=1.0)

    class Plain:
        name = "plain"
    with pytest.raises(ValueError, match="cannot learn from a teacher"):
        learn_diff(Plain(), None, None, 1, 4, "x", teacher=object(), teacher_weight=0.5)


def test_a_run_extends_to_more_generations_but_refuses_other_settings(tmp_path):
    from recipes.speech.flywheel import Flywheel, FlywheelConfig

    class Named:  # _load reads only the task's name
        name = "fsc"

    finished = {"gen": 0, "rows": {"BL": {"accuracy": 0.5}}}
    with open(tmp_path / "results.json", "w") as f:
        json.dump({"task": "fsc", "scale": "demo", "flywheel": FlywheelConfig(generations=3).get_config(),
                   "generations": [finished]}, f)
    extended = Flywheel(Named(), FlywheelConfig(generations=5), str(tmp_path), "demo")
    assert extended.results["generations"] == [finished] and extended.results["flywheel"]["generations"] == 5
    for other in (FlywheelConfig(generations=2), FlywheelConfig(generations=3, bl_steps=7)):
        with pytest.raises(ValueError, match="other settings"):
            Flywheel(Named(), other, str(tmp_path), "demo")
    with pytest.raises(ValueError, match="other settings"):
        Flywheel(Named(), FlywheelConfig(generations=3), str(tmp_path), "paper")
