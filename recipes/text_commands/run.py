"""A KerasHub intent classifier on Keras 3 that gains a domain per generation; the device gets only diffs.

The Keras 3 counterpart of the FSC recipe, at toy scale: typed commands
("could you dim the lights in the attic") map to intents; generation 0 knows
lights and music, generation 1 adds heating. A WordPiece tokenizer and a
one-block transformer encoder (keras_hub) make the model; generation 1 is a
sparse or hash diff of it, learned with the base frozen, signed, and applied
by the device to its .tflite, which is then evaluated with LiteRT. Rooms
split the data: test sentences name rooms that no training sentence does.
The model is built on whichever backend `KERAS_BACKEND` names (TensorFlow or
JAX); the .tflite comes from a TensorFlow-backend conversion either way.

    python -m recipes.text_commands.run OUT [--method sparse|hash] [--compression 10] [--steps 300]

Reads top to bottom: data, features, model, train, export, evaluate, report.
"""
import argparse
import json
import os
import sys

import keras
import keras_hub
import numpy as np

import device
import tfdiff
from device import signing
from recipes.speech.provenance import provenance

# -- data ---------------------------------------------------------------------
INTENTS = {  # domain -> intent -> templates ({room})
    "lights": {"lights_on": ["turn on the lights in the {room}", "switch the {room} lights on",
                             "lights on in the {room}", "make the {room} bright"],
               "lights_off": ["turn off the lights in the {room}", "switch the {room} lights off",
                              "lights off in the {room}", "make the {room} dark"]},
    "music": {"music_play": ["play some music in the {room}", "start the music in the {room}",
                             "put a song on in the {room}", "music in the {room} please"],
              "music_stop": ["stop the music in the {room}", "pause the song in the {room}",
                             "no more music in the {room}", "silence the {room}"]},
    "heating": {"heat_up": ["make the {room} warmer", "turn the heating up in the {room}",
                            "heat the {room}", "the {room} is too cold"],
                "heat_down": ["make the {room} cooler", "turn the heating down in the {room}",
                              "cool the {room}", "the {room} is too hot"]},
}
GENERATIONS = [["lights", "music"], ["lights", "music", "heating"]]  # the domains each generation knows
LABELS = [intent for domain in INTENTS.values() for intent in domain]  # fixed: later intents wait unused
ROOMS = {"train": ["kitchen", "bedroom", "garage", "office", "hall", "bathroom"],
         "test": ["attic", "cellar", "nursery"]}
FILLERS = ["please", "could you", "now", "hey", "quickly", "i want to"]


def sentences(domains, rooms, count, rng):
    """(texts, labels): `count` commands of `domains` in `rooms`, with fillers."""
    texts, labels = [], []
    for _ in range(count):
        domain = INTENTS[domains[rng.integers(len(domains))]]
        intent = list(domain)[rng.integers(len(domain))]
        text = domain[intent][rng.integers(len(domain[intent]))].format(room=rooms[rng.integers(len(rooms))])
        if rng.random() < 0.5:
            text = f"{FILLERS[rng.integers(len(FILLERS))]} {text}"
        texts.append(text)
        labels.append(LABELS.index(intent))
    return texts, np.array(labels, np.int32)


# -- features -----------------------------------------------------------------
def tokenizer(sequence_length=12):
    """WordPiece over every template, filler and room: the device's tokenizer, fixed at generation 0."""
    words = sorted({w for domain in INTENTS.values() for templates in domain.values() for t in templates
                    for w in t.replace("{room}", "").split()}
                   | {w for f in FILLERS for w in f.split()} | {r for rooms in ROOMS.values() for r in rooms})
    vocabulary = ["[PAD]", "[UNK]"] + words
    return keras_hub.tokenizers.WordPieceTokenizer(vocabulary=vocabulary, sequence_length=sequence_length)


def tokens(tokenize, texts):
    return np.asarray(keras.ops.convert_to_numpy(tokenize(texts)), np.int32)


# -- model --------------------------------------------------------------------
def build_model(vocabulary_size, sequence_length, seed):
    keras.utils.set_random_seed(seed)
    ids = keras.Input((sequence_length,), dtype="int32", name="tokens")
    x = keras_hub.layers.TokenAndPositionEmbedding(vocabulary_size, sequence_length, 32, name="embed")(ids)
    x = keras_hub.layers.TransformerEncoder(64, 2, name="encoder")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(ids, keras.layers.Dense(len(LABELS), name="intent")(x), name="commands")


