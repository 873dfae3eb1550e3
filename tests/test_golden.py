"""Golden files lock the formats (diff file v2 and v1, weight map, patch arithmetic), as in detools.

They were made once by tests/golden/make.py; a change that alters any byte
here changes the format and needs a version bump (docs/FORMAT.md). The v1
files (v1-*.tfdiff, made by make.py at commit bbab339) are the same diffs in
the old layout: today's reader must still read and apply them.
"""
import os
import shutil

import pytest

from device import applier, tflite
from device.format import decode

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")


@pytest.mark.parametrize("prefix", ["", "v1-"])
@pytest.mark.parametrize("method", ["sparse", "hash"])
def test_golden_diffs_decode_reencode_and_patch_byte_for_byte(method, prefix, tmp_path):
    path = os.path.join(GOLDEN, f"{prefix}{method}.tfdiff")
    data = open(path, "rb").read()
    diff = decode(data)
    assert diff.method == method and diff.generation == 1
    assert diff.version == (1 if prefix else 2)
    if not prefix:  # v2 diffs name the graph they are for: the golden base model's
        assert diff.graph_digest == tflite.graph_digest_of(os.path.join(GOLDEN, "base.tflite"))
    assert diff.to_bytes() == data
    model = tmp_path / "model.tflite"
    shutil.copyfile(os.path.join(GOLDEN, "base.tflite"), model)
    # apply checks the model's weights digest against the diff's base before writing
    result = applier.apply(model, path, allow_unsigned=True)
    assert result.status == "applied" and result.patched_elements > 0
    assert model.read_bytes() == open(os.path.join(GOLDEN, f"{method}-patched.tflite"), "rb").read()
