"""Loading a corpus in the Fluent Speech Commands layout (real or synthetic)."""
import csv
import os
from dataclasses import dataclass

import numpy as np

from .phrases import domain_of

COLUMNS = ("path", "speakerId", "transcription", "action", "object", "location")


@dataclass(frozen=True)
class Utterance:
    path: str
    speaker: str
    transcription: str
    action: str
    object: str
    location: str

    @property
    def domain(self):
        return domain_of(self.action, self.object)


def has_split(root, split):
    return os.path.exists(os.path.join(root, "data", f"{split}_data.csv"))


def load_split(root, split):
    """The utterances of `split` ("train", "valid" or "test") under corpus `root`."""
    path = os.path.join(root, "data", f"{split}_data.csv")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: --data must point at a Fluent Speech Commands "
                                "directory (the one holding data/ and wavs/)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} lacks columns {missing}")
        utterances = [Utterance(os.path.join(root, row["path"]), row["speakerId"],
                                normalize(row["transcription"]), row["action"], row["object"],
                                row["location"]) for row in reader]
    unknown = {(u.action, u.object) for u in utterances if u.domain is None}
    if unknown:
        raise ValueError(f"{path}: intents with no known domain: {sorted(unknown)[:5]}")
    return utterances


def normalize(text):
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c in " '").split())


def phrases_of(utterances, domains):
    """Sorted distinct transcriptions of the given domains: the supported phrases."""
    return sorted({u.transcription for u in utterances if u.domain in domains})


def select(utterances, domains):
    return [u for u in utterances if u.domain in domains]


def labels(utterances, phrases):
    index = {p: i for i, p in enumerate(phrases)}
    return np.array([index[u.transcription] for u in utterances], dtype=np.int32)
