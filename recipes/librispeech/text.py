"""Sentences with a real vocabulary, from Debian's `fortunes` package.

The quotations of its literature, science, wisdom, people and similar
files (not the offensive set, which Debian ships separately) give some
15,000 distinct words. They are split into sentences of 4 to 20 words and
written as LibriSpeech transcripts are: upper case, letters and apostrophes.
"""
import os
import re

FORTUNES = "/usr/share/games/fortunes"
FILES = ("art", "education", "food", "humorists", "literature", "love", "people", "pets", "platitudes",
         "science", "sports", "wisdom", "work", "fortunes")


def sentences(directory=FORTUNES, min_words=4, max_words=20):
    """Distinct sentences, in a fixed order."""
    found = [os.path.join(directory, name) for name in FILES if os.path.exists(os.path.join(directory, name))]
    if not found:
        raise FileNotFoundError(f"no fortune files in {directory}: install the Debian package `fortunes` "
                                "(scripts/setup does)")
    seen, out = set(), []
    for path in found:
        with open(path, encoding="latin-1") as f:
            text = f.read()
        for quote in text.split("\n%\n"):
            quote = re.sub(r"\s+--.*$", "", quote.strip(), flags=re.S)  # drop the attribution
            for sentence in re.split(r"(?<=[.!?])\s+", quote):
                words = re.sub(r"[^A-Za-z' ]+", " ", sentence.replace("\n", " ")).upper().split()
                words = [w.strip("'") for w in words if w.strip("'")]
                line = " ".join(words)
                if min_words <= len(words) <= max_words and line not in seen:
                    seen.add(line)
                    out.append(line)
    return out
