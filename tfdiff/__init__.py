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
>>> diff = tfdiff.extract(diff_model, generation=1)
>>> diff.nbytes <= 4 * (16 * 64 + 64 + 64 * 4 + 4) / 10
True
>>> new_model = tfdiff.fold(base, diff)
"""
# Names load on first use (PEP 562), so `python -m tfdiff show` and a device
# install without TensorFlow can import tfdiff; only the names that train
# or fold models import TensorFlow.
_EXPORTS = {
    "DiffWrapper": ".wrapper", "SparseDiff": ".methods", "HashDiff": ".methods", "LowRankDiff": ".methods",
    "SeedDiff": ".methods", "DiffMethod": ".methods",
    "wrap": ".model",
    "callbacks": ".model", "extract": ".model", "fold": ".model", "named_weights": ".model",
    "weight_variables": ".naming", "fold_batchnorm": ".batchnorm",
    "DiffMismatchError": ".diff", "DiffCutWarning": ".model", "load_model": ".model",
    "compress_baseline": ".baseline", "strip": ".baseline",
    "Diff": ".diff", "compose": ".diff", "BudgetError": ".budget", "budget_bytes": ".budget",
    "compressed_nbytes": ".baseline", "keras": "._keras", "Int8Model": ".quantized",
    "DeviceModel": ".device_model", "posthoc_diff": ".posthoc", "weight_sensitivity": ".allocation",
}

from device import __version__  # noqa: E402, F401  (one version for both packages)

__all__ = sorted(_EXPORTS) + ["DiffFormatError"]

from device.format import DiffFormatError  # noqa: E402  (numpy only)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tfdiff' has no attribute {name!r}")
    import importlib
    try:
        module = importlib.import_module(_EXPORTS[name], __name__)
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in ("tensorflow", "tf_keras", "tensorflow_model_optimization"):
            raise ImportError(f"tfdiff.{name} trains or folds models and needs the training stack, "
                              f"which this install lacks ({e.name}): pip install 'tfdiff[train]'") from None
        raise
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
