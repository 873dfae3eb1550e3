"""Random damage to models and diffs through `python -m device apply`: every outcome counted.

The golden base model (tests/golden) and its sparse and hash diffs are
damaged at random (flipped bits, plausible integers written over offsets and
lengths, truncation, appended junk) and applied through the device CLI's
`main`, in process, three ways: a damaged model with a good signed diff, a
good model with a damaged signed diff (the signature check), and a good
model with a damaged diff under --allow-unsigned (the parser behind it);
each case with both strategies (`--strategy inplace` and `copy`). A fourth
way damages the committed journal an in-place apply of the signed sparse
diff left (tests/golden/sparse.tfdiff-journal, signed the same way) and runs
`recover`. Each run is classified by its exit status and stderr:

- refused: exit 1 with one line, and the model's bytes unchanged;
- applied: exit 0 (a mutation that left the files valid; a recovered model
  must then be the diff's target);
- unexpected: exit 2 (the CLI's catch-all), an exception escaping `main`,
  a message of more than one line, or a model changed by a refused apply.

The target is 0 unexpected and 0 changed models.
"""
import contextlib
import hashlib
import io
import os
import shutil
import tempfile

import numpy as np

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "golden")


def mutations(data, count, seed):
    """Random damage to a file: flipped bits, overwritten words, truncation, appended junk."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        damaged = bytearray(data)
        kind = rng.integers(4)
        if kind == 0:
            for position in rng.integers(0, len(damaged), size=rng.integers(1, 8)):
                damaged[position] ^= 1 << int(rng.integers(8))
        elif kind == 1:  # a plausible-looking integer: an offset, a length, an index
            position = int(rng.integers(0, len(damaged) - 4))
            value = int(rng.choice([0, 1, 2**31 - 1, 2**32 - 1, len(data)]))
            damaged[position:position + 4] = value.to_bytes(4, "little")
        elif kind == 2:
            damaged = damaged[:int(rng.integers(0, len(damaged)))]
        else:
            damaged += bytes(rng.integers(0, 256, size=int(rng.integers(1, 64)), dtype=np.uint8))
        yield bytes(damaged)


def run(count=2000, seed=0):
    """`count` mutations (a sixth of them journals), each diff and model case under both strategies."""
    from device import signing

    outcomes = {"refused": 0, "applied": 0, "unexpected": 0, "model_changed": 0}
    examples = []
    with tempfile.TemporaryDirectory() as tmp:
        key, pub = os.path.join(tmp, "k.pem"), os.path.join(tmp, "k.pub")
        signing.keygen(key, pub)
        base = open(os.path.join(GOLDEN, "base.tflite"), "rb").read()
        diffs = {}
        for method in ("sparse", "hash"):
            signed = os.path.join(tmp, f"{method}.tfdiff")
            shutil.copyfile(os.path.join(GOLDEN, f"{method}.tfdiff"), signed)
            signing.sign(signed, key)
            diffs[method] = (open(os.path.join(GOLDEN, f"{method}.tfdiff"), "rb").read(),
                             open(signed, "rb").read())
        per_kind = count // 6
        cases = []
        for i, (method, (unsigned, signed)) in enumerate(diffs.items()):
            for strategy in ("inplace", "copy"):
                trust = ["--public-key", pub, "--strategy", strategy]
                cases += [("model", m, signed, trust) for m in mutations(base, per_kind // 2, seed + 3 * i)]
                cases += [("signed diff", base, d, trust) for d in mutations(signed, per_kind // 2, seed + 3 * i + 1)]
                cases += [("unsigned diff", base, d, ["--allow-unsigned", "--strategy", strategy])
                          for d in mutations(unsigned, (count // 2 - 2 * per_kind) // 2, seed + 3 * i + 2)]
        journal = _signed_journal(tmp, diffs["sparse"][1])
        cases += [("journal", base, j, ["--public-key", pub]) for j in mutations(journal, per_kind, seed + 7)]
        target = open(os.path.join(GOLDEN, "sparse-patched.tflite"), "rb").read()
        for kind, model_data, data, trust in cases:
            status, message, model_after = _run_case(tmp, kind, model_data, data, trust)
            changed = status != 0 and model_after != model_data
            if status == 0 and (kind != "journal" or model_after in (model_data, target)):
                outcomes["applied"] += 1
            elif status == 1 and "\n" not in message and not changed:
                outcomes["refused"] += 1
            else:
                outcomes["unexpected"] += 1
                if len(examples) < 5:
                    examples.append(f"{kind}: exit {status}: {message[:200]}")
            outcomes["model_changed"] += int(changed)
    return {"cases": len(cases), **outcomes, "examples": examples}


def _signed_journal(tmp, signed_sparse):
    """The golden sparse journal with the signed diff in place of the unsigned one (the same old values)."""
    from device import journal
    golden = open(os.path.join(GOLDEN, "sparse.tfdiff-journal"), "rb").read()[:-32]
    layout = journal.JournalHeader.LAYOUT
    fields = list(layout.unpack(golden[:layout.size]))
    old = golden[layout.size + fields[-1]:]
    fields[-1] = len(signed_sparse)
    body = layout.pack(*fields) + signed_sparse + old
    return body + hashlib.sha256(body).digest()


def _run_case(tmp, kind, model_data, data, trust):
    """(exit status or "escaped", stderr, model bytes after) of one apply (or recover, for a journal)."""
    from device.__main__ import main

    model, diff = os.path.join(tmp, "model.tflite"), os.path.join(tmp, "d.tfdiff")
    for name in os.listdir(tmp):
        if name.startswith("model.tflite."):
            os.unlink(os.path.join(tmp, name))
    with open(model, "wb") as f:
        f.write(model_data)
    with open(model + ".tfdiff-journal" if kind == "journal" else diff, "wb") as f:
        f.write(data)
    argv = ["recover", model] + trust if kind == "journal" else ["apply", model, diff] + trust
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            status = main(argv)
    except BaseException as e:  # noqa: BLE001 - what the fuzzer measures
        status, err = "escaped", io.StringIO(f"{type(e).__name__}: {e}")
    return status, err.getvalue().strip(), open(model, "rb").read()
