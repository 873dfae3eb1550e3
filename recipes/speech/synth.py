"""Synthetic speakers and utterances with espeak-ng: nothing is downloaded.

A speaker is an espeak-ng voice, a variant, a pitch and a rate. Each
utterance is synthesized at espeak's 22.05 kHz, resampled to 16 kHz, mixed
with noise at a random SNR and given a random gain, so that no two
recordings of a phrase are the same.
"""
import io
import random
import shutil
import subprocess
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.signal import resample_poly

VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "croak"]
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Speaker:
    id: str
    voice: str
    variant: str
    pitch: int
    rate: int

    def espeak_args(self):
        return ["-v", f"{self.voice}+{self.variant}", "-p", str(self.pitch), "-s", str(self.rate)]


def make_speakers(count, seed=0, prefix="spk"):
    """`count` distinct synthetic speakers, reproducible from `seed`."""
    rng = random.Random(seed)
    speakers, seen = [], set()
    while len(speakers) < count:
        key = (rng.choice(VOICES), rng.choice(VARIANTS), rng.randrange(25, 76, 5), rng.randrange(130, 196, 5))
        if key in seen:
            continue
        seen.add(key)
        speakers.append(Speaker(f"{prefix}{len(speakers):03d}", *key))
    return speakers


def require_espeak():
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed: run scripts/setup (it installs the Debian package)")


def synthesize(text, speaker, rng):
    """16 kHz float32 audio of `speaker` saying `text`, with noise and gain."""
    wav = subprocess.run(["espeak-ng", *speaker.espeak_args(), "--stdout", text],
                         capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768
    audio = resample_poly(audio, SAMPLE_RATE, rate).astype(np.float32) if rate != SAMPLE_RATE else audio
    snr_db = rng.uniform(5, 30)
    noise = rng.normal(size=audio.size).astype(np.float32)
    if rng.random() < 0.5:  # brown-ish noise for half the recordings
        noise = np.cumsum(noise)
        noise -= np.convolve(noise, np.ones(101) / 101, mode="same")
    signal_power = np.mean(audio ** 2) + 1e-9
    noise *= np.sqrt(signal_power / (np.mean(noise ** 2) + 1e-12) / 10 ** (snr_db / 10))
    mixed = (audio + noise) * 10 ** (rng.uniform(-12, 6) / 20)
    return np.clip(mixed, -1, 1)


def write_wav(path, audio, rate=SAMPLE_RATE):
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def synthesize_all(jobs, workers=2, progress=None):
    """Run (text, speaker, seed, path) jobs in parallel espeak-ng processes."""
    require_espeak()

    def run(job):
        text, speaker, seed, path = job
        write_wav(path, synthesize(text, speaker, np.random.default_rng(seed)))

    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(run, jobs):
            if progress is not None:
                progress.update(1)
