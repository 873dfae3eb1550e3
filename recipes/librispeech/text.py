"""Transcripts of the synthesized corpora: a small English grammar, or Debian's `fortunes`.

- `grammar_sentences` (the demo's text): sentences from a small grammar of
  statements, questions and requests over a vocabulary of 436 words.
  A small recognizer can cover that vocabulary in an hour of CPU, and the
  grammar has far more sentences than any corpus draws, so the test set's
  sentences are almost all new: the model must recognize words, not recall
  sentences. It is not LibriSpeech: the text is simple, regular and
  repetitive, and a WER on it is not a LibriSpeech WER.
- `sentences`: the quotations of `fortunes` (literature, science, wisdom,
  ...; some 15,000 distinct words), split into sentences of 4 to 20 words.
  Closer to read books, and far beyond what a demo-scale model learns.

Both are written as LibriSpeech transcripts are: upper case, letters and apostrophes.
"""
import os
import random
import re

FORTUNES = "/usr/share/games/fortunes"
FILES = ("art", "education", "food", "humorists", "literature", "love", "people", "pets", "platitudes",
         "science", "sports", "wisdom", "work", "fortunes")


def sentences(directory=FORTUNES, min_words=4, max_words=20):
    """Distinct `fortunes` sentences, in a fixed order."""
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


# -- the grammar -------------------------------------------------------------------
NAMES = ("alice bob carol david emma frank grace henry isabel jack kate liam maria noah olivia peter rose sam tina "
         "victor").split()
PRONOUNS = "i you we they he she".split()
DETERMINERS = "the a my your our their this that every some".split()
ADJECTIVES = ("red green blue yellow black white brown small large tiny huge old new young warm cold hot quiet loud "
              "bright dark heavy light fast slow happy tired clever gentle brave lazy early late empty full clean "
              "dirty strong soft sharp round wooden silver golden broken").split()
# (singular, plural)
NOUNS = [(n, n + "s") for n in (
    "cat dog bird horse rabbit cow goat house garden kitchen window door table chair bed lamp clock car train "
    "boat bicycle plane bus truck road bridge river apple cake orange lemon book letter song story picture map "
    "phone radio camera computer teacher doctor farmer baker driver artist friend neighbor captain mountain "
    "forest field island village park market station shoe hat coat key cup plate bottle basket ticket flower "
    "tree stone ring").split()] + [("child", "children"), ("mouse", "mice"), ("box", "boxes"),
                                  ("city", "cities"), ("beach", "beaches"), ("glass", "glasses")]
MASS_NOUNS = "bread cheese coffee tea soup rice milk water music paper".split()
# (base, past)
VERBS = [("see", "saw"), ("find", "found"), ("take", "took"), ("buy", "bought"), ("sell", "sold"),
         ("paint", "painted"), ("clean", "cleaned"), ("open", "opened"), ("close", "closed"), ("carry", "carried"),
         ("move", "moved"), ("watch", "watched"), ("follow", "followed"), ("want", "wanted"), ("need", "needed"),
         ("like", "liked"), ("love", "loved"), ("visit", "visited"), ("build", "built"), ("fix", "fixed"),
         ("wash", "washed"), ("drop", "dropped"), ("lose", "lost"), ("keep", "kept"), ("bring", "brought"),
         ("send", "sent"), ("show", "showed"), ("hide", "hid"), ("draw", "drew"), ("catch", "caught"),
         ("push", "pushed"), ("pull", "pulled"), ("count", "counted"), ("check", "checked"), ("borrow", "borrowed")]
PREPOSITIONS = "in on under near behind beside above below across through inside outside".split()
TIMES = ["today", "yesterday", "tomorrow", "tonight", "this morning", "this evening", "last night", "at noon",
         "at midnight", "every day", "last week", "next week", "on monday", "on tuesday", "on wednesday",
         "on thursday", "on friday", "on saturday", "on sunday", "in the spring", "in the summer",
         "in the autumn", "in the winter", "soon", "again", "later"]
NUMBERS = ("two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
           "seventeen eighteen nineteen twenty thirty forty fifty hundred").split()
ADVERBS = "quickly slowly quietly carefully happily suddenly often never always really".split()
QUESTIONS = "where what when why how".split()
PLACES = ["home", "to school", "to work", "to the market", "to the park", "to the station", "to the beach",
          "to the city", "to the village", "to the river", "into town", "upstairs", "outside"]
MOTION = [("go", "went"), ("walk", "walked"), ("run", "ran"), ("drive", "drove"), ("travel", "traveled"),
          ("come", "came"), ("hurry", "hurried"), ("fly", "flew")]


