"""The contrastive spoken-command model of paper section 4.2.

A speech encoder (LSTMs + projection) and a text encoder (WordPiece
embeddings + LSTMs + projection) embed audio and phrases in one space;
training pulls each utterance toward its phrase with a batch-hard triplet
loss, and at run time an utterance is the phrase whose embedding is nearest.

Both encoders live in one functional model, `slu`, with inputs
(features [T, 192], tokens [L]) and outputs (audio embedding, text
embedding). The branches never mix, so one call can embed a batch of
utterances and the (differently sized) set of phrases; that single model is
what is diffed, converted and patched on the device.
"""
import numpy as np

from tfdiff import keras
import tensorflow as tf

from recipes.speech.features import FEATURE_DIM, NORMALIZATIONS
from recipes.speech.training import Trainer

PAD, UNK = "[PAD]", "[UNK]"


class SluConfig:
    """Sizes of the model, its tokenizer and its training; `get_config` round-trips.

    The defaults are the paper's (about 1.1M parameters with a 4500-piece
    vocabulary); `demo()` is a small model that trains in seconds on a CPU.
    """

    def __init__(self, speech_layers=4, speech_units=128, text_layers=2, text_units=128, embed_dim=64,
                 proj_dim=128, vocab_size=4500, frames=134, max_tokens=12, dropout=0.2, margin=0.3,
                 learning_rate=1e-3, batch_size=64, speech_pool=1, mining="all", jit_compile=False,
                 normalize="utterance", freq_warp=0.0):
        for name, value in list(locals().items()):
            if name not in ("self", "dropout", "margin", "learning_rate", "mining", "jit_compile", "normalize",
                            "freq_warp") and (
                    not isinstance(value, int) or value < 1):
                raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
        self.speech_layers, self.speech_units = speech_layers, speech_units
        self.text_layers, self.text_units = text_layers, text_units
        self.embed_dim, self.proj_dim, self.vocab_size = embed_dim, proj_dim, vocab_size
        self.frames, self.max_tokens = frames, max_tokens
        self.dropout, self.margin = float(dropout), float(margin)
        self.learning_rate, self.batch_size = float(learning_rate), batch_size
        self.speech_pool = speech_pool
        if mining not in ("all", "hard", "softmax"):
            raise ValueError(f"`mining` must be 'all', 'hard' or 'softmax'. Received: mining={mining!r}")
        self.mining, self.jit_compile = mining, bool(jit_compile)
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"`normalize` must be one of {NORMALIZATIONS}. Received: normalize={normalize!r}")
        self.normalize = normalize  # of the features: recipes/speech/features.py
        if not 0 <= freq_warp < 0.5:
            raise ValueError(f"`freq_warp` must be in [0, 0.5). Received: freq_warp={freq_warp!r}")
        # The largest vocal-tract-length warp of a training utterance's bands (features.warp_frequencies).
        self.freq_warp = float(freq_warp)

    @classmethod
    def demo(cls, **overrides):
        config = dict(speech_layers=2, speech_units=96, text_layers=1, text_units=64, embed_dim=32,
                      proj_dim=64, vocab_size=300, frames=80, max_tokens=10, dropout=0.0,
                      learning_rate=3e-3, batch_size=32, speech_pool=2)
        config.update(overrides)
        return cls(**config)

    def get_config(self):
        return dict(vars(self))

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_tokenizer(texts, config):
    """A WordPiece vocabulary (keras-nlp) of the training transcriptions, one per utterance.

    Every utterance counts: the learner keeps a word whole by its count, and
    over the distinct phrasings alone (each a handful of times) it kept
    characters only, so long phrasings ran past `max_tokens` pieces and,
    cut to their last pieces, several became one token sequence.
    """
    import keras_nlp
    vocab = keras_nlp.tokenizers.compute_word_piece_vocabulary(
        tf.data.Dataset.from_tensor_slices(list(texts)), vocabulary_size=config.vocab_size,
        reserved_tokens=[PAD, UNK])
    return list(vocab)


def check_distinct_tokens(phrases, vocabulary, max_tokens):
    """Raise if two phrases tokenize to the same ids: no model could tell them apart.

    Example:

    >>> check_distinct_tokens(["lights on", "lights off"], [PAD, UNK, "lights", "on", "off"], 2)
    >>> check_distinct_tokens(  # doctest: +ELLIPSIS
    ...     ["turn the lights on", "switch the lights on"], [PAD, UNK, "the", "lights", "on"], max_tokens=2)
    Traceback (most recent call last):
    ...
    ValueError: phrases 'turn the lights on' and 'switch the lights on' have the same tokens [3 4]: ...
    """
    seen = {}
    for phrase, ids in zip(phrases, tokenize(phrases, vocabulary, max_tokens)):
        other = seen.setdefault(tuple(ids), phrase)
        if other != phrase:
            raise ValueError(f"phrases {other!r} and {phrase!r} have the same tokens {ids[ids > 0]}: raise "
                             f"`max_tokens` or `vocab_size`, or learn the vocabulary from more text. "
                             f"Received: max_tokens={max_tokens}, vocabulary of {len(vocabulary)} pieces")


def tokenize(texts, vocabulary, max_tokens):
    """[len(texts), max_tokens] int32 ids, left-padded with 0 like the audio."""
    import keras_nlp
    tokenizer = keras_nlp.tokenizers.WordPieceTokenizer(vocabulary=vocabulary, oov_token=UNK)
    out = np.zeros((len(texts), max_tokens), dtype=np.int32)
    for i, ids in enumerate(tokenizer(tf.constant(list(texts)))):
        ids = np.asarray(ids)[-max_tokens:]
        out[i, max_tokens - ids.size:] = ids
    return out


