"""What a device records beside its model: the installed generation and the weights it belongs to.

MODEL.tfdiff-state holds two lines, "generation N" and "weights <sha256 hex>"
(the weights digest of the model that generation is); a model without one is
generation 0, as shipped. The same two lines name the copy strategy's records
(MODEL.tfdiff-swap: the model a swap makes; MODEL.tfdiff-previous-state: the
model kept for rollback). Records are written atomically and read without
following a symlink, at most 256 bytes.
"""
import os

from .files import write_atomic
from .passes import ApplyError

STATE_SUFFIX = ".tfdiff-state"
_MAX_BYTES = 256


def read_state(model_path):
    """(generation, recorded weights digest or None) from MODEL.tfdiff-state; (0, None) without one."""
    return read_record(os.fspath(model_path) + STATE_SUFFIX)


def write_state(model_path, generation, digest):
    write_atomic(os.fspath(model_path) + STATE_SUFFIX, record_text(generation, digest))


def record_text(generation, digest):
    return f"generation {generation}\nweights {digest.hex()}\n".encode()


def read_digest_record(path):
    """(generation, digest) of a record that must name a digest (the swap and previous-model records)."""
    generation, digest = read_record(path)
    if digest is None:
        raise ApplyError(f"{path} is damaged: expected 'generation N weights DIGEST'")
    return generation, digest


def read_record(path):
    """(generation, digest or None) of a record at `path`; (0, None) when there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return 0, None
    except OSError as e:
        raise ApplyError(f"cannot read {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        raw = f.read(_MAX_BYTES)
    damaged = ApplyError(f"{path} is damaged: expected 'generation N weights DIGEST'")
    fields = raw.decode("ascii", "replace").split()
    if (len(fields) not in (2, 4) or fields[0] != "generation" or not fields[1].isdigit()
            or int(fields[1]) >= 2**32 or (len(fields) == 4 and (fields[2] != "weights" or len(fields[3]) != 64))):
        raise damaged
    try:
        recorded = bytes.fromhex(fields[3]) if len(fields) == 4 else None
    except ValueError:
        raise damaged from None
    return int(fields[1]), recorded