def _noun_phrase(rng, plural=False):
    if rng.random() < 0.15 and not plural:
        return rng.choice(MASS_NOUNS) if rng.random() < 0.5 else "some " + rng.choice(MASS_NOUNS)
    if plural:
        head = rng.choice(["the", "my", "your", "our", "their", "some", "these", "those", rng.choice(NUMBERS)])
    else:
        head = rng.choice(DETERMINERS)
    noun = rng.choice(NOUNS)[1 if plural else 0]
    if rng.random() < 0.5:
        noun = rng.choice(ADJECTIVES) + " " + noun
    if head == "a" and noun[0] in "aeiou":
        head = "an"
    return f"{head} {noun}"


def _subject(rng):
    r = rng.random()
    return rng.choice(NAMES) if r < 0.4 else rng.choice(PRONOUNS) if r < 0.7 else _noun_phrase(rng)


def _place(rng):
    return f"{rng.choice(PREPOSITIONS)} {_noun_phrase(rng, plural=rng.random() < 0.2)}"


def _maybe(rng, p, make):
    return " " + make(rng) if rng.random() < p else ""


def grammar_sentence(rng):
    """One random sentence of the grammar, lower case."""
    kind = rng.random()
    if kind < 0.35:  # statement in the past
        verb = rng.choice(VERBS)[1]
        s = f"{_subject(rng)} {verb} {_noun_phrase(rng, rng.random() < 0.3)}"
        s += _maybe(rng, 0.5, _place) + _maybe(rng, 0.4, lambda r: r.choice(TIMES))
    elif kind < 0.5:  # future or modal
        aux = rng.choice(["will", "can", "should", "must", "might", "did not", "will not", "cannot"])
        s = f"{_subject(rng)} {aux} {rng.choice(VERBS)[0]} {_noun_phrase(rng, rng.random() < 0.3)}"
        s += _maybe(rng, 0.3, _place) + _maybe(rng, 0.4, lambda r: r.choice(TIMES))
    elif kind < 0.62:  # motion
        base, past = rng.choice(MOTION)
        s = f"{_subject(rng)} {past if rng.random() < 0.6 else 'will ' + base}"
        s += _maybe(rng, 0.4, lambda r: r.choice(ADVERBS)) + " " + rng.choice(PLACES)
        s += _maybe(rng, 0.5, lambda r: r.choice(TIMES))
    elif kind < 0.74:  # description
        verb = rng.choice(["is", "was", "looks", "seems", "felt"])
        s = f"{_noun_phrase(rng)} {verb}" + _maybe(rng, 0.3, lambda r: "very") + " " + rng.choice(ADJECTIVES)
        s += _maybe(rng, 0.3, lambda r: r.choice(TIMES))
    elif kind < 0.84:  # request
        s = rng.choice(["please ", "", "now ", "could you "]) + f"{rng.choice(VERBS)[0]} {_noun_phrase(rng)}"
        s += _maybe(rng, 0.5, _place)
    elif kind < 0.93:  # question
        q = rng.choice(QUESTIONS)
        s = f"{q} did {_subject(rng)} {rng.choice(VERBS)[0]} {_noun_phrase(rng, rng.random() < 0.3)}"
        s += _maybe(rng, 0.3, lambda r: r.choice(TIMES))
    else:  # counting
        s = f"{rng.choice(NAMES)} has {rng.choice(NUMBERS)} {rng.choice(NOUNS)[1]}" + _maybe(rng, 0.4, _place)
    return s


def grammar_sentences(count, seed=0):
    """`count` sentences of the grammar (repeats possible but rare), upper case, in a fixed order.

    Example:

    >>> grammar_sentences(2, seed=3) == grammar_sentences(2, seed=3)
    True
    >>> len(grammar_vocabulary())
    436
    """
    rng = random.Random(seed)
    return [grammar_sentence(rng).upper() for _ in range(count)]


def grammar_vocabulary():
    """Every word the grammar can say."""
    words = set(NAMES + PRONOUNS + DETERMINERS + ADJECTIVES + MASS_NOUNS + PREPOSITIONS + NUMBERS + ADVERBS
                + QUESTIONS + ["an", "some", "these", "those", "very", "please", "now", "could", "has", "did",
                               "is", "was", "looks", "seems", "felt", "will", "can", "should", "must", "might",
                               "not", "cannot"])
    for pair in NOUNS + VERBS + MOTION:
        words.update(pair)
    for phrase in TIMES + PLACES:
        words.update(phrase.split())
    return sorted(words)
