"""Synthetic speakers and utterances from three speech synthesizers: nothing is downloaded.

A model trained on one synthesizer learns that synthesizer's voice rather
than the words, so the demo corpora mix engines and hold one out:

- espeak-ng (formant): 7 English voices x 14 variants;
- flite (statistical parametric and diphone): kal, kal16, awb, rms, slt;
- festival (diphone and HTS): kal_diphone, cmu_us_slt_arctic_hts. By default
  no training speaker uses it: it is the unseen engine of the robustness test.

Several voices are one person (`IDENTITIES`): flite's kal and kal16 and
festival's kal_diphone are all CMU's "Kevin" diphones; flite's slt and
festival's HTS slt are the same CMU ARCTIC speaker. Splits are disjoint by
identity (`speaker_splits`), not by voice name, so a test speaker was never
heard in training in any engine, at any pitch or tempo.

A speaker is an engine, a voice, a pitch shift and a tempo. Every utterance
is then rendered under an `Augmentation` policy, the way ASR training data
is (Ko et al. 2015; Kim et al. 2017): speed perturbation for all, and for
all but a clean share, noise at a random SNR and, on some, reverberation.
"""
import io
import os
import random
import shutil
import subprocess
import tempfile
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

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
# Who is behind each voice. espeak-ng has no recorded speakers: its variants
# (+m1 ... +f5, klatt, croak) set formants and voicing on top of a language
# voice, so "en-us+f3" and "en-gb+f3" sound related. We count the variant as
# the identity: one variant never serves two splits, whatever the language.
_RECORDED = {
    ("flite", "kal"): "cmu-kevin", ("flite", "kal16"): "cmu-kevin", ("festival", "kal_diphone"): "cmu-kevin",
    ("flite", "slt"): "arctic-slt", ("festival", "cmu_us_slt_arctic_hts"): "arctic-slt",
    ("flite", "awb"): "arctic-awb", ("flite", "rms"): "arctic-rms",
}
IDENTITIES = {**{("espeak-ng", v): "espeak-" + v.split("+", 1)[1] for v in ESPEAK_VOICES}, **_RECORDED}


def identity(engine, voice):
    """The person (or, for espeak-ng, the voice variant) behind `engine`'s `voice`.

    Example:

    >>> identity("flite", "kal16") == identity("festival", "kal_diphone") == identity("flite", "kal")
    True
    >>> identity("espeak-ng", "en-us+f3") == identity("espeak-ng", "en-gb+f3")
    True
    """
    try:
        return IDENTITIES[(engine, voice)]
    except KeyError:
        raise ValueError(f"no identity recorded for voice {voice!r} of {engine!r}: add it to IDENTITIES "
                         f"(who recorded it?). Received: engine={engine!r}, voice={voice!r}") from None


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

    @property
    def identity(self):
        return identity(self.engine, self.voice)


SPEAKER_FIELDS = ["speaker", "split", "engine", "voice", "identity", "pitch", "tempo"]


