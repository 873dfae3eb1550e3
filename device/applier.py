"""Patch a .tflite model with a diff, in place and crash-safe.

The order of events, so that a kill at any instant leaves the old model or,
after the next call, the new one:

0. Trust: the diff file is read (at most `max_diff_bytes`), its signature
   checked over the raw bytes against the device's trusted key, and only
   then parsed. Its generation must be above the installed one.
1. Recover: if a journal from an interrupted run exists, finish it first.
2. Prepare, touching nothing: weight by weight, the new values are computed and streamed, with
   their file positions, into MODEL.tfdiff-journal.tmp, while the model's
   weights digest and the patched one are accumulated. The journal is
   fsynced, and kept only if the first digest is the diff's base and the
   second its target.
3. Commit: the journal is renamed to MODEL.tfdiff-journal. Before this
   rename the model is untouched and a stray .tmp is discarded; after it
   the update will complete.
4. Replay the journal into the model through a writable mmap, msync, fsync.
5. Record the new generation in MODEL.tfdiff-state (atomically), then
   delete the journal and fsync the directory. A replay after a crash
   rewrites the same state, so model and generation commit together.

Recovery replays a complete journal (the writes are idempotent) and
deletes it. With `out=...` the model is instead copied to a temporary file
next to `out`, the same plan is replayed there, and the copy is fsynced and
renamed over `out`.

Memory stays bounded: one weight at a time is read through the mmap (its
pages released afterwards), patched and streamed to the journal, so neither
the model nor the patch plan is ever held whole.
"""
import fcntl
import hashlib
import mmap
import os
import shutil
import struct

import numpy as np

from . import signing
from .format import DiffFormatError, WeightsHasher, decode, fsync_dir, read_bounded, replacing, write_atomic
from .patch import patched_values
from .tflite import ModelFormatError, TFLiteFile

JOURNAL_SUFFIX = ".tfdiff-journal"
STATE_SUFFIX = ".tfdiff-state"
LOCK_SUFFIX = ".tfdiff-lock"
# A public key beside the model (MODEL.tfdiff-key.pem) or in this variable is
# the device's trusted key when the caller names none.
KEY_SUFFIX = ".tfdiff-key.pem"
KEY_ENVIRONMENT = "TFDIFF_PUBLIC_KEY"
_JOURNAL_MAGIC = b"TFDJRNL2"
_JOURNAL_HEADER = struct.Struct("<8s32s32sQII")
_PAGE = mmap.PAGESIZE


class ApplyError(ValueError):
    """A diff that cannot be applied to this model; nothing was changed."""


class Result:
    """What an apply did: 'applied', or 'already' when the model was the target."""

    def __init__(self, status, path, diff, patched_elements=0):
        self.status, self.path, self.diff = status, path, diff
        self.patched_elements = patched_elements

    def __repr__(self):
        return f"Result({self.status!r}, {self.path!r}, patched_elements={self.patched_elements})"


def apply(model_path, diff_path, out=None, public_key=None, allow_unsigned=False, max_diff_bytes=None):
    """Apply the diff at `diff_path` to the .tflite at `model_path`.

    Args:
        model_path: the device's model; patched in place unless `out` is given.
        diff_path: the received diff file.
        out: write the patched model here instead (atomically).
        public_key: path of the trusted Ed25519 public key (PEM). Without
            it, $TFDIFF_PUBLIC_KEY, then MODEL.tfdiff-key.pem beside the
            model; with none of them the diff is refused.
        allow_unsigned: accept a diff without checking any signature (for
            development and for a server evaluating its own diffs).
        max_diff_bytes: refuse larger diff files (default 64 MiB).

    Returns:
        a Result: "applied" (with the count of patched elements), or
        "already" when the model already is the diff's target.

    Raises:
        DiffFormatError, ApplyError, ModelFormatError, signing.SignatureError,
        all ValueErrors with a one-line message; the model is then unchanged.

    Example (from the shell): python -m device apply model.tflite gen1.tfdiff --public-key k.pub
    """
    model_path = os.fspath(model_path)
    if not os.path.isfile(model_path):
        raise ApplyError(f"model {model_path} does not exist")
    data = read_bounded(diff_path, max_diff_bytes)
    if not allow_unsigned:
        signing.verify_bytes(data, trusted_key(model_path, public_key))
    diff = decode(data)

    with _locked(model_path):
        recover(model_path, _locked_already=True)
        installed = installed_generation(model_path)
        if diff.generation <= installed:
            if out is None and _digest_of(model_path) == diff.target_digest:
                return Result("already", model_path, diff)
            raise ApplyError(f"diff is generation {diff.generation}, but this model is already at "
                             f"generation {installed}; refusing to go back")
        if out is None:
            return _apply_in_place(model_path, diff)
        return _apply_to_copy(model_path, diff, os.fspath(out))


