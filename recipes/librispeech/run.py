"""python -m recipes.librispeech.run [--data DIR | --synthetic] --out RUN_DIR [--scale demo|paper]

The RNN-T ASR flywheel of paper section 4.1 (Setting 1): generation 0
trains on half the training hours, each later generation on 10% more
(nested sets), and each release reaches the device as a 10x diff patched
into its .tflite (encoder, prediction_step and joint signatures). Writes
RUN_DIR/results.json, results.md and results.png; rerun to resume.

Stages, each a function: data -> features -> tokenizer -> (model, train,
export, evaluate: recipes.speech.flywheel) -> report.
"""
import os
import time

import numpy as np
from tqdm import tqdm

import device
from recipes.speech import features as speech_features
from recipes.speech import recipe
from recipes.speech.distribute import shard_by_data
from recipes.speech import intervals
from recipes.speech.synth import Augmentation
from recipes.speech.training import HoldDecay, ProgressBar
from tfdiff import keras
import tensorflow as tf

from . import data, model as rnnt_model
from .rnnt import utterance_errors

SCALES = {
    # Probed on this CPU (docs/RESULTS.md): characters (vocab_size 60), a bidirectional
    # encoder and many voices are what a small recognizer needs to reach unseen voices.
    "demo": dict(rnnt=dict(enc_layers=2, enc_units=96, enc_bidirectional=True, pred_units=96, proj=96, embed_dim=32,
                           joint_dim=96, vocab_size=60, time_reduction=2),
                 hours=16.0, speakers=150, text="grammar", batch=32, learning_rate=3e-3, test_utterances=500,
                 valid_utterances=300,
                 flywheel=dict(generations=6, ratios=(10,), bl_steps=2000, diff_steps=500, blc_methods=("sparse",)),
                 augmentation={}),
    "paper": dict(rnnt={}, hours=None, speakers=None, batch=64, learning_rate=1e-3,
                  flywheel=dict(generations=6, ratios=(10,), bl_steps=35000, diff_steps=12000,
                                diff_prune=(1000 / 12000, 11000 / 12000), blc_prune=(20000 / 35000, 1.0),
                                prune_frequency=100)),
    "tiny": dict(rnnt=dict(enc_layers=1, enc_units=16, pred_units=16, proj=16, embed_dim=8, joint_dim=16,
                           vocab_size=80), hours=0.01, speakers=4, text="grammar", batch=4, learning_rate=1e-3,
                 test_utterances=10, valid_utterances=10,
                 flywheel=dict(generations=2, ratios=(4,), bl_steps=6, diff_steps=4,
                               prune_frequency=1), augmentation={}),
}
TRAIN_SUBSETS = ("train-synth", "train-clean-100", "train-clean-360", "train-other-500")


# -- data ----------------------------------------------------------------------
def prepare_data(out, data_dir=None, synthetic=False, scale="demo", settings=None):
    """(root, train, {split: utterances}): --data as given, or a corpus synthesized in RUN_DIR/corpus.

    The splits are "test" (what the tables report) and, where the corpus has
    one, "valid" (what studies choose settings by): valid-synth, or
    LibriSpeech's dev-clean.
    """
    settings = settings or SCALES[scale]
    if not data_dir:
        if not synthetic:
            raise ValueError("give --data DIR (a LibriSpeech directory) or --synthetic")
        data_dir = os.path.join(out, "corpus")
        if not os.path.exists(os.path.join(data_dir, "test-synth")):
            from .synth import generate
            generate(data_dir, settings["hours"], speakers=settings["speakers"], text=settings.get("text", "grammar"),
                     augmentation=Augmentation.from_config(settings.get("augmentation") or {}))
    subsets = [s for s in TRAIN_SUBSETS if os.path.isdir(os.path.join(data_dir, s))]
    if not subsets:
        raise FileNotFoundError(f"no training subset ({', '.join(TRAIN_SUBSETS)}) under {data_dir}")
    train = [u for s in subsets for u in data.load_subset(data_dir, s)]
    held_out = {split: load_held_out(data_dir, split, settings.get(f"{split}_utterances"))
                for split in ("valid", "test")}
    return data_dir, train, {split: u for split, u in held_out.items() if u is not None}


