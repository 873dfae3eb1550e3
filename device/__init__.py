"""The device side: patch a .tflite model in place with a received diff.

Needs only numpy, flatbuffers and cryptography (for signed diffs). The
converter (`device.convert`, device/converter.py) runs on the server, the
one module of this package that uses TensorFlow; it is imported on first
use (PEP 562), so the runtime never loads it.

Example (shell):

    python -m device apply model.tflite gen1.tfdiff --public-key server.pub.pem
"""
__version__ = "0.2.0"  # tfdiff's version: one release holds both packages

from .applier import ApplyError, UpdateCommittedError, apply, discard, recover, reset_state, rollback
from .format import DiffFormatError
from .signing import SignatureError
from .status import status
from .tflite import ModelFormatError

__all__ = ["apply", "recover", "discard", "rollback", "reset_state", "status", "convert", "UpdateCommittedError",
           "ApplyError", "ConversionError", "DiffFormatError",
           "ModelFormatError", "SignatureError"]


def __getattr__(name):
    if name in ("convert", "ConversionError"):
        from . import converter
        return getattr(converter, name)
    raise AttributeError(f"module 'device' has no attribute {name!r}")
