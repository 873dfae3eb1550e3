"""Where a result came from: commit, command, machine, date, packages and seeds.

Every results file the recipes write carries one record per invocation
(a resumed run has several), so a figure in the docs can be traced to the
code and the machine that made it.

Example:

>>> record = provenance(seeds=[0])
>>> sorted(record)
['command', 'commit', 'date', 'dirty', 'machine', 'packages', 'python', 'seeds']
"""
import datetime
import os
import platform
import subprocess
import sys
from importlib import metadata

PACKAGES = ("tensorflow", "tf-keras", "tensorflow-model-optimization", "keras-nlp", "numpy", "ai-edge-litert",
            "keras", "keras-hub", "jax")
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def provenance(seeds):
    return {"commit": _git("rev-parse", "HEAD"), "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
            "command": _command(), "machine": machine(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "packages": _versions(), "seeds": list(seeds)}


def machine():
    """CPU model, cores and memory of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(memory / 2 ** 30, 1),
            "system": f"{platform.system()} {platform.machine()}"}


def _command():
    """The command line as typed: `python -m recipes.fsc.run ...` rather than the module's file path."""
    first = sys.argv[0] if sys.argv else ""
    if first.startswith(_ROOT + os.sep) and first.endswith(".py"):
        module = os.path.relpath(first, _ROOT)[:-3].replace(os.sep, ".")
        first = "-m " + (module[:-len(".__main__")] if module.endswith(".__main__") else module)
    return " ".join(["python", first, *sys.argv[1:]])


def _git(*args):
    try:
        return subprocess.run(["git", "-C", _ROOT, *args], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _versions():
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
