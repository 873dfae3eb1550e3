"""Audio and its features: the one audio reader of the recipes, and the
paper's 64 log-mel filterbanks every 10 ms, stacked and downsampled by 3 to
30 ms frames, with SpecAugment and a vocal-tract-length warp for training.

Computed with core TensorFlow ops (tf.signal); SpecAugment uses
tensorflow-io's pure-TF `freq_mask` / `time_mask`.
"""
import warnings

import numpy as np
import soundfile

from tfdiff import keras  # noqa: F401  (selects tf_keras before TensorFlow loads)
import tensorflow as tf

SAMPLE_RATE = 16000
NUM_MELS = 64
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
STACK = 3  # 3 x 10 ms -> one 30 ms frame
FEATURE_DIM = NUM_MELS * STACK

LOWEST_HZ, HIGHEST_HZ = 125.0, 7600.0
_MEL = tf.signal.linear_to_mel_weight_matrix(NUM_MELS, 257, SAMPLE_RATE, LOWEST_HZ, HIGHEST_HZ)


def read_audio(path):
    """Mono float32 samples of a 16 kHz wav or flac file (channels averaged)."""
    audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise ValueError(f"{path}: expected {SAMPLE_RATE} Hz audio, got {rate} Hz")
    return audio.mean(axis=1)


@tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
def log_mel(audio):
    """[frames, 64] log-mel energies of 16 kHz audio."""
    spectrum = tf.abs(tf.signal.stft(audio, WINDOW, HOP, fft_length=512, pad_end=True)) ** 2
    return tf.math.log(tf.matmul(spectrum, _MEL) + 1e-6)


def stack_frames(features, stack=STACK):
    """[frames, d] -> [frames // stack, d * stack]: stacked and downsampled."""
    frames = features.shape[0] // stack * stack
    return features[:frames].reshape(frames // stack, -1)


NORMALIZATIONS = ("utterance", "global")


def utterance_features(audio, normalize="utterance"):
    """30 ms features [frames, 192] of one utterance, as float32 numpy.

    `normalize`: "utterance" subtracts each band's mean over the utterance and
    divides by its deviation (per-utterance CMVN); "global" leaves the log-mel
    energies as they are, for `normalize_globally` with the training set's
    statistics.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"`normalize` must be one of {NORMALIZATIONS}. Received: normalize={normalize!r}")
    mel = log_mel(tf.constant(audio, tf.float32)).numpy()
    if normalize == "utterance":
        mel = (mel - mel.mean(axis=0)) / (mel.std(axis=0) + 1e-5)
    return stack_frames(mel).astype(np.float32)


def global_statistics(utterances):
    """(mean, deviation) of each feature over every frame of the (training) utterances."""
    frames = np.concatenate(utterances)
    return frames.mean(axis=0), frames.std(axis=0) + 1e-5


def normalize_globally(features, statistics):
    mean, deviation = statistics
    return ((features - mean) / deviation).astype(np.float32)


def fit_length(features, frames):
    """Crop or left-pad with zeros to exactly `frames` frames.

    Left padding keeps the speech next to the last frame, whose state the
    encoders use; training and inference pad the same way.
    """
    if features.shape[0] >= frames:
        return features[-frames:]
    pad = np.zeros((frames - features.shape[0], features.shape[1]), features.dtype)
    return np.concatenate([pad, features])


def spec_augment(features, freq_param=12, time_param=6, masks=2):
    """SpecAugment on one stacked [frames, 192] tensor (tensorflow-io's masks).

    Masks act on the 10 ms, 64-band view, so a frequency mask hides the same
    bands in all three stacked frames.
    """
    with warnings.catch_warnings():  # 0.37's compiled kernels do not load on TF 2.21; its pure-TF masks do
        warnings.simplefilter("ignore")
        import tensorflow_io as tfio

    shape = tf.shape(features)
    mel = tf.reshape(features, [-1, NUM_MELS])
    for _ in range(masks):
        mel = tfio.audio.freq_mask(mel, param=freq_param)
        mel = tfio.audio.time_mask(mel, param=time_param * STACK)
    return tf.reshape(mel, shape)


def _mel(hz):
    return 1127.0 * tf.math.log1p(hz / 700.0)  # tf.signal's mel scale


def _hz(mel):
    return 700.0 * tf.math.expm1(mel / 1127.0)


def warp_frequencies(features, max_warp):
    """Vocal tract length perturbation (Jaitly and Hinton, 2013) on one stacked [frames, 192] tensor.

    A speaker's formants sit higher or lower by the length of their vocal
    tract. Each call draws a factor a in [1 - max_warp, 1 + max_warp] and
    gives band i the value the features had at a times band i's centre
    frequency (linear between bands; past the top band, the top band), so
    training hears formants the training speakers do not have.

    Example:

    >>> x = tf.reshape(tf.range(2 * FEATURE_DIM, dtype=tf.float32), [2, FEATURE_DIM])
    >>> bool(tf.reduce_max(tf.abs(warp_frequencies(x, 0.0) - x)) < 1e-2)
    True
    """
    if not 0 <= max_warp < 1:
        raise ValueError(f"`max_warp` must be in [0, 1). Received: max_warp={max_warp!r}")
    shape = tf.shape(features)
    mel = tf.reshape(features, [-1, NUM_MELS])
    # The centres of the 64 triangles linear_to_mel_weight_matrix builds: evenly spaced in mel.
    low, high = _mel(tf.constant(LOWEST_HZ)), _mel(tf.constant(HIGHEST_HZ))
    spacing = (high - low) / (NUM_MELS + 1)
    centres = low + spacing * tf.range(1, NUM_MELS + 1, dtype=tf.float32)
    factor = tf.random.uniform([], 1.0 - max_warp, 1.0 + max_warp)
    source = tf.clip_by_value((_mel(_hz(centres) * factor) - low) / spacing - 1.0, 0.0, NUM_MELS - 1.0)
    below = tf.floor(source)
    above = tf.minimum(below + 1.0, NUM_MELS - 1.0)
    share = source - below
    warped = (tf.gather(mel, tf.cast(below, tf.int32), axis=1) * (1.0 - share)
              + tf.gather(mel, tf.cast(above, tf.int32), axis=1) * share)
    return tf.reshape(warped, shape)
