"""The recipes' synthetic audio: the augmentation policy, the recording conditions, the intervals."""
import numpy as np
import pytest

from recipes.speech import conditions, intervals
from recipes.speech.synth import Augmentation, Speaker, perturb, wav_bytes

RATE = 16000


def _utterance():
    """A half-second harmonic tone between two stretches of digital silence, like a synthesizer's output."""
    t = np.arange(RATE // 2) / RATE
    tone = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((220, 440, 1000, 2500, 5000), 1))
    return np.concatenate([np.zeros(RATE // 2), 0.3 * tone, np.zeros(RATE // 2)]).astype(np.float32)


def _noised(audio):
    """Whether the leading silence carries noise: digital silence stays below a 16-bit step or two."""
    return float(np.abs(audio[: RATE // 4]).max()) > 4 / 32767


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_the_policy_keeps_its_share_of_clean_recordings_deterministically(share):
    speaker = Speaker("s", "flite", "awb", pitch=100, tempo=1.0)
    wav, policy = wav_bytes(_utterance()), Augmentation(clean_share=share, reverb_share=0.5)
    rendered = [perturb(wav, speaker, np.random.default_rng(seed), policy) for seed in range(120)]
    clean = np.mean([not _noised(a) for a in rendered])
    assert abs(clean - share) <= 0.1, clean
    again = perturb(wav, speaker, np.random.default_rng(7), policy)
    assert np.array_equal(again, rendered[7])


def test_the_policy_validates_and_round_trips():
    policy = Augmentation(clean_share=0.2, snr_db=(10, 50))
    assert Augmentation.from_config(policy.get_config()) == policy
    with pytest.raises(ValueError, match="clean_share"):
        Augmentation(clean_share=1.5)
    with pytest.raises(ValueError, match="snr_db"):
        Augmentation(snr_db=(30, 10))


def _band_energy(audio, low, high):
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(audio.size, 1 / RATE)
    return spectrum[(freqs >= low) & (freqs < high)].sum() / spectrum.sum()


def test_conditions_are_deterministic_and_do_what_they_say():
    clean = _utterance()
    for name in conditions.CONDITIONS:
        first = conditions.render(clean, name, seed=11)
        assert first.dtype == np.float32 and np.array_equal(first, conditions.render(clean, name, seed=11)), name
    # clean: the recording itself, 16-bit quantized.
    assert np.abs(conditions.render(clean, "clean", 0) - clean).max() <= 1 / 32767
    # telephone: nothing left above 3.4 kHz or below 300 Hz (the 5 kHz and 220 Hz partials are gone).
    phone = conditions.render(clean, "telephone", 0)
    assert _band_energy(clean, 4000, 8000) > 0.01 and _band_energy(phone, 4000, 8000) < 1e-4
    assert _band_energy(clean, 0, 250) > 0.2 and _band_energy(phone, 0, 250) < 0.01
    # noise: an SNR in the old training range, 5-30 dB.
    noisy = conditions.render(clean, "noise", 3)
    snr = 10 * np.log10(np.mean(clean ** 2) / np.mean((noisy - clean) ** 2))
    assert 4 < snr < 31, snr
    # far-field: reverberation spreads energy into the silence after the tone.
    tail = slice(RATE, RATE + RATE // 5)
    assert np.abs(conditions.render(clean, "farfield", 0)[tail]).max() > 0.01 > np.abs(clean[tail]).max()
    # loud clips, quiet sits at -40 dBFS.
    assert np.abs(conditions.render(clean, "loud", 0)).max() == pytest.approx(1.0, abs=1e-4)
    assert np.abs(conditions.render(clean, "quiet", 0)).max() == pytest.approx(0.01, rel=0.01)
    with pytest.raises(ValueError, match="condition"):
        conditions.render(clean, "underwater", 0)


def test_speaker_bootstrap_intervals():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(8), 50)
    # Speakers differ a lot: the interval must be wide, far wider than an utterance bootstrap's.
    per_speaker = np.array([0.3, 0.9, 0.5, 1.0, 0.7, 0.4, 0.95, 0.6])
    scores = (rng.random(400) < per_speaker[groups]).astype(float)
    low, high = intervals.bootstrap(scores, groups)
    assert low < scores.mean() < high and high - low > 0.2
    # A model right on the same utterances plus one more of each speaker (who has an error left):
    # the paired interval is tight and above zero, though each model's own interval is wide.
    better = scores.copy()
    gained = [np.flatnonzero((scores == 0) & (groups == g))[0] for g in range(8)
              if ((scores == 0) & (groups == g)).any()]
    better[gained] = 1
    low, high = intervals.paired(better, scores, groups)
    assert 0 < low <= len(gained) / 400 <= high < 0.05
    with pytest.raises(ValueError, match="same utterances"):
        intervals.paired(scores, scores[:-1], groups)


def test_feature_normalizations():
    from recipes.speech import features
    rng = np.random.default_rng(0)
    loud = _utterance() + 0.01 * rng.normal(size=3 * RATE // 2).astype(np.float32)
    quiet = loud * 0.01
    per_utterance = [features.utterance_features(a) for a in (loud, quiet)]
    # Per-utterance CMVN: every band centred on zero (but for the frames stacking drops), and a
    # 40 dB gain moves the features little (the log floor aside).
    assert np.abs(per_utterance[0].reshape(-1, 64).mean(axis=0)).max() < 0.05
    assert np.abs(per_utterance[0] - per_utterance[1]).mean() < 0.2
    # Global: the raw energies, normalized by statistics of the training utterances, so the gain shows.
    raw = [features.utterance_features(a, "global") for a in (loud, quiet)]
    statistics = features.global_statistics([raw[0]])
    normalized = [features.normalize_globally(f, statistics) for f in raw]
    assert np.abs(normalized[0].mean(axis=0)).max() < 1e-3
    assert normalized[1].mean() < normalized[0].mean() - 5
    with pytest.raises(ValueError, match="normalize"):
        features.utterance_features(loud, "band")
