"""Synthetic speakers and utterances from three speech synthesizers: nothing is downloaded.

A model trained on one synthesizer learns that synthesizer's voice rather
than the words, so the demo corpora mix engines and hold one out:

- espeak-ng (formant): 7 English voices x 14 variants;
- flite (statistical parametric and diphone): kal, kal16, awb, rms, slt;
- festival (diphone and HTS): kal_diphone, cmu_us_slt_arctic_hts. By default
  no training speaker uses it: it is the unseen engine of the robustness test.

A speaker is an engine, a voice, a pitch shift and a tempo. Splits are
voice-disjoint within each engine (`speaker_splits`), so a test speaker's
voice was never heard in training, not even at another pitch. Every
utterance is then perturbed the way ASR training data is (Ko et al. 2015;
Kim et al. 2017): speed perturbation, reverberation, noise at a random SNR
and a random gain, so that no two recordings of a phrase are the same.
"""
import os
import random
import shutil
import subprocess
import tempfile
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
ESPEAK_VOICES = [f"{voice}+{variant}" for voice in
                 ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029"]
                 for variant in ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
                                 "klatt", "croak"]]
VOICES = {
    "espeak-ng": ESPEAK_VOICES,
    "flite": ["awb", "rms", "slt", "kal16", "kal"],
    "festival": ["kal_diphone", "cmu_us_slt_arctic_hts"],
}
# The Debian package that provides each engine (scripts/setup installs them).
PACKAGES = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "festival", "sox": "sox"}
# Share of the speakers each training engine gets.
TRAINING_ENGINES = {"espeak-ng": 0.65, "flite": 0.35}


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: `pitch` in cents, `tempo` a factor on the engine's rate."""

    id: str
    engine: str
    voice: str
    pitch: int
    tempo: float


def speaker_splits(counts, seed=0, engines=None, prefix="spk"):
    """{split: [Speaker]} with `counts[split]` speakers each, voice-disjoint across splits.

    Each engine's voices are shuffled and dealt to the splits in proportion
    to their sizes (at least one each), then every split's speakers of that
    engine cycle through its own voices with random pitch and tempo.

    Example:

    >>> splits = speaker_splits({"train": 8, "test": 2}, seed=1)
    >>> sorted(len(v) for v in splits.values())
    [2, 8]
    >>> voices = {s: {(p.engine, p.voice) for p in v} for s, v in splits.items()}
    >>> voices["train"] & voices["test"]
    set()
    """
    engines = dict(engines or TRAINING_ENGINES)
    rng = random.Random(seed)
    if not counts or any(n < 1 for n in counts.values()):
        raise ValueError(f"every split needs at least one speaker. Received: counts={counts}")
    # Each split is shared among the engines in the same proportions.
    shares = {name: _apportion(n, engines) for name, n in counts.items()}
    splits = {name: [] for name in counts}
    number = 0
    for engine in engines:
        voices = list(VOICES[engine])
        rng.shuffle(voices)
        sizes = {name: shares[name][engine] for name in counts if shares[name][engine] > 0}
        pools = _deal(voices, sizes)
        for name, n in sizes.items():
            for i in range(n):
                voice = pools[name][i % len(pools[name])]
                splits[name].append(Speaker(f"{prefix}{number:03d}", engine, voice,
                                            rng.randrange(-400, 401, 50), round(rng.uniform(0.85, 1.2), 2)))
                number += 1
    return splits


def unseen_engine_speakers(count, seed=0, engine="festival", prefix="unseen"):
    """`count` speakers of an engine no training speaker used: the robustness test."""
    rng = random.Random(seed + 7919)
    voices = VOICES[engine]
    return [Speaker(f"{prefix}{i:03d}", engine, voices[i % len(voices)], rng.randrange(-300, 301, 50),
                    round(rng.uniform(0.9, 1.1), 2)) for i in range(count)]


def _apportion(total, weights):
    """Split `total` into integers proportional to `weights` (largest remainder)."""
    norm = sum(weights.values())
    exact = {k: total * w / norm for k, w in weights.items()}
    out = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - out[k], reverse=True)[:total - sum(out.values())]:
        out[k] += 1
    return out


def _deal(voices, sizes):
    """Give every split at least one voice, the rest in proportion; splits may share only
    when there are fewer voices than splits."""
    names = sorted(sizes, key=sizes.get)  # the smallest split first: it keeps its one voice
    if len(voices) < len(names):
        return {name: [voices[i % len(voices)]] for i, name in enumerate(names)}
    shares = _apportion(len(voices) - len(names), sizes)
    pools, cursor = {}, 0
    for name in names:
        take = 1 + shares[name]
        pools[name] = voices[cursor:cursor + take]
        cursor += take
    return pools


def require_engines(engines):
    missing = [PACKAGES[e] for e in list(engines) + ["sox"] if shutil.which(e if e != "festival" else "text2wave")
               is None]
    if missing:
        raise RuntimeError(f"missing speech tools {missing}: run scripts/setup (it installs the Debian packages)")


