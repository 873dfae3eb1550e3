"""python -m recipes.fsc.run [--data DIR | --synthetic] --out RUN_DIR [--scale demo|paper]

The spoken-command flywheel of paper section 4.2: a contrastive speech/text
model gains a domain per generation (Lighting, Heat, Volume; then Bring,
Language, Music), and each release reaches the device as a budgeted diff
patched into its .tflite. Writes RUN_DIR/results.json, results.md (the
Table-1-style table) and results.png. Rerun the same command to resume.

Stages, each a function: data -> features -> (model, train, export,
evaluate: recipes.speech.flywheel) -> report.
"""
import os
import time

import numpy as np
from tqdm import tqdm

from recipes.speech import features as speech_features
from recipes.speech import recipe
from recipes.speech.conditions import CONDITIONS
from recipes.speech.distribute import shard_by_data
from recipes.speech import intervals
from recipes.speech.synth import Augmentation
from recipes.speech.training import HoldDecay, ProgressBar
import tfdiff
from tfdiff import keras
import tensorflow as tf

from . import data, model as slu_model
from .phrases import DOMAINS

SCALES = {
    # A laptop-class CPU in minutes: small encoders, 1,500 steps. The
    # contrastive loss is the softmax form of the triplet loss (see
    # slu_model.triplet_loss): on this CPU it reaches a given accuracy in
    # fewer steps. Diff steps and learning rates were chosen on the valid
    # split (docs/RESULTS.md, "Studies on valid"): diffs gain up to as many
    # steps as BL's; hash tables want a 10x larger rate than sparse diffs.
    "demo": dict(slu=dict(batch_size=32, mining="softmax", margin=0.1),
                 # budget "coded": the bytes LZMA2 saves are spent on more values (docs/RESULTS.md, the
                 # coded-budget main job: 97.6-99.8 % of each budget against the raw planner's 77-89 %).
                 # BL and BLC train 500 steps per domain, 1,500 at generation 0 to 3,000 at generation 3
                 # (six domains): on valid, BL at generation 3 gains 4.1 points from 1,500 to 3,000 steps
                 # (docs/RESULTS.md, the main job with the vocabulary fixed). Diffs train as many steps
                 # as BL: on valid, sparse 40x at generation 3 gains 2.1 points from 1,500 to 3,000
                 # (docs/RESULTS.md, "Diff steps at generation 3"). The paper's two methods only:
                 # sparse-warm (FT first, then its diff) cost 8 of the job's minutes; it stays a --set away.
                 # Hash: 0.03 at generation 1, 0.01 after: chosen per generation on valid from the chains
                 # the earlier diffs moved (docs/RESULTS.md, "The hash rate per generation").
                 flywheel=dict(generations=4, bl_steps=[1500, 2000, 2500, 3000],
                               diff_steps=[1500, 2000, 2500, 3000],
                               diff_learning_rate={"hash": [0.03, 0.01]},
                               budget="coded", methods=("sparse", "hash")),
                 speakers=48, augmentation={}),
    # The paper: ~1.1M parameters, all sparse training pruned over steps 2k-12k.
    "paper": dict(slu={}, flywheel=dict(generations=4, bl_steps=20000, diff_steps=14000,
                                        diff_prune=(2000 / 14000, 12000 / 14000),
                                        blc_prune=(2000 / 20000, 12000 / 20000), prune_frequency=100),
                  speakers=None, augmentation={}),
    # The test suite's: the whole pipeline in seconds.
    "tiny": dict(slu=dict(speech_layers=1, speech_units=32, text_units=32, embed_dim=16, proj_dim=32,
                          vocab_size=120, frames=60, batch_size=16),
                 flywheel=dict(generations=2, ratios=(8,), bl_steps=12, diff_steps=8, prune_frequency=2,
                               budget="coded"),
                 speakers=6, augmentation={}),
}


