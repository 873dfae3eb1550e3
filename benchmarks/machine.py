"""Which machine, software and commit a benchmark ran on (recipes/speech/provenance.py reads them)."""
import datetime
import platform

from recipes.speech.provenance import machine, provenance


def describe():
    record, this = provenance(seeds=[]), machine()
    import numpy
    from tfdiff import keras  # noqa: F401  (TensorFlow loads quietly, as in every command of ours)
    import tensorflow
    commit = (record["commit"] or "")[:7] + ("+uncommitted changes" if record["dirty"] else "")
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "platform": platform.platform(), "cpu": this["cpu"], "cores": this["cores"],
            "memory_gb": this["memory_gb"], "python": platform.python_version(),
            "tensorflow": tensorflow.__version__, "numpy": numpy.__version__, "commit": commit}
