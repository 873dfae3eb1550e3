"""The RNN-T recognizer of paper section 4.1, as nested functional Keras models.

`build_rnnt` returns one model, (features [B, T, 192], labels [B, U+1]
starting with blank) -> joint logits [B, T, U+1, V], made of three
sub-models named "encoder", "prediction" and "joint", which is what
tfdiff.wrap diffs and device.convert maps. For the device the recognizer
is exported as three TFLite signatures, all patchable by device.apply:
`encoder` (a whole utterance), `prediction_step` (one label per hypothesis,
LSTM states in and out, computed with the LSTM cells' own weights) and
`joint` (one row per hypothesis); the last two take any number of rows, so
beam search scores all its hypotheses in one call each.
"""
import numpy as np

from tfdiff import keras
import tensorflow as tf

from recipes.speech.features import FEATURE_DIM
from recipes.speech.training import Trainer

BLANK = 0


class RnntConfig:
    """Sizes; `RnntConfig()` is the paper's 64M-parameter model, `RnntConfig.demo()` one small for a CPU.

    (As `SluConfig`: the defaults are the paper's, `demo(**overrides)` the
    demo's, and every field can be overridden either way.)

    `time_reduction` > 1 concatenates that many adjacent encoder frames after
    the first LSTM layer (He et al., 2019), which shortens the joint's time
    axis and speeds up training and decoding; the paper's model uses 1.

    `enc_bidirectional` reads each utterance both ways (`enc_units` per
    direction): not streaming, but the device decodes whole utterances, and a
    small encoder generalizes to unseen voices far better (docs/RESULTS.md);
    the paper's streaming model is unidirectional.
    """

    def __init__(self, enc_layers=6, enc_units=1024, pred_layers=2, pred_units=1024, proj=640, embed_dim=256,
                 joint_dim=640, vocab_size=2500, pred_dropout=0.3, time_reduction=1, enc_bidirectional=False):
        if time_reduction < 1 or (time_reduction > 1 and enc_layers < 2):
            raise ValueError("`time_reduction` must be 1, or >= 2 with at least 2 encoder layers. Received: "
                             f"time_reduction={time_reduction}, enc_layers={enc_layers}")
        self.enc_layers, self.enc_units = enc_layers, enc_units
        self.pred_layers, self.pred_units = pred_layers, pred_units
        self.proj, self.embed_dim, self.joint_dim, self.vocab_size = proj, embed_dim, joint_dim, vocab_size
        self.pred_dropout, self.time_reduction = pred_dropout, time_reduction
        self.enc_bidirectional = bool(enc_bidirectional)

    @classmethod
    def demo(cls, **overrides):
        """The demo's small model, with `overrides` (any field)."""
        config = dict(enc_layers=2, enc_units=64, pred_layers=1, pred_units=64, proj=64, embed_dim=32,
                      joint_dim=64, vocab_size=128, pred_dropout=0.0)
        config.update(overrides)
        return cls(**config)

    def get_config(self):
        return dict(vars(self))

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.utils.register_keras_serializable(package="recipes")
class TimeReduction(keras.layers.Layer):
    """[B, T, D] -> [B, ceil(T / factor), D * factor]: adjacent frames concatenated.

    The end is padded with zero frames, so an utterance of n frames has
    `reduced_length(n, factor)` encoder frames.
    """

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, inputs):
        frames = tf.shape(inputs)[1]
        padded = tf.pad(inputs, [[0, 0], [0, (-frames) % self.factor], [0, 0]])
        return tf.reshape(padded, [tf.shape(inputs)[0], -1, inputs.shape[-1] * self.factor])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None, input_shape[-1] * self.factor)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def reduced_length(frames, factor):
    return (frames + factor - 1) // factor


def time_reduction_of(model):
    """The encoder's time reduction factor (1 if it has none)."""
    encoder = model.get_layer("encoder")
    layers = [layer for layer in encoder.layers if isinstance(layer, TimeReduction)]
    return layers[0].factor if layers else 1