# -- train --------------------------------------------------------------------
def train(model, x, y, steps, callbacks=(), learning_rate=3e-3):
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    epochs = max(1, steps * 32 // len(x))
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=list(callbacks))
    return model


def method_of(name, compression, steps):
    if name == "sparse":
        return tfdiff.SparseDiff(compression=compression, end_step=max(2, steps * 3 // 4), frequency=10)
    return tfdiff.HashDiff(compression=compression, seed=1)


# -- evaluate -----------------------------------------------------------------
def keras_accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=-1) == y))


def device_accuracy(tflite_path, x, y):
    """Accuracy of the .tflite on the device's interpreter (LiteRT), one sentence at a time."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=tflite_path)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    hits = 0
    for row, label in zip(x, y):
        interpreter.set_tensor(source, row[None])
        interpreter.invoke()
        hits += int(np.argmax(interpreter.get_tensor(target)[0]) == label)
    return hits / len(y)


def run(out, method="sparse", compression=10.0, steps=300, seed=0, count=2000):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    # data
    splits = {g: {s: sentences(GENERATIONS[g], ROOMS[s], count if s == "train" else count // 4, rng)
                  for s in ROOMS} for g in range(len(GENERATIONS))}
    # features
    tokenize = tokenizer()
    data = {g: {s: (tokens(tokenize, texts), labels) for s, (texts, labels) in split.items()}
            for g, split in splits.items()}
    vocabulary_size, length = tokenize.vocabulary_size(), tokenize.sequence_length
    # model and train: generation 0 from scratch, generation 1 as a diff of it (and BL from scratch)
    base = train(build_model(vocabulary_size, length, seed), *data[0]["train"], steps)
    diff_model = tfdiff.wrap(base, method_of(method, compression, steps))
    train(diff_model, *data[1]["train"], steps, callbacks=tfdiff.callbacks(diff_model))
    bl = train(build_model(vocabulary_size, length, seed + 1), *data[1]["train"], steps)
    # export: generation 0's .tflite on the device, the signed diff, applied there
    gen0 = os.path.join(out, "model.tflite")
    device.convert(base, gen0)
    diff = tfdiff.extract(diff_model, generation=1)
    private, public = os.path.join(out, "server.pem"), os.path.join(out, "server.pub.pem")
    if not os.path.exists(private):
        signing.keygen(private, public)
    diff_path = os.path.join(out, "gen1.tfdiff")
    diff.save(diff_path)
    signing.sign(diff_path, private, model=gen0)  # bound to generation 0's graph
    applied = device.apply(gen0, diff_path, public_key=public)
    folded = tfdiff.fold(base, diff)
    # evaluate, on test rooms: the device's patched model against the Keras models
    x, y = data[1]["test"]
    new = np.isin(y, [LABELS.index(i) for i in INTENTS["heating"]])
    rows = {"BL_inf": keras_accuracy(base, x, y), "BL_inf on heating": keras_accuracy(base, x[new], y[new]),
            "BL": keras_accuracy(bl, x, y),
            "Diff (Keras, folded)": keras_accuracy(folded, x, y), "Diff (device, LiteRT)": device_accuracy(gen0, x, y),
            "Diff on heating (device)": device_accuracy(gen0, x[new], y[new])}
    params = sum(v.size for v in tfdiff.named_weights(base).values())
    result = {"recipe": "text_commands", "backend": keras.backend.backend(), "method": method,
              "compression": compression, "steps": steps,
              "accuracy": rows, "diff_bytes": os.path.getsize(diff_path),
              "budget_bytes": tfdiff.budget_bytes(params, compression),
              "device_weights_digest_is_fold": device.status(gen0)["weights_digest"] == diff.target_digest.hex(),
              "applied": applied.status, "provenance": provenance([seed])}
    # report
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recipes.text_commands.run", description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--method", choices=["sparse", "hash"], default="sparse")
    parser.add_argument("--compression", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run(args.out, args.method, args.compression, args.steps, args.seed)
    for name, value in result["accuracy"].items():
        print(f"{name:28s} {100 * value:5.1f} %")
    print(f"diff {result['diff_bytes']} bytes of {result['budget_bytes']}; device = fold bit for bit: "
          f"{result['device_weights_digest_is_fold']}")


if __name__ == "__main__":
    sys.exit(main())