def write_speakers(path, splits):
    """data/speakers.csv: every speaker's split, engine, voice, identity, pitch and tempo, for audits."""
    import csv
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(SPEAKER_FIELDS)
        for split, members in splits.items():
            writer.writerows([s.id, split, s.engine, s.voice, s.identity, s.pitch, s.tempo] for s in members)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Augmentation:
    """How each recording is rendered: the corpus's augmentation policy.

    Every utterance is speed-perturbed; a `clean_share` of them get nothing
    else (a model must not learn the noise floor as a feature); the others
    get noise at an SNR drawn from `snr_db` (white or brown), reverberation
    with probability `reverb_share`, and a gain from `gain_db`.

    Example:

    >>> Augmentation(clean_share=0.5).get_config()["clean_share"]
    0.5
    """

    clean_share: float = 0.3
    snr_db: tuple = (5.0, 45.0)
    reverb_share: float = 0.4
    gain_db: tuple = (-12.0, 6.0)
    speed: tuple = (0.9, 1.1)

    def __post_init__(self):
        for name in ("clean_share", "reverb_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"`{name}` must be in [0, 1]. Received: {name}={getattr(self, name)!r}")
        for name in ("snr_db", "gain_db", "speed"):
            low, high = getattr(self, name)
            if not low <= high:
                raise ValueError(f"`{name}` must be (low, high) with low <= high. "
                                 f"Received: {name}={getattr(self, name)!r}")
        object.__setattr__(self, "snr_db", tuple(map(float, self.snr_db)))
        object.__setattr__(self, "gain_db", tuple(map(float, self.gain_db)))
        object.__setattr__(self, "speed", tuple(map(float, self.speed)))

    def get_config(self):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# The policy of every corpus made before Augmentation existed: always noised.
ALWAYS_NOISED = Augmentation(clean_share=0.0, snr_db=(5.0, 30.0), reverb_share=0.5)


def speaker_splits(counts, seed=0, engines=None, prefix="spk", reserved=(), training=("train",)):
    """{split: [Speaker]} with `counts[split]` speakers each, disjoint by identity across splits.

    Each engine's identities (`IDENTITIES`) are shuffled and dealt to the
    splits in proportion to their sizes (at least one each); every split's
    speakers of that engine cycle through its own identities, each in one of
    that identity's voices, with random pitch and tempo. `reserved`
    identities (those of a held-out engine) never go to a `training` split.

    Example:

    >>> splits = speaker_splits({"train": 8, "test": 2}, seed=1)
    >>> sorted(len(v) for v in splits.values())
    [2, 8]
    >>> people = {s: {p.identity for p in v} for s, v in splits.items()}
    >>> people["train"] & people["test"]
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
        voices_of = {}
        for voice in VOICES[engine]:
            voices_of.setdefault(identity(engine, voice), []).append(voice)
        people = sorted(voices_of)
        rng.shuffle(people)
        sizes = {name: shares[name][engine] for name in counts if shares[name][engine] > 0}
        pools = _deal(people, sizes, set(reserved), set(training), engine)
        for name, n in sizes.items():
            for i in range(n):
                voices = voices_of[pools[name][i % len(pools[name])]]
                voice = voices[rng.randrange(len(voices))]
                splits[name].append(Speaker(f"{prefix}{number:03d}", engine, voice,
                                            rng.randrange(-400, 401, 50), round(rng.uniform(0.85, 1.2), 2)))
                number += 1
    return splits


def unseen_engine_speakers(count, seed=0, engine="festival", prefix="unseen"):
    """`count` speakers of an engine no training speaker used: the robustness test.

    Their identities must be passed to `speaker_splits` as `reserved`
    (`engine_identities(engine)`), so that no training split hears these
    people through another engine.
    """
    rng = random.Random(seed + 7919)
    voices = VOICES[engine]
    return [Speaker(f"{prefix}{i:03d}", engine, voices[i % len(voices)], rng.randrange(-300, 301, 50),
                    round(rng.uniform(0.9, 1.1), 2)) for i in range(count)]


def engine_identities(engine):
    """The identities behind every voice of `engine`."""
    return {identity(engine, voice) for voice in VOICES[engine]}


def _apportion(total, weights):
    """Split `total` into integers proportional to `weights` (largest remainder)."""
    norm = sum(weights.values())
    exact = {k: total * w / norm for k, w in weights.items()}
    out = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - out[k], reverse=True)[:total - sum(out.values())]:
        out[k] += 1
    return out


def _deal(people, sizes, reserved, training, engine):
    """{split: [identity]}: no identity in two splits, at least one per split, the rest in
    proportion; reserved identities go to the held-out splits first and never to a training one."""
    if len(people) < len(sizes):
        raise ValueError(f"{engine} has {len(people)} identities for {len(sizes)} splits: splits disjoint by "
                         f"person need at least one each. Received: sizes={sizes}")
    # Held-out splits are dealt first and the reserved identities lead the pool, so they land there.
    names = sorted(sizes, key=lambda n: (n in training, sizes[n]))
    pool = [p for p in people if p in reserved] + [p for p in people if p not in reserved]
    shares = _apportion(len(pool) - len(names), sizes)
    pools, cursor = {}, 0
    for name in names:
        take = 1 + shares[name]
        pools[name] = pool[cursor:cursor + take]
        cursor += take
        if name in training:
            pools[name] = [p for p in pools[name] if p not in reserved]
            if not pools[name]:
                raise ValueError(f"{engine}: every identity left for split {name!r} is reserved for held-out "
                                 f"splits. Received: reserved={sorted(reserved)}")
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


def sox(wav, effects):
    """16 kHz mono float32 audio of the wav bytes after sox `effects`."""
    raw = subprocess.run(["sox", "-q", "-t", "wav", "-", "-t", "raw", "-e", "floating-point", "-b", "32",
                          "-"] + effects + ["rate", str(SAMPLE_RATE), "channels", "1"],
                         input=wav, capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype="<f4").copy()


def voice_effects(speaker):
    """The sox effects that turn the engine's voice into the speaker's: pitch, and tempo where not native."""
    effects = ["pitch", str(speaker.pitch)]
    if speaker.engine != "espeak-ng":  # espeak-ng takes the tempo as its own rate
        effects += ["tempo", "-s", f"{speaker.tempo:.3f}"]
    return effects


def perturb(wav, speaker, rng, augmentation=Augmentation()):
    """16 kHz float32 audio: the speaker's pitch and tempo, then the `augmentation` policy."""
    a = augmentation
    clean = rng.random() < a.clean_share
    effects = voice_effects(speaker) + ["speed", f"{rng.uniform(*a.speed):.3f}"]
    if not clean and rng.random() < a.reverb_share:
        effects += ["reverb", str(int(rng.uniform(10, 70))), "50", str(int(rng.uniform(20, 100)))]
    audio = sox(wav, effects)
    if not clean:
        audio = add_noise(audio, rng, a.snr_db)
    return gain(audio, rng.uniform(*a.gain_db))


def add_noise(audio, rng, snr_db=(5.0, 30.0)):
    """White or brown noise at an SNR drawn from `snr_db`."""
    snr = rng.uniform(*snr_db)
    noise = rng.normal(size=audio.size).astype(np.float32)
    if rng.random() < 0.5:  # brown-ish noise for half the recordings
        noise = np.cumsum(noise)
        noise -= np.convolve(noise, np.ones(101) / 101, mode="same")
    signal_power = np.mean(audio ** 2) + 1e-9
    noise *= np.sqrt(signal_power / (np.mean(noise ** 2) + 1e-12) / 10 ** (snr / 10))
    return (audio + noise).astype(np.float32)


def gain(audio, db):
    return np.clip(audio * 10 ** (db / 20), -1, 1).astype(np.float32)


def synthesize(text, speaker, rng, augmentation=Augmentation()):
    """16 kHz float32 audio of `speaker` saying `text`, rendered under `augmentation`."""
    return perturb(engine_wav(text, speaker), speaker, rng, augmentation)


def wav_bytes(audio, rate=SAMPLE_RATE):
    """A 16-bit mono wav file's bytes."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return out.getvalue()


def write_wav(path, audio, rate=SAMPLE_RATE):
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(wav_bytes(audio, rate))
    os.replace(tmp, path)


def synthesize_all(jobs, workers=2, progress=None, augmentation=Augmentation(), conditions=None):
    """Run (text, speaker, seed, path) jobs in parallel synthesizer processes.

    `conditions(job, wav)`, if given, is called with each job and the
    engine's wav bytes, to render more versions of the same recording.
    """
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
        wav = wav if wav is not None else engine_wav(text, speaker)
        write_wav(path, perturb(wav, speaker, rng, augmentation))
        if conditions is not None:
            conditions(job, wav)

    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(run, jobs):
            if progress is not None:
                progress.update(1)
