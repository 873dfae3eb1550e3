"""python -m recipes.fsc.synth OUT_DIR: a synthetic corpus in the FSC layout.

    OUT_DIR/data/{train,valid,test}_data.csv   ,path,speakerId,transcription,action,object,location
    OUT_DIR/data/unseen_engine_data.csv        the same phrases from an engine no other split uses
    OUT_DIR/wavs/speakers/<speaker>/<utterance>.wav   16 kHz mono

Speakers of espeak-ng and flite are split 70/15/15, voice-disjoint
(recipes/speech/synth.py); each says every phrase once. The unseen-engine
split is festival's voices, for the robustness column. Nothing is
downloaded; every recording is speed-perturbed, reverberated and noised.
"""
import argparse
import csv
import os
import zlib

from tqdm import tqdm

from recipes.speech.synth import speaker_splits, synthesize_all, unseen_engine_speakers

from .phrases import DOMAINS, PHRASES

FIELDS = ["", "path", "speakerId", "transcription", "action", "object", "location"]


def split_sizes(speakers):
    """Speaker counts of train / valid / test, 70 / 15 / 15 (at least one each)."""
    if speakers < 3:
        raise ValueError(f"need at least 3 speakers for a speaker-disjoint split. Received: speakers={speakers}")
    n_test = n_valid = max(1, round(0.15 * speakers))
    return {"train": speakers - n_valid - n_test, "valid": n_valid, "test": n_test}


def generate(out_dir, speakers=40, phrases_per_domain=None, seed=0, workers=2, unseen_speakers=4):
    """Write the corpus; returns {split: number of utterances}."""
    phrases = [p for d in DOMAINS for p in PHRASES[d][:phrases_per_domain]]
    splits = speaker_splits(split_sizes(speakers), seed=seed)
    if unseen_speakers:
        splits["unseen_engine"] = unseen_engine_speakers(unseen_speakers, seed=seed)
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
    with tqdm(total=len(jobs), desc="synthesizing", unit="utt") as bar:
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
    parser.add_argument("--unseen-speakers", type=int, default=4,
                        help="speakers of the held-out engine (festival), 0 for none")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    counts = generate(args.out_dir, args.speakers, args.phrases_per_domain, args.seed, args.workers,
                      args.unseen_speakers)
    print(f"wrote {sum(counts.values())} utterances to {args.out_dir}: {counts}")


if __name__ == "__main__":
    main()