def trusted_key(model_path, public_key=None):
    """The path of the device's trusted public key; SignatureError if it has none."""
    for candidate in (public_key, os.environ.get(KEY_ENVIRONMENT), os.fspath(model_path) + KEY_SUFFIX):
        if candidate and (candidate is public_key or os.path.isfile(candidate)):
            return candidate
    raise signing.SignatureError(
        f"no trusted public key: give --public-key, set {KEY_ENVIRONMENT}, or install one at "
        f"{os.fspath(model_path) + KEY_SUFFIX} (--allow-unsigned skips the check, for development)")


def installed_generation(model_path):
    """The generation the model holds: 0 (as shipped) until a diff was applied to it."""
    path = os.fspath(model_path) + STATE_SUFFIX
    try:
        with open(path, "rb") as f:
            raw = f.read(64)
    except FileNotFoundError:
        return 0
    except OSError as e:
        raise ApplyError(f"cannot read {path}: {e.strerror}") from None
    fields = raw.decode("ascii", "replace").split()
    if len(fields) != 2 or fields[0] != "generation" or not fields[1].isdigit():
        raise ApplyError(f"{path} is damaged: expected 'generation N'")
    return int(fields[1])


def _write_state(model_path, generation):
    write_atomic(os.fspath(model_path) + STATE_SUFFIX, f"generation {generation}\n".encode())


