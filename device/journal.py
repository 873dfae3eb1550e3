"""The applier's journal: every 4-byte word an update writes, with its old and new bits.

    header   "TFDJRNL3" | 32B base digest | 32B target digest | u64 model size
             | u32 chunk count | u32 generation before | u32 generation after
    chunk    u64 count | i64 words[count] | u32 old[count] | u32 new[count]
    trailer  32B sha256 of all the bytes above

A word is 4 bytes at file offset 4 * word: one float32 weight element, or
four int8 elements (an int8 update writes the words of the elements it
changes, their neighbours' bytes as they were). Old values make a replay
checkable (each word must hold its old or its new bits) and a finished journal an undo record: its inverse (old and new
swapped) is the journal of a rollback. The applier (device/applier.py)
decides when a journal is written, committed, replayed and kept.
"""
import hashlib
import os
import stat
import struct

import numpy as np

MAGIC = b"TFDJRNL3"


class JournalError(ValueError):
    """A journal that is damaged, or made for another model."""


class JournalHeader:
    LAYOUT = struct.Struct("<8s32s32sQIII")

    def __init__(self, base, target, model_size, chunks, generation_from, generation_to):
        self.base, self.target, self.model_size, self.chunks = base, target, model_size, chunks
        self.generation_from, self.generation_to = generation_from, generation_to

    def pack(self):
        return self.LAYOUT.pack(MAGIC, self.base, self.target, self.model_size, self.chunks,
                                self.generation_from, self.generation_to)

    @classmethod
    def unpack(cls, raw):
        magic, *fields = cls.LAYOUT.unpack(raw)
        return magic, cls(*fields)

    def inverse(self):
        return JournalHeader(self.target, self.base, self.model_size, self.chunks,
                             self.generation_to, self.generation_from)


class JournalWriter:
    """Writes header | chunks | sha256, then fsyncs; the caller commits by renaming."""

    def __init__(self, path, header):
        self.path, self.header = path, header

    def __enter__(self):
        # O_EXCL | O_NOFOLLOW: never write through a planted file or symlink.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        self.file, self.sha = os.fdopen(fd, "wb"), hashlib.sha256()
        self._put(self.header.pack())
        return self

    def _put(self, data):
        self.sha.update(data)
        self.file.write(data)

    def add(self, words, old, new):
        self._put(struct.pack("<Q", words.size))
        self._put(np.asarray(words, dtype="<i8").tobytes())
        self._put(np.asarray(old, dtype="<u4").tobytes())
        self._put(np.asarray(new, dtype="<u4").tobytes())

    def __exit__(self, kind, *rest):
        try:
            if kind is None:
                self.file.write(self.sha.digest())
                self.file.flush()
                os.fsync(self.file.fileno())
        finally:
            self.file.close()


def read_header(path, model_path):
    """The header of a complete journal that names this model's size; JournalError otherwise."""
    h = hashlib.sha256()
    with _open(path) as f:
        size = os.fstat(f.fileno()).st_size
        remaining = size - 32
        while remaining > 0:
            block = f.read(min(remaining, 1 << 20))
            h.update(block)
            remaining -= len(block)
        if remaining < 0 or f.read(32) != h.digest() or size < JournalHeader.LAYOUT.size + 32:
            raise JournalError(f"journal {path} is damaged: restore the model from a backup, or "
                               f"`python -m device recover --discard` it")
        f.seek(0)
        magic, header = JournalHeader.unpack(f.read(JournalHeader.LAYOUT.size))
    if magic != MAGIC or header.model_size != os.path.getsize(model_path):
        raise JournalError(f"journal {path} does not belong to {model_path}: "
                           f"`python -m device recover --discard {model_path}` deletes it")
    return header


def chunks(path, header):
    """(words, old, new) of each chunk of a checked journal, old and new as uint32 bits."""
    with _open(path) as f:
        end = os.fstat(f.fileno()).st_size - 32
        f.seek(JournalHeader.LAYOUT.size)
        for _ in range(header.chunks):
            (count,) = struct.unpack("<Q", f.read(8))
            if 16 * count > end - f.tell():
                raise JournalError(f"journal {path} is damaged: a chunk runs past its end")
            words = np.frombuffer(f.read(8 * count), dtype="<i8")
            if words.size and words.min() < 0:
                raise JournalError(f"journal {path} is damaged: a negative position")
            old = np.frombuffer(f.read(4 * count), dtype="<u4")
            yield words, old, np.frombuffer(f.read(4 * count), dtype="<u4")


def write_inverse(path, inverse_path, header):
    """The journal that undoes `path`: same positions, old and new swapped."""
    with JournalWriter(inverse_path, header.inverse()) as out:
        for words, old, new in chunks(path, header):
            out.add(words, new, old)


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