def build_rnnt(config):
    feats = keras.Input((None, FEATURE_DIM), name="features")
    x = feats
    for i in range(config.enc_layers):
        if config.enc_bidirectional:
            x = keras.layers.Bidirectional(keras.layers.LSTM(config.enc_units, return_sequences=True),
                                           name=f"enc_lstm{i}")(x)
        else:
            x = keras.layers.LSTM(config.enc_units, return_sequences=True, name=f"enc_lstm{i}")(x)
        if i == 0 and config.time_reduction > 1:
            x = TimeReduction(config.time_reduction, name="time_reduction")(x)
    encoder = keras.Model(feats, keras.layers.Dense(config.proj, name="enc_proj")(x), name="encoder")

    labels = keras.Input((None,), dtype="int32", name="labels")
    y = keras.layers.Embedding(config.vocab_size, config.embed_dim, name="pred_embed")(labels)
    for i in range(config.pred_layers):
        y = keras.layers.LSTM(config.pred_units, return_sequences=True, dropout=config.pred_dropout,
                              name=f"pred_lstm{i}")(y)
    prediction = keras.Model(labels, keras.layers.Dense(config.proj, name="pred_proj")(y), name="prediction")

    enc_in = keras.Input((None, None, config.proj), name="enc")
    pred_in = keras.Input((None, None, config.proj), name="pred")
    # The tanh is a layer of its own so that training can apply the linear joint_hidden before the
    # broadcast (joint_lattice); a fused activation would compute and mean the same.
    hidden = keras.layers.Activation("tanh", name="joint_tanh")(keras.layers.Dense(
        config.joint_dim, name="joint_hidden")(keras.layers.Add()([enc_in, pred_in])))
    joint = keras.Model([enc_in, pred_in], keras.layers.Dense(config.vocab_size, name="joint_out")(hidden),
                        name="joint")

    enc = encoder(feats)
    pred = prediction(labels)
    logits = joint([enc[:, :, None, :], pred[:, None, :, :]])  # broadcast to [B, T, U+1, V]
    return keras.Model([feats, labels], logits, name="rnnt")


class RnntTrainer(Trainer):
    """Trains an RNN-T model (plain, or wrapped by tfdiff) with `fit` on
    ((features, labels, frame lengths, label lengths), None) batches."""

    def __init__(self, rnnt, **kwargs):
        super().__init__(rnnt, **kwargs)
        self.time_reduction = time_reduction_of(rnnt)

    def loss_of(self, data):
        from recipes.librispeech.rnnt import rnnt_loss
        (features, labels, frames, lengths), _ = data
        with_blank = tf.pad(labels, [[0, 0], [1, 0]], constant_values=BLANK)
        logits = joint_lattice(self.trained, features, with_blank, training=True)
        encoded = reduced_length(frames, self.time_reduction)
        return tf.reduce_mean(rnnt_loss(logits, labels, encoded, lengths, blank=BLANK))


def joint_lattice(rnnt, features, labels, training=None):
    """The logits [B, T, U+1, V] of `rnnt([features, labels])`, computed for training.

    joint_hidden is linear before its tanh, so W(e + p) + b = (We + b) +
    (Wp + b) - (W0 + b): it runs on the T encoder frames, the U+1
    predictions and a zero row, instead of on their T x (U+1) sums, which
    was the step's largest matrix product (the demo step 0.152 -> 0.127 s:
    docs/BENCHMARKS.md). One call,
    as in `rnnt` itself, so tfdiff's and tfmot's wrappers of the layer see
    one call per step. Models whose joint_hidden has a fused activation (built
    before it had its own layer) are called whole.
    """
    encoder, prediction, joint = (rnnt.get_layer(n) for n in ("encoder", "prediction", "joint"))
    hidden, out = (_named(joint, n) for n in ("joint_hidden", "joint_out"))
    if _unwrapped(hidden).activation is not keras.activations.linear:
        return rnnt([features, labels], training=training)
    enc, pred = encoder(features, training=training), prediction(labels, training=training)
    batch, frames, steps, width = tf.shape(enc)[0], tf.shape(enc)[1], tf.shape(pred)[1], enc.shape[-1]
    rows = hidden(tf.concat([tf.reshape(enc, [-1, width]), tf.reshape(pred, [-1, width]),
                             tf.zeros([1, width], enc.dtype)], axis=0), training=training)
    from_enc = tf.reshape(rows[:batch * frames], [batch, frames, 1, -1])
    from_pred = tf.reshape(rows[batch * frames:-1] - rows[-1], [batch, 1, steps, -1])
    return out(tf.tanh(from_enc + from_pred), training=training)


