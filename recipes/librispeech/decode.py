"""python -m recipes.librispeech.decode RUN_DIR [--beam 16] [--limit N]

Decodes the test set with RNN-T beam search on the device's models of a
finished (or running) flywheel, through LiteRT alone: RUN_DIR/devices/gen0.tflite
(the model every device starts with, BL∞) and each Diff chain's patched
.tflite (its latest generation). The flywheel itself decodes greedily, for
speed; the paper reports beam search with width 16. Writes
RUN_DIR/decode-beamW.json and prints a table.
"""
import argparse
import json
import os
import time

import numpy as np
from tqdm import tqdm

from . import model as rnnt_model, run
from .rnnt import word_error_rate


def load_test_set(run_dir, limit=None):
    """(test utterances, their features, the WordPiece vocabulary's Pieces, pred layers, pred units)."""
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    test = run.load_test_set(config["data"])
    feats = run.compute_features(test, os.path.join(run_dir, "features", "test.npz"))
    pieces = run.Pieces(run.read_vocabulary(run_dir))
    rnnt = config["rnnt"]
    return test[:limit], feats[:limit], pieces, rnnt["pred_layers"], rnnt["pred_units"]


def decode_model(path, test, feats, pieces, layers, units, width):
    """WER with greedy decoding and with beam search of `width`, and beam search's real-time factor."""
    recognizer = rnnt_model.TfliteRecognizer(path)
    greedy, beamed, seconds = [], [], 0.0
    for x in tqdm(feats, desc=os.path.basename(path), unit="utt", leave=False):
        x = x.astype(np.float32)
        greedy.append(pieces.decode(rnnt_model.greedy(recognizer, x, units, layers)))
        start = time.perf_counter()
        ids = rnnt_model.beam(recognizer, x, units, layers, width=width)
        seconds += time.perf_counter() - start
        beamed.append(pieces.decode(ids))
    references = [u.text for u in test]
    return {"wer": word_error_rate(references, beamed), "greedy_wer": word_error_rate(references, greedy),
            "rtf": seconds / sum(u.seconds for u in test)}


def decode_run(run_dir, width=16, limit=None):
    devices = os.path.join(run_dir, "devices")
    models = sorted(name for name in os.listdir(devices) if name.endswith(".tflite"))
    if not models:
        raise FileNotFoundError(f"no .tflite in {devices}; run recipes.librispeech.run first")
    test, feats, pieces, layers, units = load_test_set(run_dir, limit)
    with open(os.path.join(run_dir, "results.json")) as f:
        generations = json.load(f)["generations"]
    results = {"beam": width, "utterances": len(test), "models": {}}
    for name in models:
        key = "BLinf" if name == "gen0.tflite" else name[:-len(".tflite")]
        # The patched model's generation: the latest generation with a row for its chain.
        gen = 0 if key == "BLinf" else max(g["gen"] for g in generations if key in g["rows"])
        results["models"][key] = {"gen": gen, **decode_model(os.path.join(devices, name), test, feats, pieces,
                                                              layers, units, width)}
    out = os.path.join(run_dir, f"decode-beam{width}.json")
    with open(out + ".tmp", "w") as f:
        json.dump(results, f, indent=2)
    os.replace(out + ".tmp", out)
    return results


def table(results):
    lines = [f"| model | gen | WER greedy (%) | WER beam {results['beam']} (%) | rtf beam |", "|---|---|---|---|---|"]
    for key, row in results["models"].items():
        lines.append(f"| {key} | {row['gen']} | {100 * row['greedy_wer']:.1f} | {100 * row['wer']:.1f} | "
                     f"{row['rtf']:.3g} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recipes.librispeech.decode", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--beam", type=int, default=16, help="beam width (paper: 16)")
    parser.add_argument("--limit", type=int, default=None, help="decode only the first N test utterances")
    args = parser.parse_args(argv)
    if args.beam < 1:
        parser.error(f"--beam must be at least 1. Received: {args.beam}")
    if not os.path.isfile(os.path.join(args.run_dir, "results.json")):
        parser.error(f"{args.run_dir} holds no results.json; run recipes.librispeech.run first")
    print(table(decode_run(args.run_dir, args.beam, args.limit)))


if __name__ == "__main__":
    main()
