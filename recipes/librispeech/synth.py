"""python -m recipes.librispeech.synth OUT_DIR --hours H [--text grammar|fortunes]: a corpus in the LibriSpeech layout.

    OUT_DIR/train-synth/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac
    OUT_DIR/train-synth/SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt
    OUT_DIR/valid-synth/...  (other speakers: what studies choose settings by)
    OUT_DIR/test-synth/...   (other speakers again: what the tables report)
    OUT_DIR/speakers.csv, OUT_DIR/augmentation.json   who speaks, and how recordings were rendered

Sentences come from a small grammar (the demo's) or from Debian's
`fortunes` quotations (recipes/librispeech/text.py); speakers are
espeak-ng and flite voices with their own pitch and tempo, and every
recording is rendered under an augmentation policy (recipes/speech/synth.py).
Train, valid and test speakers are disjoint by person (70 / 10 / 20): no
valid or test speaker was heard in training, in any voice of any engine,
and valid shares no person with test.
About H hours of training audio are written; nothing is downloaded.
"""
import argparse
import itertools
import json
import os
import random
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import soundfile
from tqdm import tqdm

from recipes.speech.synth import (SAMPLE_RATE, Augmentation, require_engines, speaker_splits, synthesize,
                                  write_speakers)

from .text import grammar_sentence, sentences

UTTERANCES_PER_CHAPTER = 20
TEXTS = ("grammar", "fortunes")


def generate(out_dir, hours, speakers=30, seed=0, test_fraction=0.2, valid_fraction=0.1, text="grammar", workers=2,
             augmentation=Augmentation()):
    """Write the corpus, its recordings rendered under `augmentation`; returns {subset: (utterances, seconds)}.

    `test_fraction` and `valid_fraction` of the speakers (at least one each)
    speak the test and valid subsets, each about that fraction of `hours`.
    """
    require_engines(["espeak-ng", "flite"])
    if speakers < 3:
        raise ValueError(f"need at least 3 speakers for train, valid and test disjoint by person. "
                         f"Received: speakers={speakers}")
    if text not in TEXTS:
        raise ValueError(f"`text` must be one of {TEXTS}. Received: text={text!r}")
    n_test = max(1, round(test_fraction * speakers))
    n_valid = max(1, round(valid_fraction * speakers))
    if n_test + n_valid >= speakers:
        raise ValueError(f"test and valid leave no training speaker. Received: speakers={speakers}, "
                         f"test_fraction={test_fraction}, valid_fraction={valid_fraction}")
    split = speaker_splits({"train-synth": speakers - n_test - n_valid, "valid-synth": n_valid,
                            "test-synth": n_test}, seed=seed, prefix="", training=("train-synth",))
    # LibriSpeech ids are numbers; speakers.csv names the ids the corpus's folders have.
    split = {name: [replace(s, id=str(100 + int(s.id))) for s in members] for name, members in split.items()}
    next_text = _text_source(text, seed)
    budgets = {"train-synth": hours * 3600, "valid-synth": max(hours * 3600 * valid_fraction, 60),
               "test-synth": max(hours * 3600 * test_fraction, 60)}
    counts = {}
    os.makedirs(out_dir, exist_ok=True)
    write_speakers(os.path.join(out_dir, "speakers.csv"), split)
    with open(os.path.join(out_dir, "augmentation.json"), "w") as f:
        json.dump(augmentation.get_config(), f, indent=2)
    with ThreadPoolExecutor(workers) as pool:
        for subset, members in split.items():
            seconds, utterances, turn = 0.0, 0, 0
            with tqdm(total=int(budgets[subset]), desc=subset, unit="s") as bar:
                while seconds < budgets[subset]:
                    speaker = members[turn % len(members)]
                    speaker_id = speaker.id
                    chapter = str(1000 + turn // len(members))
                    folder = os.path.join(out_dir, subset, speaker_id, chapter)
                    os.makedirs(folder, exist_ok=True)
                    names = [f"{speaker_id}-{chapter}-{i:04d}" for i in range(UTTERANCES_PER_CHAPTER)]
                    texts = [next_text() for _ in names]

                    def say(item, speaker=speaker):
                        name, line = item
                        rng = np.random.default_rng(zlib.crc32(f"{seed}/{name}".encode()))
                        return synthesize(line.lower(), speaker, rng, augmentation)

                    lines = []
                    for name, line, audio in zip(names, texts, pool.map(say, zip(names, texts))):
                        soundfile.write(os.path.join(folder, name + ".flac"), audio, SAMPLE_RATE)
                        lines.append(f"{name} {line}")
                        seconds += audio.size / SAMPLE_RATE
                        utterances += 1
                        bar.update(int(audio.size / SAMPLE_RATE))
                    with open(os.path.join(folder, f"{speaker_id}-{chapter}.trans.txt"), "w") as f:
                        f.write("\n".join(lines) + "\n")
                    turn += 1
            counts[subset] = (utterances, round(seconds, 1))
    return counts


def _text_source(text, seed):
    """A function returning the next transcript, upper case."""
    if text == "grammar":
        rng = random.Random(seed)
        return lambda: grammar_sentence(rng).upper()
    texts = sentences()
    random.Random(seed).shuffle(texts)
    return itertools.cycle(texts).__next__


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recipes.librispeech.synth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--hours", type=float, required=True, help="hours of training audio")
    parser.add_argument("--speakers", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text", default="grammar", choices=TEXTS, help="transcripts: the small grammar or fortunes")
    args = parser.parse_args(argv)
    counts = generate(args.out_dir, args.hours, args.speakers, args.seed, text=args.text)
    print(f"wrote {args.out_dir}: " + ", ".join(f"{k}: {n} utterances, {s} s" for k, (n, s) in counts.items()))


if __name__ == "__main__":
    main()
