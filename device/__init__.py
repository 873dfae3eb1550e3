"""The device side: patch a .tflite model in place with a received diff.

Needs only numpy, flatbuffers and cryptography (for signed diffs). The
converter (`device.convert`) runs on the server; it imports TensorFlow
only when called.

Example (shell):

    python -m device apply model.tflite gen1.tfdiff --public-key server.pub.pem
"""
__version__ = "0.2.0"  # tfdiff's version: one release holds both packages

from .applier import ApplyError, UpdateCommittedError, apply, discard, recover, reset_state, rollback
from .converter import ConversionError, convert
from .format import DiffFormatError
from .signing import SignatureError
from .status import status
from .tflite import ModelFormatError

__all__ = ["apply", "recover", "discard", "rollback", "reset_state", "status", "convert", "UpdateCommittedError", "ApplyError", "ConversionError", "DiffFormatError",
           "ModelFormatError", "SignatureError"]
