"""Keras 2 (tf_keras), the only Keras that tfmot speaks, without switching the user's tf.keras.

tfmot selects tf_keras by setting TF_USE_LEGACY_KERAS=1 when it is imported,
and TensorFlow reads that variable when `tf.keras` is first used, so
importing tfmot would silently turn the user's `tf.keras` from Keras 3 into
tf_keras for the whole process. tfdiff imports tf_keras itself, lets tfmot
import, then puts the variable back as it was: tfdiff's models are tf_keras
models, and `tf.keras` means what it meant before.
"""
import contextlib
import os
import sys


@contextlib.contextmanager
def _quiet_stderr():
    """TensorFlow's C++ start-up lines (absl logs before InitializeLog, CUDA probes on a CPU machine)
    ignore TF_CPP_MIN_LOG_LEVEL; they go to the null device. TFDIFF_VERBOSE=1 keeps them."""
    if os.environ.get("TFDIFF_VERBOSE"):
        yield
        return
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
with _quiet_stderr():
    import tensorflow as tf  # noqa: E402

    tf.config.list_physical_devices()  # the CUDA probe, now rather than at the first op

_LEGACY = "TF_USE_LEGACY_KERAS"
_saved = os.environ.get(_LEGACY)
if _saved is None:
    with _quiet_stderr():
        tf.keras.__name__  # noqa: B018  (resolve the lazy tf.keras now, as the user's environment says)
os.environ[_LEGACY] = "1"  # tfmot asks for it while it imports
try:
    with _quiet_stderr():
        import tf_keras as keras  # noqa: E402
        import tensorflow_model_optimization as tfmot  # noqa: E402
finally:
    if _saved is None:
        del os.environ[_LEGACY]
    else:
        os.environ[_LEGACY] = _saved

__all__ = ["tf", "keras", "tfmot"]