HELD_OUT = {  # split: (subset of a synthesized corpus, of LibriSpeech)
    "valid": ("valid-synth", "dev-clean"),
    "test": ("test-synth", "test-clean"),  # test-clean: the paper's WER set
}


def load_held_out(data_dir, split="test", utterances=None):
    """The utterances of `split` ("valid" or "test"), or None for a valid split the corpus lacks.

    With `utterances`, that many, evenly strided through the sorted set, so
    every speaker keeps a share: a whole synthetic test set (a fifth of
    the hours) would cost more decoding than training.
    """
    synthetic = os.path.isdir(os.path.join(data_dir, "train-synth"))
    subset = HELD_OUT[split][0 if synthetic else 1]
    if split != "test" and not os.path.isdir(os.path.join(data_dir, subset)):
        return None
    held_out = data.load_subset(data_dir, subset)
    if utterances and len(held_out) > utterances:
        held_out = [held_out[i] for i in np.linspace(0, len(held_out) - 1, utterances).round().astype(int)]
    return held_out


# -- features --------------------------------------------------------------------
def compute_features(utterances, cache):
    """30 ms features of every utterance, cached as one array plus offsets (and the utterances' paths)."""
    paths = np.array([u.path for u in utterances])
    if os.path.exists(cache):
        saved = np.load(cache)
        # A cache of other utterances (another test subset, say) is computed again.
        if "paths" in saved and np.array_equal(saved["paths"], paths):
            return np.split(saved["frames"], saved["offsets"][1:-1])
    feats = [speech_features.utterance_features(speech_features.read_audio(u.path)).astype(np.float16)
             for u in tqdm(utterances, desc=os.path.basename(cache), unit="utt")]
    offsets = np.cumsum([0] + [f.shape[0] for f in feats])
    np.savez(cache + ".tmp.npz", frames=np.concatenate(feats), offsets=offsets, paths=paths)
    os.replace(cache + ".tmp.npz", cache)
    return feats


# -- tokenizer ---------------------------------------------------------------------
def build_vocabulary(texts, size):
    """WordPiece pieces (keras-nlp) of the transcripts; id 0, [PAD], is the RNN-T blank."""
    import keras_nlp
    return list(keras_nlp.tokenizers.compute_word_piece_vocabulary(
        tf.data.Dataset.from_tensor_slices([t.lower() for t in texts]), vocabulary_size=size,
        reserved_tokens=["[PAD]", "[UNK]"]))


def read_vocabulary(run_dir):
    with open(os.path.join(run_dir, "vocab.txt")) as f:
        return f.read().split("\n")[:-1]


class Pieces:
    def __init__(self, vocabulary):
        import keras_nlp
        self.tokenizer = keras_nlp.tokenizers.WordPieceTokenizer(vocabulary=vocabulary, oov_token="[UNK]")

    def encode(self, texts):
        return [np.asarray(ids, np.int32) for ids in self.tokenizer(tf.constant([t.lower() for t in texts]))]

    def decode(self, ids):
        if not ids:
            return ""
        text = np.asarray(self.tokenizer.detokenize(tf.constant([ids], tf.int32)))[0]
        return text.decode("utf-8") if isinstance(text, bytes) else str(text)