# -- data ----------------------------------------------------------------------
def prepare_data(out, data_dir=None, synthetic=False, scale="demo", speakers=None, augmentation=None):
    """The corpus root: --data as given, or a synthetic corpus made (once) in RUN_DIR/corpus,
    its recordings rendered under `augmentation` (an Augmentation config)."""
    if data_dir:
        return data_dir
    if not synthetic:
        raise ValueError("give --data DIR (a Fluent Speech Commands directory) or --synthetic")
    root = os.path.join(out, "corpus")
    if not os.path.exists(os.path.join(root, "data", "test_data.csv")):
        from .synth import generate
        per_domain = 4 if scale == "tiny" else None
        generate(root, speakers=speakers or SCALES[scale]["speakers"], phrases_per_domain=per_domain,
                 augmentation=Augmentation.from_config(augmentation or {}))
    return root


# -- features --------------------------------------------------------------------
def compute_features(root, out, frames, normalize="utterance"):
    """{split: (utterances, [N, frames, 192] float16 features)}, cached in RUN_DIR/features.

    Besides train, valid and test: the synthetic corpora's unseen engine and
    recording conditions (`valid_clean`, `test_telephone`, ...), where present.
    """
    corpus = {}
    os.makedirs(os.path.join(out, "features"), exist_ok=True)
    optional = ["unseen_engine"] + [f"{s}_{c}" for c in CONDITIONS for s in ("valid", "test")]
    suffix = "" if normalize == "utterance" else f"-{normalize}"
    for split in ["train", "valid", "test"] + optional:
        if split in optional and not data.has_split(root, split):
            continue  # the real corpus has no held-out synthesizer and no rendered conditions
        utterances = data.load_split(root, split)
        cache = os.path.join(out, "features", f"{split}-{frames}{suffix}.npy")
        if os.path.exists(cache):
            feats = np.load(cache)
        else:
            raw = [speech_features.utterance_features(speech_features.read_audio(u.path), normalize)
                   for u in tqdm(utterances, desc=f"features {split}", unit="utt")]
            if normalize == "global":  # the training split's statistics, for every split
                saved = os.path.join(out, "features", f"statistics-{frames}.npy")
                if split == "train":
                    np.save(saved, np.stack(speech_features.global_statistics(raw)))
                raw = [speech_features.normalize_globally(f, tuple(np.load(saved))) for f in raw]
            feats = np.stack([speech_features.fit_length(f, frames) for f in raw]).astype(np.float16)
            np.save(cache + ".tmp.npy", feats)
            os.replace(cache + ".tmp.npy", cache)
        corpus[split] = (utterances, feats)
    return corpus


