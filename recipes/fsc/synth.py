"""python -m recipes.fsc.synth OUT_DIR: a synthetic corpus in the FSC layout.

    OUT_DIR/data/{train,valid,test}_data.csv   ,path,speakerId,transcription,action,object,location
    OUT_DIR/wavs/speakers/<speaker>/<utterance>.wav   16 kHz mono

Speakers are split speaker-disjoint (70/15/15); each speaker says every
phrase once. Nothing is downloaded: espeak-ng speaks, with noise and gain.
"""
import argparse
import csv
import os
import zlib

from tqdm import tqdm

from recipes.speech.synth import make_speakers, synthesize_all

from .phrases import DOMAINS, PHRASES

FIELDS = ["", "path", "speakerId", "transcription", "action", "object", "location"]


def split_speakers(speakers):
    """Speaker-disjoint train / valid / test, 70 / 15 / 15 (at least one each)."""
    n = len(speakers)
    if n < 3:
        raise ValueError(f"need at least 3 speakers for a speaker-disjoint split, got {n}")
    n_test = n_valid = max(1, round(0.15 * n))
    return {"train": speakers[:n - n_valid - n_test], "valid": speakers[n - n_valid - n_test:n - n_test],
            "test": speakers[n - n_test:]}


def generate(out_dir, speakers=40, phrases_per_domain=None, seed=0, workers=2):
    """Write the corpus; returns {split: number of utterances}."""
    phrases = [p for d in DOMAINS for p in PHRASES[d][:phrases_per_domain]]
    splits = split_speakers(make_speakers(speakers, seed=seed))
    os.makedirs(os.path.join(out_dir, "data"), exist_ok=True)
    jobs, rows = [], {}
    for split, members in splits.items():
        rows[split] = []
        for speaker in members:
            folder = os.path.join("wavs", "speakers", speaker.id)
            os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
            for i, (text, action, obj, location) in enumerate(phrases):
                path = os.path.join(folder, f"{speaker.id}-{i:03d}.wav")
                rows[split].append([len(rows[split]), path, speaker.id, text, action, obj, location])
                jobs.append((text, speaker, zlib.crc32(f"{seed}/{speaker.id}/{i}".encode()),
                             os.path.join(out_dir, path)))
    with tqdm(total=len(jobs), desc="espeak-ng", unit="utt") as bar:
        synthesize_all(jobs, workers=workers, progress=bar)
    for split, table in rows.items():  # written last: a corpus with CSVs is complete
        with open(os.path.join(out_dir, "data", f"{split}_data.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(FIELDS)
            writer.writerows(table)
    return {split: len(table) for split, table in rows.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recipes.fsc.synth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--speakers", type=int, default=40)
    parser.add_argument("--phrases-per-domain", type=int, default=None, help="fewer phrases, for tests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    counts = generate(args.out_dir, args.speakers, args.phrases_per_domain, args.seed, args.workers)
    print(f"wrote {sum(counts.values())} utterances to {args.out_dir}: {counts}")


if __name__ == "__main__":
    main()
