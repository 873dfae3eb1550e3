"""Loading a corpus in the LibriSpeech layout, and its growing subsets D_0 ⊂ D_1 ⊂ ..."""
import glob
import os
from dataclasses import dataclass

import numpy as np
import soundfile


@dataclass(frozen=True)
class Utterance:
    path: str
    speaker: str
    chapter: str
    text: str
    seconds: float


def load_subset(root, subset):
    """Every utterance of `root/subset` (e.g. train-clean-100, test-clean), sorted by id."""
    folder = os.path.join(root, subset)
    transcripts = sorted(glob.glob(os.path.join(folder, "*", "*", "*.trans.txt")))
    if not transcripts:
        raise FileNotFoundError(f"no SPEAKER/CHAPTER/*.trans.txt under {folder}: --data must point at a "
                                "LibriSpeech directory (the one holding train-clean-100/, test-clean/, ...)")
    utterances = []
    for transcript in transcripts:
        directory = os.path.dirname(transcript)
        with open(transcript) as f:
            for line in f:
                if not line.strip():
                    continue
                name, _, text = line.strip().partition(" ")
                speaker, chapter, _ = name.split("-")
                path = os.path.join(directory, name + ".flac")
                if not os.path.exists(path):
                    raise FileNotFoundError(f"{transcript} names {name}, but {path} is missing")
                utterances.append(Utterance(path, speaker, chapter, text, soundfile.info(path).duration))
    return sorted(utterances, key=lambda u: u.path)


def growing_subsets(utterances, fractions, seed=0):
    """Nested training sets holding the given fractions of the audio hours.

    Chapters are shuffled once (with `seed`) and taken in that order, so
    each set contains the previous one, as the paper's 480 h, 576 h, ... do.
    """
    if list(fractions) != sorted(fractions) or not 0 < fractions[0] or fractions[-1] > 1:
        raise ValueError(f"fractions must grow within (0, 1]. Received: {fractions}")
    chapters = sorted({(u.speaker, u.chapter) for u in utterances})
    order = np.random.default_rng(seed).permutation(len(chapters))
    by_chapter = {}
    for u in utterances:
        by_chapter.setdefault((u.speaker, u.chapter), []).append(u)
    ordered = [u for i in order for u in by_chapter[chapters[i]]]
    seconds = np.cumsum([u.seconds for u in ordered])
    total = seconds[-1]
    return [ordered[:int(np.searchsorted(seconds, f * total, side="left")) + 1] for f in fractions]


def hours(utterances):
    return sum(u.seconds for u in utterances) / 3600
