"""Which machine, software and commit a benchmark ran on."""
import datetime
import os
import platform
import subprocess


def describe():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout
        commit += "+uncommitted changes" if dirty.strip() else ""
    except OSError:
        commit = ""
    with open("/proc/meminfo") as f:
        mem_kb = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
    import numpy
    from tfdiff import keras  # noqa: F401  (TensorFlow loads quietly, as in every command of ours)
    import tensorflow
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "memory_gb": round(mem_kb / 2**20, 1), "python": platform.python_version(),
            "tensorflow": tensorflow.__version__, "numpy": numpy.__version__, "commit": commit}