# -- the task the flywheel drives -------------------------------------------------
class LibriTask:
    """The flywheel's ASR task (recipes/speech/task.py): WER on `held_out[split]`, scored per utterance.

    `held_out` maps "test" (and "valid" where the corpus has it) to
    (utterances, features).
    """
    name, metric = "librispeech", "wer"

    def __init__(self, train, held_out, train_feats, pieces, config, batch, fractions, seed=0, learning_rate=1e-3):
        if "test" not in held_out:
            raise ValueError(f"the task needs a test split. Received: splits {sorted(held_out)}")
        self.train_set, self.train_feats, self.held_out = train, train_feats, held_out
        self.splits = tuple(s for s in ("valid", "test") if s in held_out)
        self.test_set, self.test_feats = held_out["test"]
        self.pieces, self.config, self.batch, self.seed = pieces, config, batch, seed
        self.learning_rate = learning_rate
        index = {u.path: i for i, u in enumerate(train)}
        self.subsets = [[index[u.path] for u in subset] for subset in data.growing_subsets(train, fractions, seed)]
        self.labels = pieces.encode([u.text for u in train])

    def describe(self, gen):
        return {"hours": round(sum(self.train_set[i].seconds for i in self.subsets[gen]) / 3600, 3)}

    def new_model(self, gen):
        keras.utils.set_random_seed(self.seed + gen)
        return rnnt_model.build_rnnt(self.config)

    def convert(self, model, path, quantize=None):
        return device.convert(model, path, signatures=rnnt_model.signatures(model), quantize=quantize)

    def train(self, model, gen, steps, callbacks, label, learning_rate=None):
        chosen = self.subsets[gen]

        lengths = np.array([self.train_feats[i].shape[0] for i in chosen])

        def examples():
            rng = np.random.default_rng(self.seed + gen)
            while True:
                for i in np.asarray(chosen)[length_bucketed(lengths, self.batch, rng)]:
                    x, y = self.train_feats[i], self.labels[i]
                    yield (x.astype(np.float32), y, np.int32(x.shape[0]), np.int32(y.size)), np.int32(0)

        def augment(inputs, target):
            # In the dataset's graph, not eagerly in the generator: eager SpecAugment there grew
            # the process by about 10 MB per step (0.6 GB -> 9.2 GB over 800 steps).
            features, labels, frames, label_lengths = inputs
            return (speech_features.spec_augment(features), labels, frames, label_lengths), target

        spec = ((tf.TensorSpec([None, speech_features.FEATURE_DIM], tf.float32), tf.TensorSpec([None], tf.int32),
                 tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)), tf.TensorSpec([], tf.int32))
        dataset = shard_by_data(tf.data.Dataset.from_generator(examples, output_signature=spec)
                                .map(augment).padded_batch(self.batch).prefetch(2))
        trainer = rnnt_model.RnntTrainer(model)
        schedule = HoldDecay(learning_rate or self.learning_rate, steps // 2, max(steps, 1) + 1)
        trainer.compile(optimizer=keras.optimizers.Adam(schedule, global_clipnorm=5.0))
        trainer.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0,
                    callbacks=list(callbacks) + [ProgressBar(steps, label)])

    def _split(self, split):
        if split not in self.splits:
            raise ValueError(f"this LibriSpeech corpus has the splits {self.splits}. Received: split={split!r}")
        return self.held_out[split]

    def scores(self, model, gen, split="test"):
        """[utterances, 2]: each utterance of `split`'s word errors and reference words (WER is their sums'
        ratio), from greedy decoding of the Keras model."""
        # The server's Keras models decode a split as one batch; the device's .tflite below
        # one utterance at a time, as a device would, which is what its real-time factor times.
        utterances, feats = self._split(split)
        recognizer = rnnt_model.KerasRecognizer(model)
        ids = rnnt_model.greedy_batch(recognizer, [f.astype(np.float32) for f in feats],
                                      self.config.pred_units, self.config.pred_layers)
        return utterance_errors([u.text for u in utterances], [self.pieces.decode(i) for i in ids])

    def evaluate(self, model, gen, split="test"):
        return intervals.metric(self.scores(model, gen, split))

    def groups(self, gen, split="test"):
        """The speaker of each utterance `scores` scores: the unit the intervals resample."""
        return np.array([u.speaker for u in self._split(split)[0]])

    def validate(self, model, gen):
        """WER on the valid split, what studies choose by (nothing for a corpus without one)."""
        return {"valid_wer": self.evaluate(model, gen, "valid")} if "valid" in self.splits else {}

    def evaluate_tflite(self, path, gen):
        """Test WER of a .tflite under LiteRT, greedy, and {"rtf": real-time factor, "scores": per utterance}."""
        recognizer = rnnt_model.TfliteRecognizer(path)
        hypotheses, seconds = [], 0.0
        for feats in tqdm(self.test_feats, desc="decode", unit="utt", leave=False):
            start = time.perf_counter()
            ids = rnnt_model.greedy(recognizer, feats.astype(np.float32), self.config.pred_units,
                                    self.config.pred_layers)
            seconds += time.perf_counter() - start
            hypotheses.append(self.pieces.decode(ids))
        audio = sum(u.seconds for u in self.test_set)
        scores = utterance_errors([u.text for u in self.test_set], hypotheses)
        return intervals.metric(scores), {"rtf": seconds / audio, "scores": scores}


