"""tfdiff: learn a small diff G between model generations, F_t+1 = F_t (+) G.

Example:

>>> import numpy as np, tfdiff
>>> from tfdiff import keras
>>> base = keras.Sequential([keras.Input((16,)), keras.layers.Dense(64, activation="relu"),
...                          keras.layers.Dense(4)])
>>> diff_model = tfdiff.wrap(base, tfdiff.SparseDiff(compression=10.0, end_step=20, frequency=5))
>>> diff_model.compile("adam", "mse")
>>> x, y = np.ones((64, 16), np.float32), np.zeros((64, 4), np.float32)
>>> _ = diff_model.fit(x, y, epochs=10, batch_size=16, verbose=0, callbacks=tfdiff.callbacks(diff_model))
>>> diff = tfdiff.extract(diff_model)
>>> diff.nbytes <= 4 * (16 * 64 + 64 + 64 * 4 + 4) / 10
True
>>> new_model = tfdiff.fold(base, diff)
"""
from . import _keras
from ._keras import keras
from device.format import DiffFormatError
from .baseline import compress_baseline, strip
from .diff import Diff
from .methods import HashDiff, SparseDiff
from .model import DiffMismatchError, callbacks, extract, fold, named_weights, wrap
from .wrapper import DiffWrapper

__version__ = "0.1.0"

__all__ = [
    "DiffWrapper", "SparseDiff", "HashDiff", "wrap", "callbacks", "extract", "fold",
    "compress_baseline", "strip", "Diff", "DiffFormatError", "DiffMismatchError",
    "named_weights", "keras",
]
del _keras
