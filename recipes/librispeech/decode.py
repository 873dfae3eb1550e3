"""python -m recipes.librispeech.decode RUN_DIR [--beam 16 [4 1 ...]] [--limit N]

Decodes the test set with RNN-T beam search on the device's models of a
finished (or running) flywheel, through LiteRT alone: RUN_DIR/devices/gen0.tflite
(the model every device starts with, BL∞) and each Diff chain's patched
.tflite (its latest generation). The flywheel itself decodes greedily, for
speed; the paper reports beam search with width 16. Beam search scores
all its hypotheses of a round in one batched LiteRT call. Writes
RUN_DIR/decode-beamW.json for each width and prints a table with the
real-time factors of greedy and beam decoding.
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
    # The run's own test utterances, so its cached features are reused.
    test = run.load_held_out(config["data"], "test", config.get("settings", {}).get("test_utterances"))
    feats = run.compute_features(test, os.path.join(run_dir, "features", "test.npz"))
    pieces = run.Pieces(run.read_vocabulary(run_dir))
    rnnt = config["rnnt"]
    return test[:limit], feats[:limit], pieces, rnnt["pred_layers"], rnnt["pred_units"]


def decode_model(path, test, feats, pieces, layers, units, width, batched=True):
    """WER and real-time factor of greedy decoding and of beam search of `width`."""
    recognizer = rnnt_model.TfliteRecognizer(path)
    greedy, beamed, greedy_seconds, seconds = [], [], 0.0, 0.0
    for x in tqdm(feats, desc=os.path.basename(path), unit="utt", leave=False):
        x = x.astype(np.float32)
        start = time.perf_counter()
        greedy.append(pieces.decode(rnnt_model.greedy(recognizer, x, units, layers)))
        greedy_seconds += time.perf_counter() - start
        start = time.perf_counter()
        ids = rnnt_model.beam(recognizer, x, units, layers, width=width, batched=batched)
        seconds += time.perf_counter() - start
        beamed.append(pieces.decode(ids))
    references = [u.text for u in test]
    audio = sum(u.seconds for u in test)
    return {"wer": word_error_rate(references, beamed), "greedy_wer": word_error_rate(references, greedy),
            "rtf": seconds / audio, "greedy_rtf": greedy_seconds / audio}


def decode_run(run_dir, width=16, limit=None, batched=True):
    devices = os.path.join(run_dir, "devices")
    models = sorted(name for name in os.listdir(devices) if name.endswith(".tflite"))
    if not models:
        raise FileNotFoundError(f"no .tflite in {devices}; run recipes.librispeech.run first")
    test, feats, pieces, layers, units = load_test_set(run_dir, limit)
    with open(os.path.join(run_dir, "results.json")) as f:
        generations = json.load(f)["generations"]
    results = {"beam": width, "batched": batched, "utterances": len(test), "models": {}}
    for name in models:
        key = "BLinf" if name == "gen0.tflite" else name[:-len(".tflite")]
        # The patched model's generation: the latest generation with a row for its chain.
        gen = 0 if key == "BLinf" else max(g["gen"] for g in generations if key in g["rows"])
        results["models"][key] = {"gen": gen, **decode_model(os.path.join(devices, name), test, feats, pieces,
                                                              layers, units, width, batched)}
    out = os.path.join(run_dir, f"decode-beam{width}{'' if batched else '-one-at-a-time'}.json")
    with open(out + ".tmp", "w") as f:
        json.dump(results, f, indent=2)
    os.replace(out + ".tmp", out)
    return results


def table(results):
    lines = [f"| model | gen | WER greedy (%) | WER beam {results['beam']} (%) | rtf greedy | rtf beam |",
             "|---|---|---|---|---|---|"]
    for key, row in results["models"].items():
        lines.append(f"| {key} | {row['gen']} | {100 * row['greedy_wer']:.1f} | {100 * row['wer']:.1f} | "
                     f"{row['greedy_rtf']:.3g} | {row['rtf']:.3g} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recipes.librispeech.decode", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--beam", type=int, nargs="+", default=[16], help="beam widths (paper: 16)")
    parser.add_argument("--one-at-a-time", action="store_true",
                        help="one LiteRT call per hypothesis instead of one per round (same results, slower)")
    parser.add_argument("--limit", type=int, default=None, help="decode only the first N test utterances")
    args = parser.parse_args(argv)
    if min(args.beam) < 1:
        parser.error(f"--beam must be at least 1. Received: {args.beam}")
    if not os.path.isfile(os.path.join(args.run_dir, "results.json")):
        parser.error(f"{args.run_dir} holds no results.json; run recipes.librispeech.run first")
    for width in args.beam:
        print(table(decode_run(args.run_dir, width, args.limit, batched=not args.one_at_a_time)))


if __name__ == "__main__":
    main()