# -- model, train, evaluate: the task the flywheel drives -----------------------
class FscTask:
    """Generation t supports the first 3 + t domains."""

    name, metric = "fsc", "accuracy"
    splits = ("valid", "test")
    distills = True  # `train` takes a teacher (recipes/speech/task.py)

    def __init__(self, corpus, config, vocabulary, seed=0):
        self.corpus, self.config, self.vocabulary, self.seed = corpus, config, vocabulary, seed

    def domains(self, gen):
        return DOMAINS[:3 + gen]

    def describe(self, gen):
        return {"domains": self.domains(gen)}

    def phrases(self, gen):
        return data.phrases_of(self.corpus["train"][0], self.domains(gen))

    def tokens(self, phrases):
        return slu_model.tokenize(phrases, self.vocabulary, self.config.max_tokens)

    def new_model(self, gen):
        keras.utils.set_random_seed(self.seed + gen)
        return slu_model.build_slu(self.config)

    def train(self, model, gen, steps, callbacks, label, learning_rate=None, teacher=None, teacher_weight=0.0):
        utterances, feats = self.corpus["train"]
        keep = np.array([u.domain in self.domains(gen) for u in utterances])
        phrases = self.phrases(gen)
        labels = data.labels([u for u, k in zip(utterances, keep) if k], phrases)
        dataset = shard_by_data(tf.data.Dataset.from_tensor_slices((feats[keep], labels))
                   .shuffle(len(labels), seed=self.seed + gen, reshuffle_each_iteration=True).repeat()
                   # One map call at a time: SpecAugment's masks draw from stateful generators, which
                   # parallel calls would hand out in a different order each run.
                   .map(lambda x, y: (self.augment(tf.cast(x, tf.float32)), y))
                   .batch(self.config.batch_size, drop_remainder=True).prefetch(2))
        trainer = slu_model.TripletTrainer(model, self.tokens(phrases), self.config, teacher, teacher_weight)
        schedule = HoldDecay(learning_rate or self.config.learning_rate, hold_steps=steps // 2,
                             total_steps=max(steps, 1) + 1)
        trainer.compile(optimizer=keras.optimizers.Adam(schedule), jit_compile=self.config.jit_compile)
        trainer.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0,
                    callbacks=list(callbacks) + [ProgressBar(steps, label)])

    def augment(self, features):
        """A training utterance's features as the model sees them: warped (if the config says), then masked."""
        if self.config.freq_warp:
            features = speech_features.warp_frequencies(features, self.config.freq_warp)
        return speech_features.spec_augment(features)

    def test_set(self, gen, split="test"):
        utterances, feats = self.corpus[split]
        keep = np.array([u.domain in self.domains(gen) for u in utterances])
        phrases = self.phrases(gen)
        chosen = [u for u, k in zip(utterances, keep) if k]
        return feats[keep].astype(np.float32), data.labels(chosen, phrases), phrases

    def scores(self, model, gen, split="test"):
        """Per utterance of `split` (generation `gen`'s domains): 1.0 if its phrase was chosen."""
        feats, labels, phrases = self.test_set(gen, split)
        audio, text = slu_model.embed(model, feats, self.tokens(phrases))
        return (slu_model.nearest(audio, text) == labels).astype(np.float32)

    def evaluate(self, model, gen, split="test"):
        return intervals.metric(self.scores(model, gen, split))

    def groups(self, gen, split="test"):
        """The speaker of each utterance `scores` scores: the unit the intervals resample."""
        utterances, _ = self.corpus[split]
        return np.array([u.speaker for u in utterances if u.domain in self.domains(gen)])

    def robustness(self, model, gen):
        """Accuracy on test data no training saw the like of (synthetic corpora): the voices of an
        unseen synthesizer, and the test utterances in each recording condition."""
        splits = ["unseen_engine"] + [f"test_{c}" for c in CONDITIONS]
        return {f"{s.replace('test_', '')}_accuracy": self.evaluate(model, gen, s) for s in splits if s in self.corpus}

    def validate(self, model, gen):
        """Accuracy on the valid split (and its recording conditions): what studies choose by."""
        splits = ["valid"] + [f"valid_{c}" for c in CONDITIONS]
        return {f"{s}_accuracy": self.evaluate(model, gen, s) for s in splits if s in self.corpus}

    def sensitivity(self, model, gen, split="valid"):
        """`tfdiff.weight_sensitivity` of the triplet loss on `split`'s batches of generation `gen`'s domains:
        how much the loss feels each weight (a "sparse-sensitive" diff's scales)."""
        feats, labels, phrases = self.test_set(gen, split)
        tokens, size = tf.constant(self.tokens(phrases)), self.config.batch_size
        batches = [(feats[i:i + size], labels[i:i + size]) for i in range(0, len(labels) - size + 1, size)]

        def loss(slu, batch):
            audio, text = slu([batch[0], tokens], training=False)
            return slu_model.triplet_loss(audio, text, batch[1], self.config.margin, self.config.mining)
        return tfdiff.weight_sensitivity(model, loss, batches)

    def evaluate_tflite(self, path, gen):
        """Accuracy and {"latency_ms": median ms per utterance} of a .tflite under LiteRT."""
        feats, labels, phrases = self.test_set(gen)
        run = TfliteSlu(path)
        text = np.stack([run(np.zeros(feats.shape[1:], np.float32), t)[1] for t in self.tokens(phrases)])
        blank = np.zeros(self.config.max_tokens, np.int32)
        audio, times = [], []
        for x in tqdm(feats, desc="LiteRT eval", unit="utt", leave=False):
            start = time.perf_counter()
            audio.append(run(x, blank)[0])
            times.append((time.perf_counter() - start) * 1000)
        scores = (slu_model.nearest(np.stack(audio), text) == labels).astype(np.float32)
        return intervals.metric(scores), {"latency_ms": float(np.median(times)), "scores": scores}


