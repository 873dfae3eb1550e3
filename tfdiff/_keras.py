"""Selects Keras 2 (tf_keras), the only Keras that tfmot speaks.

TensorFlow reads TF_USE_LEGACY_KERAS once, at its first import, so every
tfdiff module imports Keras from here and this module runs first.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402

__all__ = ["tf", "keras", "tfmot"]
