"""tfdiff: learn small, budgeted diffs between speech model generations.

    pip install .            the device: numpy, flatbuffers, cryptography (no TensorFlow)
    pip install ".[train]"   the server: TensorFlow, tf_keras, tfmot, LiteRT, ...

The train extra gives compatible ranges around the set measured to install
together on Python 3.11 (the README's "Versions"); requirements.lock freezes
that exact transitive set, and scripts/setup uses it as pip constraints. The
recipes and benchmarks are run from the checkout (`python -m recipes.fsc.run`),
as icefall's are, and are not installed.
"""
import re

from setuptools import find_packages, setup

# One version: device/__init__.py's (tfdiff re-exports it; CITATION.cff is checked against it by a test).
VERSION = re.search(r'^__version__ = "([^"]+)"', open("device/__init__.py").read(), re.M).group(1)

# The device extra is what a phone or Raspberry Pi needs to patch and run a
# model: no TensorFlow.
DEVICE = [
    "numpy>=1.21",  # the applier's float32 arithmetic
    "flatbuffers>=2.0",  # reads the .tflite container without TensorFlow
    "cryptography>=41",  # Ed25519 signature check of received diffs
]

setup(
    name="tfdiff",
    version=VERSION,
    license="Apache-2.0",
    description="Learned, budgeted neural diffs for on-device speech models",
    python_requires=">=3.9",
    packages=find_packages(include=["tfdiff", "tfdiff.*", "device", "device.*"]),
    # A plain install is what a device needs; the server's training stack is
    # the "train" extra, so `pip install .[device]` on a Pi pulls no TensorFlow.
    install_requires=DEVICE,
    extras_require={
        "device": DEVICE + ["ai-edge-litert>=1.0"],
        "train": [
            # 2.21 is the newest release with a matching tf-keras and tfmot.
            "tensorflow>=2.21,<2.22",
            # tfmot only speaks the Keras 2 API; tfdiff imports tf_keras itself.
            "tf-keras>=2.21,<2.22",
            # PolynomialDecay schedule and magnitude pruning of the diff variables.
            "tensorflow-model-optimization>=0.8.1,<0.9",
            # Only its pure-TF audio functions (spectrogram, melscale, masks): the
            # compiled kernels of 0.37.1 do not load on TF 2.21.
            "tensorflow-io>=0.37.1,<0.38",
            # WordPiece vocabularies and tokenizers for the recipes' text side.
            "keras-nlp>=0.32,<0.33",
            # The LiteRT interpreter: runs converted and patched .tflite models.
            "ai-edge-litert>=2.3,<3",
            "soundfile>=0.12",  # FLAC/WAV reading for the real corpora
            "matplotlib>=3.7",  # recipe and benchmark plots
            "tqdm>=4.60",  # progress bars of long recipe steps
            "scipy>=1.10",  # resampling espeak-ng audio to 16 kHz
        ],
        # Baselines of the wire benchmark (zipnn, which needs PyTorch, comes from scripts/bench).
        "bench": ["bsdiff4>=1.2", "zstandard>=0.20"],
        # wheel: the test of a plain install builds tfdiff's wheel offline; ruff: scripts/test lints first.
        # pytest 9.2 drops xdist's loadgroup suffix (pytest-dev/pytest-xdist#1386): the suite's groups
        # would silently stop sharing their fixtures; tests/conftest.py refuses to run if that happens.
        # jax[cpu] runs the Keras 3 example on the JAX backend (tests/test_keras3.py): about 80 MB, seconds to install.
        "test": ["pytest>=7,<9.2", "pytest-xdist>=3.5", "bsdiff4>=1.2", "zstandard>=0.20", "wheel>=0.40", "ruff>=0.17",
                 "jax[cpu]>=0.4.30"],
    },
    entry_points={"console_scripts": ["tfdiff=tfdiff.__main__:main", "tfdiff-device=device.__main__:main"]},
)
