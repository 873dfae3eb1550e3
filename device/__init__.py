"""The device side: patch a .tflite model in place with a received diff.

Needs only numpy, flatbuffers and cryptography (for signed diffs); the
converter (`device.convert`) is the one server-side module and imports
TensorFlow lazily.
"""
from .format import DiffFormatError

__all__ = ["DiffFormatError", "apply", "convert", "recover"]


def apply(*args, **kwargs):
    from .apply import apply as _apply
    return _apply(*args, **kwargs)


def recover(*args, **kwargs):
    from .apply import recover as _recover
    return _recover(*args, **kwargs)


def convert(*args, **kwargs):
    from .convert import convert as _convert
    return _convert(*args, **kwargs)
