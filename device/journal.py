"""The applier's journal: the old bytes of every element an update changes, and nothing else.

Format 4 (written):

    header   "TFDJRNL4" | u64 model size | u32 generation before
             | u32 generation after | u64 update length
    update   the diff file exactly as the device received it (signed)
    old      for each weight the update patches, in name order: the bytes its
             changed elements held before the update, in ascending element
             position (4 per float32 element, 1 per int8 element)
    trailer  32B sha256 of all the bytes above

Which elements change follows from the diff (a sparse entry's positions;
every element for a hash entry) and their new values from the diff and the
old bytes, so the journal holds neither positions nor new values: 4 bytes
per changed float32 element, 1 per int8 element, and the diff once. Holding
the diff makes the journal one file: no second file to go missing or be
swapped, and the undo record needs nothing beside it.

Nothing in a journal is taken on trust. Before a replay writes anything, the
applier recomputes every element's new value, checks that the model holds
the old or the new value at each, and hashes the weights the replay would
leave: they must be the signed diff's target (forward) or base (backward).
The diff's signature is checked again against the device's keys before a
replay, so a planted or damaged journal is refused with the model untouched.

Format 3 (TFDJRNL3, earlier versions; read, never written):

    header   "TFDJRNL3" | 32B base digest | 32B target digest | u64 model size
             | u32 chunk count | u32 generation before | u32 generation after
    chunk    u64 count | i64 words[count] | u32 old[count] | u32 new[count]
    trailer  32B sha256 of all the bytes above

A word is 4 bytes at file offset 4 * word. A format 3 journal left by an
interrupted update still replays, and one kept as the undo record still
rolls back (its old and new bits swapped). The applier (device/applier.py)
decides when a journal is written, committed, replayed and kept.
"""
import hashlib
import os
import stat
import struct

import numpy as np

MAGIC = b"TFDJRNL4"
MAGIC_V3 = b"TFDJRNL3"
_DIGEST = 32
_READ_BLOCK = 1 << 20


class JournalError(ValueError):
    """A journal that is damaged, or made for another model."""


class JournalHeader:
    """Format 4: the model's size, the generations before and after, the length of the update it holds."""

    LAYOUT = struct.Struct("<8sQIIQ")
    version = 4

    def __init__(self, model_size, generation_from, generation_to, update_bytes):
        self.model_size, self.update_bytes = model_size, update_bytes
        self.generation_from, self.generation_to = generation_from, generation_to

    def pack(self):
        return self.LAYOUT.pack(MAGIC, self.model_size, self.generation_from, self.generation_to, self.update_bytes)


class JournalHeaderV3:
    """Format 3: base and target digests, model size, chunk count, generations."""

    LAYOUT = struct.Struct("<8s32s32sQIII")
    version = 3

    def __init__(self, base, target, model_size, chunks, generation_from, generation_to):
        self.base, self.target, self.model_size, self.chunks = base, target, model_size, chunks
        self.generation_from, self.generation_to = generation_from, generation_to


class JournalWriter:
    """Writes header | update | old bytes | sha256, then fsyncs; the caller commits by renaming."""

    def __init__(self, path, model_size, generation_from, generation_to, update):
        self.path, self.update = path, update
        self.header = JournalHeader(model_size, generation_from, generation_to, len(update))

    def __enter__(self):
        # O_EXCL | O_NOFOLLOW: never write through a planted file or symlink.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        self.file, self.sha = os.fdopen(fd, "wb"), hashlib.sha256()
        self._put(self.header.pack())
        self._put(self.update)
        return self

    def _put(self, data):
        self.sha.update(data)
        self.file.write(data)

    def add(self, old):
        """The old values of one weight's changed elements (float32 or int8), in ascending position."""
        self._put(np.ascontiguousarray(old).view(np.uint8).tobytes())

    def __exit__(self, kind, *rest):
        try:
            if kind is None:
                self.file.write(self.sha.digest())
                self.file.flush()
                os.fsync(self.file.fileno())
        finally:
            self.file.close()


def read_header(path, model_path):
    """The header (format 4 or 3) of a complete journal that names this model's size; JournalError otherwise."""
    damaged = JournalError(f"journal {path} is damaged: restore the model from a backup, or "
                           f"`tfdiff-device recover --discard {model_path}` deletes it")
    h = hashlib.sha256()
    with _open(path) as f:
        size = os.fstat(f.fileno()).st_size
        remaining = size - _DIGEST
        while remaining > 0:
            block = f.read(min(remaining, _READ_BLOCK))
            h.update(block)
            remaining -= len(block)
        if remaining < 0 or f.read(_DIGEST) != h.digest():
            raise damaged
        f.seek(0)
        layout = {MAGIC: JournalHeader, MAGIC_V3: JournalHeaderV3}.get(f.read(8))
        if layout is None or size < layout.LAYOUT.size + _DIGEST:
            raise damaged
        f.seek(0)
        header = layout(*layout.LAYOUT.unpack(f.read(layout.LAYOUT.size))[1:])
    if header.version == 4 and header.update_bytes > size - JournalHeader.LAYOUT.size - _DIGEST:
        raise damaged
    if header.model_size != os.path.getsize(model_path):
        raise JournalError(f"journal {path} does not belong to {model_path}: "
                           f"`tfdiff-device recover --discard {model_path}` deletes it")
    return header


def read_update(path, header):
    """The diff a checked format 4 journal holds, as bytes (its signature is the caller's to check)."""
    with _open(path) as f:
        f.seek(JournalHeader.LAYOUT.size)
        return f.read(header.update_bytes)


class OldBytes:
    """The old bytes of a checked format 4 journal, read in order: `take(count, dtype)` per weight, then `finish()`."""

    def __init__(self, path, header):
        self.path = path
        self.file = _open(path)
        self.end = os.fstat(self.file.fileno()).st_size - _DIGEST
        self.file.seek(JournalHeader.LAYOUT.size + header.update_bytes)

    def take(self, count, dtype):
        dtype = np.dtype(dtype)
        wanted = count * dtype.itemsize
        if wanted > self.end - self.file.tell():
            raise JournalError(f"journal {self.path} does not belong to this update: it ends early")
        return np.frombuffer(self.file.read(wanted), dtype=dtype)

    def finish(self):
        if self.file.tell() != self.end:
            raise JournalError(f"journal {self.path} does not belong to this update: it holds more bytes")

    def close(self):
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def chunks_v3(path, header):
    """(words, old, new) of each chunk of a checked format 3 journal, old and new as uint32 bits."""
    with _open(path) as f:
        end = os.fstat(f.fileno()).st_size - _DIGEST
        f.seek(JournalHeaderV3.LAYOUT.size)
        for _ in range(header.chunks):
            (count,) = struct.unpack("<Q", f.read(8))
            if 16 * count > end - f.tell():
                raise JournalError(f"journal {path} is damaged: a chunk runs past its end")
            words = np.frombuffer(f.read(8 * count), dtype="<i8")
            if words.size and words.min() < 0:
                raise JournalError(f"journal {path} is damaged: a negative position")
            old = np.frombuffer(f.read(4 * count), dtype="<u4")
            yield words, old, np.frombuffer(f.read(4 * count), dtype="<u4")


def _open(path):
    """A journal or undo record, never through a symlink (a planted link could name another device's)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise JournalError(f"cannot open journal {path}: {e.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise JournalError(f"journal {path} is not a regular file")
    return os.fdopen(fd, "rb")