def _named(model, name):
    """`model`'s layer `name`, or the wrapper (tfdiff's, tfmot's) of the layer of that name."""
    for layer in model.layers:
        if _unwrapped(layer).name == name:
            return layer
    raise ValueError(f"{model.name} has no layer {name!r}. Received layers: {[layer.name for layer in model.layers]}")


def _unwrapped(layer):
    while isinstance(layer, keras.layers.Wrapper) and not isinstance(layer, keras.layers.Bidirectional):
        layer = layer.layer
    return layer


def signatures(model):
    """tf.functions for device.convert: encoder, prediction_step and joint of `model`."""
    # The functions' names become the TFLite signature keys.
    enc_model, prediction, joint_model = (model.get_layer(n) for n in ("encoder", "prediction", "joint"))
    config = _config_of(model)
    embed = prediction.get_layer("pred_embed")
    cells = [prediction.get_layer(f"pred_lstm{i}").cell for i in range(config["pred_layers"])]
    proj = prediction.get_layer("pred_proj")
    units, width = config["pred_units"], config["proj"]

    @tf.function(input_signature=[tf.TensorSpec([1, None, FEATURE_DIM], tf.float32)])
    def encoder(features):
        return {"encoded": enc_model(features, training=False)}

    # A batch of hypotheses: any number of rows.
    state_specs = [tf.TensorSpec([None, units], tf.float32)] * (2 * len(cells))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)] + state_specs)
    def prediction_step(label, *states):
        x = embed(label)
        new_states = []
        for i, cell in enumerate(cells):
            x, (h, c) = cell(x, [states[2 * i], states[2 * i + 1]], training=False)
            new_states += [h, c]
        return {"prediction": proj(x), **{f"state{i}": s for i, s in enumerate(new_states)}}

    @tf.function(input_signature=[tf.TensorSpec([None, width], tf.float32)] * 2)
    def joint(encoded, predicted):
        return {"logits": joint_model([encoded[:, None, None, :], predicted[:, None, None, :]],
                                      training=False)[:, 0, 0]}

    return {"encoder": encoder, "prediction_step": prediction_step, "joint": joint}


def _config_of(model):
    prediction = model.get_layer("prediction")
    layers = [layer for layer in prediction.layers if layer.name.startswith("pred_lstm")]
    return {"pred_layers": len(layers), "pred_units": layers[0].units,
            "proj": prediction.get_layer("pred_proj").units}


class KerasRecognizer:
    """Greedy / beam decoding with the Keras model, step by step like the device.

    `predict(labels, states)` runs the prediction network one step for each
    of n hypotheses (labels [n], states [n, units] each) and `joint(frame,
    predicted)` scores one encoder frame (or one per row) against n
    predictions: [n, V].
    """

    def __init__(self, model):
        self.functions = signatures(model)
        self.config = _config_of(model)

    def encode(self, features):
        return self.functions["encoder"](features[None].astype(np.float32))["encoded"].numpy()[0]

    def predict(self, labels, states):
        out = self.functions["prediction_step"](np.asarray(labels, np.int32), *states)
        n = 2 * self.config["pred_layers"]
        return out["prediction"].numpy(), [out[f"state{i}"].numpy() for i in range(n)]

    def joint(self, frame, predicted):
        frames = np.broadcast_to(frame, predicted.shape).astype(np.float32)
        return self.functions["joint"](frames, predicted)["logits"].numpy()


class TfliteRecognizer:
    """The same three steps through LiteRT signature runners: no TensorFlow needed."""

    def __init__(self, path):
        from ai_edge_litert.interpreter import Interpreter
        self.interpreter = Interpreter(model_path=str(path))
        self.runners = {name: self.interpreter.get_signature_runner(name)
                        for name in ("encoder", "prediction_step", "joint")}
        self.n_states = len([k for k in self.runners["prediction_step"].get_output_details() if k.startswith("state")])
        # Run each signature once so that every subgraph is allocated and
        # reset_all_variables() can clear the fused LSTMs' state tensors.
        width = self.runners["joint"].get_input_details()["encoded"]["shape"][-1]
        units = self.runners["prediction_step"].get_input_details()["states_0"]["shape"][-1]
        self.encode(np.zeros((1, self.runners["encoder"].get_input_details()["features"]["shape"][-1]), np.float32),
                    reset=False)
        self.predict([BLANK], [np.zeros((1, units), np.float32)] * self.n_states)
        self.joint(np.zeros(width, np.float32), np.zeros((1, width), np.float32))

    def encode(self, features, reset=True):
        if reset:  # LiteRT keeps fused-LSTM states across invokes
            self.interpreter.reset_all_variables()
        return self.runners["encoder"](features=features[None].astype(np.float32))["encoded"][0]

    def predict(self, labels, states):
        inputs = {"label": np.asarray(labels, np.int32)}
        inputs.update({f"states_{i}": s for i, s in enumerate(states)})
        out = self.runners["prediction_step"](**inputs)
        return out["prediction"], [out[f"state{i}"] for i in range(self.n_states)]

    def joint(self, frame, predicted):
        frames = np.ascontiguousarray(np.broadcast_to(frame, predicted.shape), np.float32)
        return self.runners["joint"](encoded=frames, predicted=predicted)["logits"]


