"""python -m benchmarks.rnnt_step --data CORPUS --out WORK_DIR [--steps 60]

Seconds per training step of the LibriSpeech recipe's demo RNN-T (batch 32,
length-bucketed batches of the corpus's generation-0 hours), as
`LibriTask.train` runs it: the first 10 steps (tracing) are not counted.
Prints one JSON line with the corpus's mean frames and labels per utterance.
"""
import argparse
import json
import time

import numpy as np


def run(data_dir, out, steps=60, warmup=10):
    from recipes.librispeech import run as librispeech
    from tfdiff import keras

    task = librispeech.prepare(out, data_dir=data_dir, scale="demo")
    marks = {}

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 in (warmup, steps):
                marks[batch + 1] = time.perf_counter()

    task.train(task.new_model(0), 0, steps, [Clock()], "step time")
    return {"step_seconds": round((marks[steps] - marks[warmup]) / (steps - warmup), 4), "batch": task.batch,
            "frames_mean": round(float(np.mean([f.shape[0] for f in task.train_feats])), 1),
            "labels_mean": round(float(np.mean([y.size for y in task.labels])), 1),
            "vocabulary": task.config.vocab_size}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rnnt_step", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a corpus in the LibriSpeech layout")
    parser.add_argument("--out", required=True, help="work directory (features and vocabulary are cached there)")
    parser.add_argument("--steps", type=int, default=60, help="steps to run, the first 10 not timed")
    args = parser.parse_args(argv)
    if args.steps <= 10:
        parser.error(f"--steps must be more than 10. Received: {args.steps}")
    print(json.dumps(run(args.data, args.out, args.steps)))


if __name__ == "__main__":
    main()
