"""Audio and its features: the one audio reader of the recipes, and the
paper's 64 log-mel filterbanks every 10 ms, stacked and downsampled by 3 to
30 ms frames, with SpecAugment for training.

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

_MEL = tf.signal.linear_to_mel_weight_matrix(NUM_MELS, 257, SAMPLE_RATE, 125.0, 7600.0)


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