def build_slu(config, name="slu", keras=keras):
    """The functional model: (features, tokens) -> (audio embedding, text embedding).

    `keras` is the Keras it is built in: tf_keras, the recipes' (the default),
    or Keras 3 (`import keras`), which the training benchmark compares.
    """
    feats = keras.Input((config.frames, FEATURE_DIM), name="features")
    tokens = keras.Input((config.max_tokens,), dtype="int32", name="tokens")
    x = feats
    if config.speech_pool > 1:  # fewer recurrent steps: the demo's CPU budget
        x = keras.layers.AveragePooling1D(config.speech_pool, name="speech_pool")(x)
    for i in range(config.speech_layers):
        x = keras.layers.LSTM(config.speech_units, return_sequences=i < config.speech_layers - 1,
                              dropout=config.dropout, name=f"speech_lstm{i}")(x)
    audio = keras.layers.Dense(config.proj_dim, name="speech_proj")(x)
    y = keras.layers.Embedding(config.vocab_size, config.embed_dim, name="text_embed")(tokens)
    for i in range(config.text_layers):
        y = keras.layers.LSTM(config.text_units, return_sequences=i < config.text_layers - 1,
                              dropout=config.dropout, name=f"text_lstm{i}")(y)
    text = keras.layers.Dense(config.proj_dim, name="text_proj")(y)
    audio = keras.layers.UnitNormalization(name="speech_norm")(audio)
    text = keras.layers.UnitNormalization(name="text_norm")(text)
    return keras.Model([feats, tokens], [audio, text], name=name)


def triplet_loss(audio, text, labels, margin, mining="all"):
    """Triplet loss with online mining (Hermans et al., 2017).

    Every utterance is an anchor, its phrase the positive, and every other
    supported phrase (all are in each batch) a negative. "all" averages the
    triplets that still violate the margin, so easy ones do not dilute it;
    "hard" takes each anchor's hardest negative only. "softmax" weighs every
    negative by how close it is (the smooth maximum of the margin
    violations, i.e. cross-entropy over -distance / margin): a contrastive
    loss that converges in fewer steps, for the CPU demo.
    """
    distance = _distance(audio, text)
    positive = tf.gather(distance, labels, batch_dims=1)
    negatives = 1.0 - tf.one_hot(labels, tf.shape(text)[0])
    violations = tf.nn.relu(positive[:, None] - distance + margin) * negatives
    if mining == "hard":
        return tf.reduce_mean(tf.reduce_max(violations, axis=1))
    if mining == "softmax":
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, -distance / margin))
    active = tf.reduce_sum(tf.cast(violations > 1e-6, tf.float32))
    return tf.reduce_sum(violations) / tf.maximum(active, 1.0)


def _distance(audio, text):
    """[utterances, phrases] L2 distances between audio and phrase embeddings."""
    return tf.sqrt(tf.reduce_sum(tf.square(audio[:, None, :] - text[None, :, :]), -1) + 1e-12)


def distillation_loss(audio, text, teacher_audio, teacher_text, margin):
    """Cross-entropy from the teacher's choice of phrase to the student's, both softmax(-distance / margin).

    Over the phrases, not the embeddings: two models trained apart share no
    embedding space, but they answer the same question, which phrase.
    """
    teacher = tf.nn.softmax(-_distance(teacher_audio, teacher_text) / margin)
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(teacher, -_distance(audio, text) / margin))


class TripletTrainer(Trainer):
    """Trains `slu` with `fit` on (features, phrase label) batches.

    Every step embeds all supported phrases, so new domains' phrases join
    the mining as soon as they are supported. With a `teacher` (the
    generation's BL, for a diff), the loss is (1 - w) of the labels' and w of
    `distillation_loss` toward the teacher's choices, w = `teacher_weight`.
    """

    def __init__(self, slu, phrase_tokens, config, teacher=None, teacher_weight=0.0, **kwargs):
        super().__init__(slu, **kwargs)
        self.phrase_tokens = tf.constant(phrase_tokens)
        self.config = config
        self.teacher, self.teacher_weight = teacher, float(teacher_weight)

    def loss_of(self, data):
        features, labels = data
        audio, text = self.trained([features, self.phrase_tokens], training=True)
        loss = triplet_loss(audio, text, labels, self.config.margin, self.config.mining)
        if self.teacher is None or not self.teacher_weight:
            return loss
        teacher_audio, teacher_text = self.teacher([features, self.phrase_tokens], training=False)
        return ((1.0 - self.teacher_weight) * loss
                + self.teacher_weight * distillation_loss(audio, text, teacher_audio, teacher_text, self.config.margin))


def embed(slu, features, phrase_tokens):
    """(audio embeddings, phrase embeddings) from the Keras model."""
    audio, text = [], None
    for start in range(0, len(features), 256):
        a, t = slu([features[start:start + 256], phrase_tokens], training=False)
        audio.append(a.numpy())
        text = t.numpy()
    return np.concatenate(audio), text


def nearest(audio, text):
    """Index of the nearest (L2) phrase embedding for each audio embedding."""
    distance = ((audio[:, None, :] - text[None, :, :]) ** 2).sum(-1)
    return distance.argmin(axis=1)