class TfliteSlu:
    """The converted SLU model under the LiteRT interpreter, one utterance at a time."""

    def __init__(self, path):
        from ai_edge_litert.interpreter import Interpreter
        self.interpreter = Interpreter(model_path=os.fspath(path), num_threads=1)
        self.interpreter.allocate_tensors()
        inputs = self.interpreter.get_input_details()
        self.features = next(d["index"] for d in inputs if d["dtype"] == np.float32)
        self.tokens = next(d["index"] for d in inputs if d["dtype"] == np.int32)
        # Outputs keep the Keras model's order: (audio, text).
        self.outputs = [d["index"] for d in sorted(self.interpreter.get_output_details(),
                                                    key=lambda d: d["name"])]

    def __call__(self, features, tokens):
        # LiteRT keeps fused-LSTM states in variable tensors across invokes.
        self.interpreter.reset_all_variables()
        self.interpreter.set_tensor(self.features, features[None].astype(np.float32))
        self.interpreter.set_tensor(self.tokens, tokens[None].astype(np.int32))
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(i)[0].copy() for i in self.outputs]


# -- the whole run -------------------------------------------------------------------
def prepare(out, data_dir=None, synthetic=False, scale="demo", seed=0, settings=None):
    """Data, features and tokenizer of a run: the FscTask the flywheel drives.

    `settings` are the scale's (SCALES[scale] unless given: overridden with
    --set, or a finished run's); they are saved in RUN_DIR/config.json.
    """
    if scale not in SCALES:
        raise ValueError(f"--scale must be one of {sorted(SCALES)}. Received: {scale!r}")
    os.makedirs(out, exist_ok=True)
    settings = settings or SCALES[scale]
    config = (slu_model.SluConfig(**settings["slu"]) if scale == "paper"
              else slu_model.SluConfig.demo(**settings["slu"]))
    root = prepare_data(out, data_dir, synthetic, scale, settings["speakers"], settings.get("augmentation"))
    corpus = compute_features(root, out, config.frames, config.normalize)
    vocab_path = os.path.join(out, "vocab.txt")
    if not os.path.exists(vocab_path):
        vocabulary = slu_model.build_tokenizer([u.transcription for u in corpus["train"][0]], config)
        with open(vocab_path, "w") as f:
            f.write("\n".join(vocabulary) + "\n")
    with open(vocab_path) as f:
        vocabulary = f.read().split("\n")[:-1]
    config.vocab_size = len(vocabulary)
    slu_model.check_distinct_tokens(data.phrases_of(corpus["train"][0], DOMAINS), vocabulary, config.max_tokens)
    recipe.save_config(out, {"slu": config.get_config(), "scale": scale, "data": root, "seed": seed,
                             "settings": settings})
    return FscTask(corpus, config, vocabulary, seed)


RECIPE = recipe.Recipe("python -m recipes.fsc.run", __doc__, "a Fluent Speech Commands directory (data/*.csv, wavs/)",
                       prepare, SCALES)


def load_task(run_dir):
    """The FscTask of an existing run directory, to evaluate its models again."""
    return RECIPE.load_task(run_dir)


def run(out, data_dir=None, synthetic=False, scale="demo", seed=0, strategy="default", workers=None, settings=None):
    return recipe.run(RECIPE, out, data_dir, synthetic, scale, seed, strategy, workers, settings)


def main(argv=None):
    recipe.main(RECIPE, argv)


if __name__ == "__main__":
    main()