def greedy(recognizer, features, units, layers, max_symbols=5):
    """Greedy RNN-T decoding of one utterance through a recognizer's three steps."""
    return greedy_batch(recognizer, [features], units, layers, max_symbols)[0]


def greedy_batch(recognizer, utterances, units, layers, max_symbols=5):
    """Greedy RNN-T decoding of many utterances at once: the label ids of each.

    Each utterance is encoded alone (the device's encoder takes one); then,
    frame by frame, the joint scores the rows of every utterance still
    running in one call, and the prediction network advances only the rows
    that emitted. Each row is computed as if alone (the same hypotheses:
    tests/test_rnnt_model.py), but a test set costs hundreds of calls
    instead of tens of thousands.
    """
    encoded = [recognizer.encode(f) for f in utterances]
    states = [np.zeros((len(encoded), units), np.float32) for _ in range(2 * layers)]
    predicted, states = recognizer.predict([BLANK] * len(encoded), states)
    predicted, states = np.array(predicted), [np.array(s) for s in states]  # writable copies
    out = [[] for _ in encoded]
    for t in range(max((e.shape[0] for e in encoded), default=0)):
        rows = np.array([i for i, e in enumerate(encoded) if t < e.shape[0]])
        for _ in range(max_symbols):
            best = np.argmax(recognizer.joint(np.stack([encoded[i][t] for i in rows]), predicted[rows]), axis=1)
            rows, labels = rows[best != BLANK], best[best != BLANK]
            if not rows.size:
                break
            for i, k in zip(rows, labels):
                out[i].append(int(k))
            predicted[rows], new_states = recognizer.predict(labels.astype(np.int32), [s[rows] for s in states])
            for s, new in zip(states, new_states):
                s[rows] = new
    return out


def beam(recognizer, features, units, layers, width=16, max_symbols=5, batched=True):
    """RNN-T beam search (recipes.librispeech.rnnt.beam_search) through a recognizer's three steps.

    The prediction network runs once per distinct label history: each
    history extends a cached shorter one by one label. `batched` computes a
    round's new histories in one prediction call and scores all its
    hypotheses in one joint call; otherwise one call per hypothesis (the
    same numbers, 1-row batches: tests/test_rnnt_model.py).
    """
    from .rnnt import beam_search

    encoded = recognizer.encode(features)
    start = recognizer.predict([BLANK], [np.zeros((1, units), np.float32) for _ in range(2 * layers)])
    cache = {(): (start[0][0], [s[0] for s in start[1]])}  # history -> (prediction, states), one row each

    def extend(histories):
        new = [h for h in dict.fromkeys(histories) if h not in cache]
        groups = [new] if batched else [[h] for h in new]
        for group in filter(None, groups):
            parents = [cache[h[:-1]][1] for h in group]
            states = [np.stack([p[i] for p in parents]) for i in range(2 * layers)]
            predicted, states = recognizer.predict([h[-1] for h in group], states)
            for row, history in enumerate(group):
                cache[history] = (predicted[row], [s[row] for s in states])

    def joint(t, histories):
        extend(histories)
        predicted = np.stack([cache[h][0] for h in histories])
        if batched:
            logits = recognizer.joint(encoded[t], predicted)
        else:
            logits = np.concatenate([recognizer.joint(encoded[t], row[None]) for row in predicted])
        logits = logits.astype(np.float64)
        return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)

    return beam_search(joint, encoded.shape[0], beam=width, max_symbols=max_symbols, blank=BLANK)