def require_espeak():
    require_engines(["espeak-ng"])


# -- one utterance ---------------------------------------------------------------
def engine_wav(text, speaker):
    """The engine's own wav bytes for `text` in `speaker`'s voice (tempo applied where native)."""
    if speaker.engine == "espeak-ng":
        command = ["espeak-ng", "-v", speaker.voice, "-s", str(round(175 * speaker.tempo)), "--stdout", text]
        return subprocess.run(command, capture_output=True, check=True).stdout
    if speaker.engine == "flite":
        with tempfile.NamedTemporaryFile(suffix=".wav") as out:
            subprocess.run(["flite", "-voice", speaker.voice, "-t", text, "-o", out.name],
                           capture_output=True, check=True)
            return out.read()
    if speaker.engine == "festival":
        return festival_wavs([text], speaker.voice)[0]
    raise ValueError(f"unknown engine {speaker.engine!r}")


def festival_wavs(texts, voice):
    """wav bytes of each text in one festival process: it takes ~0.4 s to start, ~0.05 s a phrase."""
    with tempfile.TemporaryDirectory() as folder:
        script = [f"(voice_{voice})"]
        for i, text in enumerate(texts):
            quoted = text.replace("\\", " ").replace('"', " ")
            script.append(f'(utt.save.wave (utt.synth (Utterance Text "{quoted}")) "{folder}/{i}.wav" \'riff)')
        with open(os.path.join(folder, "say.scm"), "w") as f:
            f.write("\n".join(script) + "\n")
        subprocess.run(["festival", "-b", os.path.join(folder, "say.scm")], capture_output=True, check=True)
        out = []
        for i in range(len(texts)):
            with open(os.path.join(folder, f"{i}.wav"), "rb") as f:
                out.append(f.read())
        return out


def perturb(wav, speaker, rng):
    """16 kHz float32 audio: the speaker's pitch and tempo, then speed, reverb, noise and gain."""
    effects = ["pitch", str(speaker.pitch)]
    if speaker.engine != "espeak-ng":  # espeak-ng takes the tempo as its own rate
        effects += ["tempo", "-s", f"{speaker.tempo:.3f}"]
    effects += ["speed", f"{rng.uniform(0.9, 1.1):.3f}"]
    if rng.random() < 0.5:
        effects += ["reverb", str(int(rng.uniform(10, 70))), "50", str(int(rng.uniform(20, 100)))]
    effects += ["rate", str(SAMPLE_RATE), "channels", "1"]
    raw = subprocess.run(["sox", "-q", "-t", "wav", "-", "-t", "raw", "-e", "floating-point", "-b", "32",
                          "-"] + effects, input=wav, capture_output=True, check=True).stdout
    audio = np.frombuffer(raw, dtype="<f4").copy()
    return add_noise(audio, rng)


def add_noise(audio, rng):
    """White or brown noise at 5-30 dB SNR, then a gain of -12 to +6 dB."""
    snr_db = rng.uniform(5, 30)
    noise = rng.normal(size=audio.size).astype(np.float32)
    if rng.random() < 0.5:  # brown-ish noise for half the recordings
        noise = np.cumsum(noise)
        noise -= np.convolve(noise, np.ones(101) / 101, mode="same")
    signal_power = np.mean(audio ** 2) + 1e-9
    noise *= np.sqrt(signal_power / (np.mean(noise ** 2) + 1e-12) / 10 ** (snr_db / 10))
    mixed = (audio + noise) * 10 ** (rng.uniform(-12, 6) / 20)
    return np.clip(mixed, -1, 1).astype(np.float32)


def synthesize(text, speaker, rng):
    """16 kHz float32 audio of `speaker` saying `text`, perturbed (see the module docstring)."""
    return perturb(engine_wav(text, speaker), speaker, rng)


def write_wav(path, audio, rate=SAMPLE_RATE):
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    tmp = f"{path}.tmp"
    with wave.open(tmp, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    os.replace(tmp, path)


def synthesize_all(jobs, workers=2, progress=None):
    """Run (text, speaker, seed, path) jobs in parallel synthesizer processes."""
    require_engines({speaker.engine for _, speaker, _, _ in jobs})
    # festival starts slowly: its voices speak all their texts in one process each.
    by_voice = {}
    for text, speaker, _, _ in jobs:
        if speaker.engine == "festival":
            by_voice.setdefault(speaker.voice, set()).add(text)
    spoken = {}
    for voice, texts in by_voice.items():
        texts = sorted(texts)
        spoken.update({(voice, t): w for t, w in zip(texts, festival_wavs(texts, voice))})

    def run(job):
        text, speaker, seed, path = job
        rng = np.random.default_rng(seed)
        wav = spoken.get((speaker.voice, text)) if speaker.engine == "festival" else None
        write_wav(path, perturb(wav if wav is not None else engine_wav(text, speaker), speaker, rng))

    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(run, jobs):
            if progress is not None:
                progress.update(1)
