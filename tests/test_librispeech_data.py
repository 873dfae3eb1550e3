"""The LibriSpeech-layout generator and loader."""
import csv

import pytest

from recipes.librispeech import data, text
from recipes.librispeech.synth import generate
from tests.helpers import person


def test_sentences_have_a_real_vocabulary():
    lines = text.sentences()
    words = {w for line in lines for w in line.split()}
    assert len(lines) > 2000 and len(words) > 5000
    assert all(line == line.upper() and 4 <= len(line.split()) <= 20 for line in lines)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("libri")
    counts = generate(str(root), hours=0.01, speakers=5, seed=1)
    return root, counts


def test_generator_writes_the_librispeech_layout_person_disjoint(corpus):
    root, counts = corpus
    subsets = {s: data.load_subset(str(root), s) for s in ("train-synth", "valid-synth", "test-synth")}
    train = subsets["train-synth"]
    assert len(train) == counts["train-synth"][0] and data.hours(train) * 3600 >= 36
    assert all(len(subsets[s]) == counts[s][0] > 0 for s in subsets)
    # speakers.csv names every speaker of the corpus (a tiny corpus runs out of hours before some
    # speak); audited against tests/helpers.py's own who-is-who
    # table, no person speaks in two subsets.
    with open(root / "speakers.csv") as f:
        audit = list(csv.DictReader(f))
    speaker_ids = {s: {u.speaker for u in utterances} for s, utterances in subsets.items()}
    assert set().union(*speaker_ids.values()) <= {r["speaker"] for r in audit}
    assert all(speaker_ids[s] <= {r["speaker"] for r in audit if r["split"] == s} for s in subsets)
    split_of = {}
    for r in audit:
        split_of.setdefault(person(r["engine"], r["voice"]), set()).add(r["split"])
    assert all(len(splits) == 1 for splits in split_of.values()), split_of
    assert set().union(*split_of.values()) == set(subsets)
    first = train[0]
    assert first.path.endswith(f"{first.speaker}-{first.chapter}-0000.flac") and first.text.isupper()


def test_growing_subsets_are_nested_and_sized_by_hours(corpus):
    root, _ = corpus
    train = data.load_subset(str(root), "train-synth")
    subsets = data.growing_subsets(train, [0.5, 0.6, 0.7, 1.0])
    for smaller, larger in zip(subsets, subsets[1:]):
        assert set(smaller) < set(larger)
    assert subsets[-1] == subsets[-1][:len(train)] and len(subsets[-1]) == len(train)
    assert data.hours(subsets[0]) >= 0.5 * data.hours(train)
    with pytest.raises(ValueError, match="fractions must grow"):
        data.growing_subsets(train, [0.6, 0.5])


def test_loader_explains_a_wrong_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data must point"):
        data.load_subset(str(tmp_path), "test-clean")


def test_grammar_sentences_cover_a_small_vocabulary_and_rarely_repeat():
    lines = text.grammar_sentences(5000, seed=0)
    vocabulary = set(text.grammar_vocabulary())
    words = {w.lower() for line in lines for w in line.split()}
    assert words <= vocabulary and len(words) > 0.9 * len(vocabulary)
    assert len(set(lines)) > 0.95 * len(lines)  # test sentences are new sentences, not recalled ones
    assert all(line == line.upper() and 2 <= len(line.split()) <= 16 for line in lines)