def length_bucketed(lengths, batch, rng, pool=32):
    """A random order in which each run of `batch` items has similar lengths.

    Pools of `pool` batches are sorted by length, cut into batches, and the
    batches shuffled: padding (and the RNN-T joint's cost) shrinks. Only whole
    batches are kept (so `padded_batch` stays aligned across epochs); the
    items left out differ from epoch to epoch.
    """
    order = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(order), batch * pool):
        chunk = order[start:start + batch * pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch] for i in range(0, len(chunk) - batch + 1, batch)]
    if not batches:  # fewer items than one batch
        return order
    return np.concatenate([batches[i] for i in rng.permutation(len(batches))])


def prepare(out, data_dir=None, synthetic=False, scale="demo", seed=0, settings=None):
    """Data, features and vocabulary of a run: the LibriTask the flywheel drives (settings as for FSC)."""
    if scale not in SCALES:
        raise ValueError(f"--scale must be one of {sorted(SCALES)}. Received: {scale!r}")
    os.makedirs(os.path.join(out, "features"), exist_ok=True)
    settings = settings or SCALES[scale]
    config = (rnnt_model.RnntConfig(**settings["rnnt"]) if scale == "paper"
              else rnnt_model.RnntConfig.demo(**settings["rnnt"]))
    root, train, held_out = prepare_data(out, data_dir, synthetic, scale, settings)
    train_feats = compute_features(train, os.path.join(out, "features", "train.npz"))
    held_out = {split: (utterances, compute_features(utterances, os.path.join(out, "features", f"{split}.npz")))
                for split, utterances in held_out.items()}
    vocab_path = os.path.join(out, "vocab.txt")
    if not os.path.exists(vocab_path):
        with open(vocab_path, "w") as f:
            f.write("\n".join(build_vocabulary([u.text for u in train], config.vocab_size)) + "\n")
    vocabulary = read_vocabulary(out)
    config.vocab_size = len(vocabulary)
    generations = settings["flywheel"]["generations"]
    fractions = [min(1.0, 0.5 + 0.1 * g) for g in range(generations)]
    recipe.save_config(out, {"rnnt": config.get_config(), "scale": scale, "data": root, "seed": seed,
                             "settings": settings})
    return LibriTask(train, held_out, train_feats, Pieces(vocabulary), config, settings["batch"], fractions, seed,
                     settings["learning_rate"])


RECIPE = recipe.Recipe("python -m recipes.librispeech.run", __doc__,
                       "a LibriSpeech directory (train-clean-100/, test-clean/, ...)", prepare, SCALES)


def run(out, data_dir=None, synthetic=False, scale="demo", seed=0, strategy="default", workers=None, settings=None):
    return recipe.run(RECIPE, out, data_dir, synthetic, scale, seed, strategy, workers, settings)


def main(argv=None):
    recipe.main(RECIPE, argv)


if __name__ == "__main__":
    main()