def _digest_of(model_path):
    with open(model_path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        model = TFLiteFile(mm)
        digest = _digest(model)
        del model
    return digest


def recover(model_path, _locked_already=False):
    """Finish an update interrupted by a crash; returns True if one was found."""
    model_path = os.fspath(model_path)
    if not os.path.isfile(model_path):
        raise ApplyError(f"model {model_path} does not exist")
    if not _locked_already:
        with _locked(model_path):
            return recover(model_path, _locked_already=True)
    journal = model_path + JOURNAL_SUFFIX
    if os.path.lexists(journal + ".tmp"):
        os.unlink(journal + ".tmp")  # never committed: the model was not touched
    if not os.path.exists(journal):
        return False
    target, generation = _replay(model_path, journal)
    digest = _digest_of(model_path)
    if digest != target:
        raise ApplyError(f"journal replay left {model_path} with unexpected weights "
                         f"({digest.hex()[:12]}, expected {target.hex()[:12]})")
    _write_state(model_path, generation)
    os.unlink(journal)
    fsync_dir(os.path.dirname(os.path.abspath(model_path)))
    return True


# -- the two modes -----------------------------------------------------------
def _apply_in_place(model_path, diff):
    journal = model_path + JOURNAL_SUFFIX
    patched = _prepare(model_path, diff, journal + ".tmp")
    if patched is None:  # the weights already are the target: record its generation
        _write_state(model_path, diff.generation)
        return Result("already", model_path, diff)
    _crash_point("journal-written")
    os.replace(journal + ".tmp", journal)  # the commit point
    fsync_dir(os.path.dirname(os.path.abspath(journal)))
    _crash_point("journal-committed")
    _replay(model_path, journal)
    _crash_point("model-written")
    _write_state(model_path, diff.generation)
    os.unlink(journal)
    fsync_dir(os.path.dirname(os.path.abspath(model_path)))
    return Result("applied", model_path, diff, patched)


def _apply_to_copy(model_path, diff, out):
    with replacing(out) as tmp:
        plan = tmp + ".plan"
        try:
            patched = _prepare(model_path, diff, plan)
            if patched is not None:
                shutil.copyfile(model_path, tmp)
                _replay(tmp, plan)
        finally:
            if os.path.exists(plan):
                os.unlink(plan)
        if patched is None:
            shutil.copyfile(model_path, tmp)
    if patched is None:
        return Result("already", out, diff)
    _write_state(out, diff.generation)
    return Result("applied", out, diff, patched)


# -- preparing: every check happens here, before any write to the model ------
def _prepare(model_path, diff, plan_path):
    """Stream the patch, one weight at a time, into a journal file at `plan_path`.

    Returns the number of patched elements, or None (and no file) when the
    model already is the diff's target. Raises, leaving no file, on any
    mismatch: memory holds one weight at a time, never the model or the plan.
    """
    try:
        with open(model_path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            model = TFLiteFile(mm)
            weight_map = model.weight_map()
            entries = _check_entries(diff, weight_map)
            floats = _floats(mm)
            before, after = WeightsHasher(), WeightsHasher()
            patched = 0
            with _JournalWriter(plan_path, diff, os.path.getsize(model_path), len(entries)) as journal:
                for name in weight_map.names():
                    elements = _elements(model, weight_map, name)
                    values = floats[elements].astype(np.float32)
                    before.update(name, values.reshape(weight_map.shape(name)))
                    entry = entries.get(name)
                    if entry is not None:
                        positions = entry.indices if entry.method == "sparse" else np.arange(values.size)
                        new = patched_values(entry, values[positions], positions).astype("<f4")
                        values[positions] = new
                        journal.add(elements[positions], new)
                        patched += new.size
                    after.update(name, values.reshape(weight_map.shape(name)))
                    _release(mm, elements)
                    del elements, values
            del floats, model
    except BaseException:
        if os.path.exists(plan_path):
            os.unlink(plan_path)
        raise
    current, target = before.digest(), after.digest()
    if current != diff.base_digest:
        os.unlink(plan_path)
        if current == diff.target_digest:
            return None
        raise ApplyError(f"diff (generation {diff.generation}) is for base model "
                         f"{diff.base_digest.hex()[:12]}, but this model is {current.hex()[:12]}")
    if target != diff.target_digest:
        os.unlink(plan_path)
        raise ApplyError("patched weights do not match the diff's target digest; refusing to write")
    return patched


def _check_entries(diff, weight_map):
    entries = {}
    for entry in diff.entries:
        if entry.name not in weight_map.weights:
            raise ApplyError(f"diff patches weight {entry.name}, which this model does not have")
        if tuple(weight_map.shape(entry.name)) != tuple(entry.shape):
            raise ApplyError(f"weight {entry.name} has shape {weight_map.shape(entry.name)}, "
                             f"the diff expects {entry.shape}")
        if entry.name in entries:
            raise ApplyError(f"diff names weight {entry.name} twice")
        entries[entry.name] = entry
    return entries


def _elements(model, weight_map, name):
    """Index in the file, counted in float32s, of every element of a weight, in Keras order."""
    shape = weight_map.shape(name)
    size = int(np.prod(shape, dtype=np.int64))
    elements = np.empty(size, dtype=np.int64)
    seen = np.zeros(size, dtype=bool)
    for segment in weight_map.segments(name):  # bounds and overlaps: TFLiteFile.weight_map checked them
        start, _ = model.buffer_ranges[segment.buffer]
        first = start // 4 + segment.offset
        keys = segment.keras_indices()
        elements[keys] = np.arange(first, first + segment.count)
        seen[keys] = True
    if not seen.all():  # counts sum to size, so this proves each element is mapped exactly once
        raise ModelFormatError(f"weight map of {name} maps some elements twice and others never")
    return elements


def _floats(data):
    return np.frombuffer(data, dtype="<f4", count=len(data) // 4)


def _digest(model):
    """The weights digest of a .tflite model as it is on disk."""
    hasher = WeightsHasher()
    weight_map = model.weight_map()
    floats = _floats(model.data)
    for name in weight_map.names():
        elements = _elements(model, weight_map, name)
        hasher.update(name, floats[elements].reshape(weight_map.shape(name)))
        _release(model.data, elements)
    return hasher.digest()


def _release(data, elements, flush=False):
    """Drop the pages of a weight from our resident memory once it is done."""
    if not isinstance(data, mmap.mmap) or elements.size == 0:
        return
    start = 4 * int(elements.min()) // _PAGE * _PAGE
    end = min(len(data), 4 * int(elements.max()) + 4)
    if flush:
        data.flush(start, end - start)
    if hasattr(mmap, "MADV_DONTNEED"):
        data.madvise(mmap.MADV_DONTNEED, start, end - start)


# -- the journal ----------------------------------------------------------------
class _JournalWriter:
    """Writes header | chunks | sha256, then fsyncs; the caller commits by renaming."""

    def __init__(self, path, diff, model_size, chunks):
        self.path, self.header = path, _JOURNAL_HEADER.pack(
            _JOURNAL_MAGIC, diff.base_digest, diff.target_digest, model_size, chunks, diff.generation)

    def __enter__(self):
        # O_EXCL | O_NOFOLLOW: never write through a planted file or symlink.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        self.file, self.sha = os.fdopen(fd, "wb"), hashlib.sha256()
        self._put(self.header)
        return self

    def _put(self, data):
        self.sha.update(data)
        self.file.write(data)

    def add(self, elements, values):
        self._put(struct.pack("<Q", elements.size))
        self._put(elements.astype("<i8").tobytes())
        self._put(values.astype("<f4").tobytes())

    def __exit__(self, kind, *rest):
        try:
            if kind is None:
                self.file.write(self.sha.digest())
                self.file.flush()
                os.fsync(self.file.fileno())
        finally:
            self.file.close()


def _replay(model_path, journal):
    """Write a complete journal's values into the model, and fsync; returns (target digest, generation)."""
    size = os.path.getsize(journal)
    h = hashlib.sha256()
    with open(journal, "rb") as f:
        remaining = size - 32
        while remaining > 0:
            block = f.read(min(remaining, 1 << 20))
            h.update(block)
            remaining -= len(block)
        if remaining < 0 or f.read(32) != h.digest():
            raise ApplyError(f"journal {journal} is damaged; restore the model from a backup")
        f.seek(0)
        magic, _, target, model_size, chunks, generation = _JOURNAL_HEADER.unpack(f.read(_JOURNAL_HEADER.size))
        if magic != _JOURNAL_MAGIC or model_size != os.path.getsize(model_path):
            raise ApplyError(f"journal {journal} does not belong to {model_path}")
        with open(model_path, "r+b") as m, mmap.mmap(m.fileno(), 0) as mm:
            floats = _floats(mm)
            for i in range(chunks):
                (count,) = struct.unpack("<Q", f.read(8))
                elements = np.frombuffer(f.read(8 * count), dtype="<i8")
                floats[elements] = np.frombuffer(f.read(4 * count), dtype="<f4")
                _release(mm, elements, flush=True)
                if i == chunks // 2:
                    _crash_point("half-written")
            del floats
            mm.flush()
            os.fsync(m.fileno())
    return target, generation


class _locked:
    """An exclusive lock beside the model, so two appliers never interleave."""

    def __init__(self, model_path):
        self.path = model_path + LOCK_SUFFIX

    def __enter__(self):
        try:
            self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            raise ApplyError(f"cannot open the lock file {self.path}: {e.strerror}") from None
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _crash_point(stage):
    """Tests set TFDIFF_CRASH_AT to a stage name to die there like a power cut."""
    if os.environ.get("TFDIFF_CRASH_AT") == stage:
        os.kill(os.getpid(), 9)


__all__ = ["apply", "recover", "trusted_key", "installed_generation", "ApplyError", "DiffFormatError",
           "Result"]
