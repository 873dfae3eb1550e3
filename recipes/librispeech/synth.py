"""python -m recipes.librispeech.synth OUT_DIR --hours H: a corpus in the LibriSpeech layout.

    OUT_DIR/train-synth/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac
    OUT_DIR/train-synth/SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt
    OUT_DIR/test-synth/...   (other speakers)

Sentences come from Debian's `fortunes` quotations (recipes/librispeech/
text.py); speakers are espeak-ng and flite voices, perturbed
(recipes/speech/synth.py), split voice-disjoint (80 / 20). About H hours of training audio are written;
nothing is downloaded.
"""
import argparse
import os
import random
import zlib

import numpy as np
import soundfile
from tqdm import tqdm

from recipes.speech.synth import SAMPLE_RATE, require_engines, speaker_splits, synthesize

from .text import sentences

UTTERANCES_PER_CHAPTER = 20


def generate(out_dir, hours, speakers=30, seed=0, test_fraction=0.2):
    """Write the corpus; returns {subset: (utterances, seconds)}."""
    require_engines(["espeak-ng", "flite"])
    if speakers < 2:
        raise ValueError(f"need at least 2 speakers for a speaker-disjoint split. Received: speakers={speakers}")
    n_test = max(1, round(test_fraction * speakers))
    split = speaker_splits({"train-synth": speakers - n_test, "test-synth": n_test}, seed=seed, prefix="")
    texts = sentences()
    random.Random(seed).shuffle(texts)
    budgets = {"train-synth": hours * 3600, "test-synth": max(hours * 3600 * test_fraction, 60)}
    counts, cursor = {}, 0
    for subset, members in split.items():
        seconds, utterances, turn = 0.0, 0, 0
        with tqdm(total=int(budgets[subset]), desc=subset, unit="s") as bar:
            while seconds < budgets[subset]:
                speaker = members[turn % len(members)]
                speaker_id = str(100 + int(speaker.id))  # LibriSpeech ids are numbers
                chapter = str(1000 + turn // len(members))
                folder = os.path.join(out_dir, subset, speaker_id, chapter)
                os.makedirs(folder, exist_ok=True)
                lines = []
                for i in range(UTTERANCES_PER_CHAPTER):
                    text = texts[cursor % len(texts)]
                    cursor += 1
                    name = f"{speaker_id}-{chapter}-{i:04d}"
                    rng = np.random.default_rng(zlib.crc32(f"{seed}/{name}".encode()))
                    audio = synthesize(text.lower(), speaker, rng)
                    soundfile.write(os.path.join(folder, name + ".flac"), audio, SAMPLE_RATE)
                    lines.append(f"{name} {text}")
                    seconds += audio.size / SAMPLE_RATE
                    utterances += 1
                    bar.update(int(audio.size / SAMPLE_RATE))
                    if seconds >= budgets[subset]:
                        break
                with open(os.path.join(folder, f"{speaker_id}-{chapter}.trans.txt"), "w") as f:
                    f.write("\n".join(lines) + "\n")
                turn += 1
        counts[subset] = (utterances, round(seconds, 1))
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recipes.librispeech.synth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--hours", type=float, required=True, help="hours of training audio")
    parser.add_argument("--speakers", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    counts = generate(args.out_dir, args.hours, args.speakers, args.seed)
    print(f"wrote {args.out_dir}: " + ", ".join(f"{k}: {n} utterances, {s} s" for k, (n, s) in counts.items()))


if __name__ == "__main__":
    main()
