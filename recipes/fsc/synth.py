"""python -m recipes.fsc.synth OUT_DIR: a synthetic corpus in the FSC layout.

    OUT_DIR/data/{train,valid,test}_data.csv   ,path,speakerId,transcription,action,object,location
    OUT_DIR/data/unseen_engine_data.csv        the same phrases from an engine no other split uses
    OUT_DIR/data/{valid,test}_<condition>_data.csv   the same utterances in each recording condition
    OUT_DIR/data/speakers.csv                  speaker, split, engine, voice, identity, pitch, tempo
    OUT_DIR/data/augmentation.json             the augmentation policy of the recordings
    OUT_DIR/wavs/speakers/<speaker>/<utterance>.wav   16 kHz mono
    OUT_DIR/wavs/<condition>/<speaker>/<utterance>.wav

Speakers of espeak-ng and flite are split 70/15/15, disjoint by person
(recipes/speech/synth.py, `IDENTITIES`); each says every phrase once. The
unseen-engine split is festival's voices, whose people no training speaker
is, for the robustness column. Nothing is downloaded; every recording is
speed-perturbed and, but for a clean share, noised and sometimes
reverberated (`Augmentation`). Valid and test are also rendered in every
recording condition of recipes/speech/conditions.py.
"""
import argparse
import csv
import json
import os
import zlib

from tqdm import tqdm

from recipes.speech.conditions import CONDITIONS, render
from recipes.speech.synth import (Augmentation, engine_identities, sox, speaker_splits, synthesize_all,
                                  unseen_engine_speakers, voice_effects, write_speakers, write_wav)

from .phrases import DOMAINS, PHRASES

FIELDS = ["", "path", "speakerId", "transcription", "action", "object", "location"]


def split_sizes(speakers):
    """Speaker counts of train / valid / test, 70 / 15 / 15 (at least one each)."""
    if speakers < 3:
        raise ValueError(f"need at least 3 speakers for a speaker-disjoint split. Received: speakers={speakers}")
    n_test = n_valid = max(1, round(0.15 * speakers))
    return {"train": speakers - n_valid - n_test, "valid": n_valid, "test": n_test}


def generate(out_dir, speakers=40, phrases_per_domain=None, seed=0, workers=2, unseen_speakers=4,
             augmentation=Augmentation(), conditions=CONDITIONS):
    """Write the corpus; returns {split: number of utterances}."""
    phrases = [p for d in DOMAINS for p in PHRASES[d][:phrases_per_domain]]
    held_out = "festival"
    splits = speaker_splits(split_sizes(speakers), seed=seed, reserved=engine_identities(held_out))
    if unseen_speakers:
        splits["unseen_engine"] = unseen_engine_speakers(unseen_speakers, seed=seed, engine=held_out)
    os.makedirs(os.path.join(out_dir, "data"), exist_ok=True)
    jobs, rows, origin = [], {}, {}
    for split, members in splits.items():
        rows[split] = []
        for speaker in members:
            folder = os.path.join("wavs", "speakers", speaker.id)
            os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
            for i, (text, action, obj, location) in enumerate(phrases):
                path = os.path.join(folder, f"{speaker.id}-{i:03d}.wav")
                rows[split].append([len(rows[split]), path, speaker.id, text, action, obj, location])
                job = (text, speaker, zlib.crc32(f"{seed}/{speaker.id}/{i}".encode()), os.path.join(out_dir, path))
                origin[job[3]] = split
                jobs.append(job)
    rendered = [s for s in ("valid", "test") if s in splits]
    for condition in conditions:
        for split in rendered:
            for speaker in splits[split]:
                os.makedirs(os.path.join(out_dir, "wavs", condition, speaker.id), exist_ok=True)

    def in_conditions(job, wav):
        """The same recording in every condition, from the speaker's clean rendering."""
        text, speaker, job_seed, path = job
        if origin[path] not in rendered or not conditions:
            return
        clean = sox(wav, voice_effects(speaker))
        for condition in conditions:
            write_wav(_condition_path(path, condition), render(clean, condition, job_seed + len(condition)))

    with tqdm(total=len(jobs), desc="synthesizing", unit="utt") as bar:
        synthesize_all(jobs, workers=workers, progress=bar, augmentation=augmentation, conditions=in_conditions)
    write_speakers(os.path.join(out_dir, "data", "speakers.csv"), splits)
    with open(os.path.join(out_dir, "data", "augmentation.json"), "w") as f:
        json.dump(augmentation.get_config(), f, indent=2)
    tables = dict(rows)
    for condition in conditions:
        for split in rendered:
            tables[f"{split}_{condition}"] = [[n, _condition_path(path, condition)] + rest
                                              for n, path, *rest in rows[split]]
    for split, table in tables.items():  # written last: a corpus with CSVs is complete
        with open(os.path.join(out_dir, "data", f"{split}_data.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(FIELDS)
            writer.writerows(table)
    return {split: len(table) for split, table in tables.items()}


def _condition_path(path, condition):
    """wavs/speakers/S/U.wav -> wavs/<condition>/S/U.wav (relative or under OUT_DIR alike)."""
    head, speaker, name = path.rsplit(os.sep, 2)
    return os.path.join(os.path.dirname(head), condition, speaker, name)


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
