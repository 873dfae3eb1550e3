"""The weights digest: sha256 over a model's weights, how a diff names its base and its target.

Example:

>>> import numpy as np
>>> weights_digest({"out/0/kernel": np.zeros((2, 3), np.float32)}).hex()[:12]
'bdb269efe0f0'
"""
import hashlib
import struct

import numpy as np


class WeightsHasher:
    """sha256 of a model's weights: name, shape and bytes (float32, or int8 marked as such), in name order.

    Both sides hash Keras layout, so the server's fold and the device's
    .tflite agree when, and only when, they hold the same bits. Weights are
    fed one at a time, so a device never holds the whole model.
    """

    def __init__(self):
        self._sha = hashlib.sha256()
        self._previous = None

    def update(self, name, array):
        if self._previous is not None and name <= self._previous:
            raise ValueError(f"weights must come in name order: {name!r} after {self._previous!r}")
        self._previous = name
        int8 = np.asarray(array).dtype == np.int8
        array = np.ascontiguousarray(array, dtype="i1" if int8 else "<f4")
        # An int8 weight is marked, so it never hashes like float32 bytes that happen to match.
        self._sha.update(name.encode("utf-8") + (b"\0int8\0" if int8 else b"\0"))
        self._sha.update(struct.pack(f"<B{array.ndim}I", array.ndim, *array.shape))
        self._sha.update(array.reshape(-1).view(np.uint8))  # the bytes in place: no copy of a large weight

    def digest(self):
        return self._sha.digest()


def weights_digest(named_weights):
    """The WeightsHasher digest of a {name: array} dict."""
    hasher = WeightsHasher()
    for name in sorted(named_weights):
        hasher.update(name, named_weights[name])
    return hasher.digest()
