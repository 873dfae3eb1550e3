"""LibriSpeech training keeps its memory flat: the per-example eager SpecAugment once grew it ~10 MB a step."""
import numpy as np
import pytest

from tfdiff import keras

pytestmark = pytest.mark.slow


def resident_mb():
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) / 1024


def test_memory_stays_flat_over_hundreds_of_steps():
    from recipes.librispeech import data, model as rnnt_model, run

    rng = np.random.default_rng(0)
    words = "alpha beta gamma delta".split()
    texts = [" ".join(rng.choice(words, 3)).upper() for _ in range(64)]
    train = [data.Utterance(f"/none/{i}.flac", str(i % 4), str(i % 8), t, 2.0) for i, t in enumerate(texts)]
    # float16 features, as the recipe caches them: the cast per example was part of the leak.
    feats = [rng.normal(size=(int(rng.integers(40, 80)), 192)).astype(np.float16) for _ in train]
    vocabulary = run.build_vocabulary(texts, 40)
    config = rnnt_model.RnntConfig.demo(enc_layers=2, enc_units=32, pred_units=32, proj=32, embed_dim=8, joint_dim=32,
                                   vocab_size=len(vocabulary), time_reduction=2)
    task = run.LibriTask(train, {"test": (train[:2], feats[:2])}, feats, run.Pieces(vocabulary), config, batch=16,
                         fractions=[1.0])
    resident = {}

    class Measure(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 in (100, 400):
                resident[batch + 1] = resident_mb()

    task.train(task.new_model(0), 0, 400, [Measure()], "memory")
    growth = resident[400] - resident[100]
    assert growth < 60, f"resident memory grew {growth:.0f} MB over 300 steps"
