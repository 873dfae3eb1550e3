"""Recording conditions: the same test utterances rendered clean, noised, far-field,
over a telephone band, loud and quiet.

A model that scores well on the corpus's own test split may still fail on
the easiest input a device hears, a clean close-talk recording, if it
learned the training noise floor as a feature. The conditions table asks
that question. Each condition starts from the speaker's clean rendering
(the engine's voice at the speaker's pitch and tempo, no augmentation) and
is deterministic under its seed. Conditions never enter training or the
choice of a setting that is reported on test: the recipes render them for
valid (to choose on) and test (to report).

Example:

>>> import numpy as np
>>> tone = np.sin(np.arange(16000) * 2 * np.pi * 1000 / 16000).astype(np.float32) * 0.5
>>> np.array_equal(render(tone, "noise", seed=3), render(tone, "noise", seed=3))
True
>>> float(np.abs(render(tone, "quiet", seed=0)).max()) < 0.02
True
"""
import numpy as np

from .synth import ALWAYS_NOISED, add_noise, gain, sox, wav_bytes

CONDITIONS = ("clean", "noise", "farfield", "telephone", "loud", "quiet")
# What each condition does to the clean rendering (docs and results.json quote it).
DESCRIPTIONS = {
    "clean": "the speaker's voice, no noise, no reverberation",
    "noise": "white or brown noise at 5-30 dB SNR (the old corpora's training noise)",
    "farfield": "strong reverberation (sox reverb 90 % reverberance, largest room, 60 ms pre-delay)",
    "telephone": "8 kHz telephone band, 300-3400 Hz",
    "loud": "peak at full scale, then +12 dB (clipped)",
    "quiet": "peak at -40 dBFS (16-bit quantization noise becomes audible)",
}


def render(audio, condition, seed):
    """16 kHz float32 audio of `condition` from a clean rendering, 16-bit quantized like a recording."""
    if condition not in CONDITIONS:
        raise ValueError(f"`condition` must be one of {CONDITIONS}. Received: condition={condition!r}")
    rng = np.random.default_rng(seed)
    audio = np.asarray(audio, np.float32)
    if condition == "noise":
        audio = add_noise(audio, rng, ALWAYS_NOISED.snr_db)
    elif condition == "farfield":
        audio = sox(wav_bytes(audio), ["reverb", "90", "50", "100", "0", "60"])
    elif condition == "telephone":
        audio = sox(wav_bytes(audio), ["rate", "8000", "sinc", "300-3400"])
    elif condition in ("loud", "quiet"):
        peak = float(np.abs(audio).max()) + 1e-9
        audio = gain(audio / peak, 12.0 if condition == "loud" else -40.0)
    return np.round(np.clip(audio, -1, 1) * 32767).astype(np.float32) / 32767
