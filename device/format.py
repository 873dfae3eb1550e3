"""The diff file: a versioned, little-endian, self-describing container.

Layout of version 2, written today (docs/FORMAT.md has the prose):

    header   magic "TFDIFF" | u16 version=2 | u32 generation
             | 32B base digest | 32B target digest | 32B graph digest | u32 entry count
             | u8 coding (0 raw, 1 LZMA2) | u32 entries' raw length
    entries  the entries, raw or LZMA2-compressed (raw stream, preset 9e)
    entry    u16 name length | name (utf-8) | u8 rank | u32 dims[rank]
             | u8 method | [hash: u32 seed | u8 num_hashes] [lowrank: u32 inner] [seed: u32 seed | u32 inner]
             | u8 value dtype | u32 count | payload
               value dtype: 1 float16, 2 float32, 3 int8 (deltas in quantized units,
               only on the int8 weights of a quantized model: device/patch.py)
               sparse payload: u32 index-block bytes | LEB128 gaps | values
               hash payload:   values (the table A)
               lowrank payload: values: A (rows x inner) then B (inner x columns),
                 row-major, rows x columns the weight as a matrix (device/patch.py
                 matrix_dims); 1 <= inner <= min(rows, columns)
               seed payload: values: d (inner) then b (columns), the scalings of the
                 bases U and V drawn from the seed (device/patch.py seed_bases);
                 1 <= inner <= min(rows, columns, MAX_SEED_INNER)
    trailer  32B sha256 of all the bytes above
    [sig]    "SIG1" | 64B Ed25519 signature of all the bytes above "SIG1"

Entries for the same weight apply in file order (a composed catch-up diff).
Version 1, still read, had one method, seed and num_hashes for the whole
file, in the header after the version: u8 method | u8 num_hashes | u32 seed.

Read in three layers, like bsdiff4's format.py: `read_diff` takes a stream,
`decode` bytes, `load` a path. Every malformed input raises DiffFormatError
with a one-line reason; nothing here writes to disk except `save`, which
writes through device/files.py: a temporary file renamed into place.
"""
import hashlib
import lzma
import struct
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from .files import write_atomic
from .patch import matrix_dims

MAGIC = b"TFDIFF"
VERSION = 2
VERSIONS = (1, 2)
METHODS = {1: "sparse", 2: "hash", 3: "lowrank", 4: "seed"}
MAX_SEED_INNER = 1024  # a seed entry's bases are regenerated on the device: bounded work per element
METHOD_IDS = {name: code for code, name in METHODS.items()}
VALUE_DTYPES = {1: np.float16, 2: np.float32, 3: np.int8}
VALUE_DTYPE_IDS = {np.dtype(t): code for code, t in VALUE_DTYPES.items()}
SIGNATURE_MAGIC = b"SIG1"
SIGNATURE_BYTES = len(SIGNATURE_MAGIC) + 64
_HEADER = struct.Struct("<6sHI32s32s32sI")
UNBOUND = b"\0" * 32  # the graph digest of a diff not bound to one .tflite graph
_HEADER_V1 = struct.Struct("<6sHBBII32s32sI")
_HASH_FIELDS = struct.Struct("<IB")
_LOWRANK_FIELDS = struct.Struct("<I")
_SEED_FIELDS = struct.Struct("<II")
_CODING = struct.Struct("<BI")
# Entropy coding of the entries: LZMA2 in a raw stream (no container bytes).
# Values and LEB128 gaps are far from random, and the bytes saved carry
# nothing else: what xz would still squeeze from a raw file.
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
MAX_ENTRIES_BYTES = 1 << 30


def _inflation_limit(packed_bytes):
    """The most a compressed entries block may inflate to: trained values compress well under 8x,
    so a reader never holds more than 8 times what it read (no decompression bomb)."""
    return min(MAX_ENTRIES_BYTES, 8 * packed_bytes + 65536)
_DIGEST = 32
# Bytes of a diff file that are not entries: the header and the sha256 trailer.
FILE_OVERHEAD_BYTES = _HEADER.size + _CODING.size + _DIGEST


class DiffFormatError(ValueError):
    """A diff file that cannot be read: truncated, corrupted, or foreign."""


@dataclass
class Entry:
    """The diff of one Keras weight.

    `indices` (sparse only) are sorted row-major positions in the weight;
    `values` are the stored numbers, exactly as fold and apply use them;
    `seed` and `num_hashes` (hash only) name the hash functions; `inner`
    (lowrank) is r, the inner dimension of the factors A (rows x r) and B
    (r x columns) that `values` holds, in that order; a seed entry's
    `seed` draws its bases U (rows x r) and V (r x columns), `inner` is r,
    and `values` holds d (r) then b (columns).
    """

    name: str
    shape: Tuple[int, ...]
    method: str
    values: np.ndarray
    indices: Optional[np.ndarray] = None
    seed: int = 0
    num_hashes: int = 0
    inner: int = 0

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class DiffFile:
    """A decoded diff: what the device needs to turn F_t into F_t+1.

    `method` is "sparse" or "hash" when every entry uses it, "mixed" for a
    composed diff that chains both. `version` is the format it was read in
    (or will be written in): a v1 file re-encodes as v1.
    """

    method: str
    entries: List[Entry]
    base_digest: bytes
    target_digest: bytes
    generation: int = 0
    seed: int = 0
    num_hashes: int = 0
    signature: Optional[bytes] = field(default=None, repr=False)
    version: int = VERSION
    graph_digest: bytes = field(default=UNBOUND, repr=False)

    # -- bytes layer -------------------------------------------------------
    def unsigned_bytes(self):
        return self._encoded(b"".join(encode_entry(entry, self.version) for entry in self.entries))

    def to_bytes(self):
        return self._signed(self.unsigned_bytes())

    def _encoded(self, raw, coded=None):
        """The unsigned file around the raw entries; v2 codes them, or takes `coded` (coding, block) as read."""
        if self.version == 1:
            body = _HEADER_V1.pack(MAGIC, 1, METHOD_IDS[self.method], self.num_hashes, self.seed,
                                   self.generation, self.base_digest, self.target_digest, len(self.entries)) + raw
        else:
            coding, block = coded or _code_entries(raw)
            body = (_HEADER.pack(MAGIC, self.version, self.generation, self.base_digest, self.target_digest,
                                 self.graph_digest, len(self.entries)) + _CODING.pack(coding, len(raw)) + block)
        return body + hashlib.sha256(body).digest()

    def _signed(self, unsigned):
        return unsigned if self.signature is None else unsigned + SIGNATURE_MAGIC + self.signature

    @property
    def nbytes(self):
        """Bytes on the wire: the length of the saved file."""
        return len(self.to_bytes())

    # -- file layer --------------------------------------------------------
    def save(self, path):
        """Write atomically: a reader sees the old file or the new, never half."""
        write_atomic(path, self.to_bytes())

    @classmethod
    def load(cls, path, max_bytes=None):
        """Read and check a diff file (v1 or v2).

        Args:
            path: the .tfdiff file.
            max_bytes: refuse larger files, unread (default 64 MiB).

        Returns:
            the decoded diff; its signature, if any, is kept but not verified
            (`device.signing.verify_bytes` checks it over the raw bytes).

        Raises:
            DiffFormatError: a file too large, truncated, corrupted, foreign
                or not canonically encoded, with a one-line reason.
        """
        return decode(read_bounded(path, max_bytes), cls)


# The largest diff a device reads unless told otherwise: a 10x sparse diff of
# a 64M-parameter model is ~26 MB.
MAX_DIFF_BYTES = 64 << 20


def read_bounded(path, max_bytes=None):
    """The bytes of the file at `path`, refusing (DiffFormatError) more than `max_bytes`.

    Reads at most max_bytes + 1 bytes whatever the file claims, so a device
    file or a pipe (/dev/zero) cannot exhaust memory.
    """
    limit = MAX_DIFF_BYTES if max_bytes is None else int(max_bytes)
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise DiffFormatError(f"cannot read diff {path}: {e.strerror}") from None
    if len(data) > limit:
        raise DiffFormatError(f"diff {path} is larger than the {limit}-byte limit")
    return data


# -- entries -----------------------------------------------------------------
def entry_header_bytes(name, rank, method):
    """Bytes an entry costs before its indices and values: name, shape, method, counts."""
    method_fields = 1 + {"sparse": 4, "hash": _HASH_FIELDS.size, "lowrank": _LOWRANK_FIELDS.size,
                         "seed": _SEED_FIELDS.size}[method]
    return 2 + len(name.encode("utf-8")) + 1 + 4 * rank + method_fields + 1 + 4


def encode_entry(entry, version=VERSION):
    """The bytes of one entry as a diff file holds it (what the entry costs on the wire)."""
    values = np.ascontiguousarray(entry.values)
    return _entry_head(entry, version) + values.astype(values.dtype.newbyteorder("<"), copy=False).tobytes()


def entry_nbytes(entry, version=VERSION):
    """len(encode_entry(entry)), without copying the values."""
    return len(_entry_head(entry, version)) + np.asarray(entry.values).nbytes


def _entry_head(entry, version):
    """An entry's bytes before its values: name, shape, method fields, value header, sparse gaps."""
    name = entry.name.encode("utf-8")
    values = np.ascontiguousarray(entry.values)
    dtype_id = VALUE_DTYPE_IDS.get(values.dtype)
    if dtype_id is None:
        raise ValueError(f"entry {entry.name}: values must be float16, float32 or int8, got {values.dtype}")
    parts = [struct.pack("<H", len(name)), name,
             struct.pack(f"<B{len(entry.shape)}I", len(entry.shape), *entry.shape)]
    if version >= 2:
        parts.append(struct.pack("<B", METHOD_IDS[entry.method]))
        if entry.method == "hash":
            parts.append(_HASH_FIELDS.pack(entry.seed, entry.num_hashes))
        elif entry.method == "lowrank":
            parts.append(_LOWRANK_FIELDS.pack(entry.inner))
        elif entry.method == "seed":
            parts.append(_SEED_FIELDS.pack(entry.seed, entry.inner))
    parts.append(struct.pack("<BI", dtype_id, values.size))
    if entry.method == "sparse":
        gaps = encode_gaps(entry.indices)
        parts += [struct.pack("<I", len(gaps)), gaps]
    return b"".join(parts)


class _Reader:
    """Bounds-checked reads from a byte string, failing with DiffFormatError."""

    def __init__(self, data):
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n, what):
        if n < 0 or self.pos + n > len(self.data):
            raise DiffFormatError(f"diff is truncated: {what} runs past the end of the file")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt, what):
        s = struct.Struct("<" + fmt)
        return s.unpack(self.take(s.size, what))


def _read_entry(r, version, header_fields, index):
    (name_len,) = r.unpack("H", f"entry {index} name length")
    try:
        name = bytes(r.take(name_len, f"entry {index} name")).decode("utf-8")
    except UnicodeDecodeError:
        raise DiffFormatError(f"entry {index}: name is not valid utf-8") from None
    (rank,) = r.unpack("B", f"entry {name} rank")
    shape = r.unpack(f"{rank}I", f"entry {name} shape")
    if version == 1:
        method, seed, num_hashes = header_fields
    else:
        (method_id,) = r.unpack("B", f"entry {name} method")
        method, seed, num_hashes = _method(method_id), 0, 0
        if method == "hash":
            seed, num_hashes = r.unpack(_HASH_FIELDS.format[1:], f"entry {name} hash fields")
        elif method == "lowrank":
            (inner,) = r.unpack(_LOWRANK_FIELDS.format[1:], f"entry {name} lowrank fields")
        elif method == "seed":
            seed, inner = r.unpack(_SEED_FIELDS.format[1:], f"entry {name} seed fields")
    if method == "hash" and num_hashes < 1:
        raise DiffFormatError(f"entry {name}: hash diff with zero hash functions")
    dtype_id, count = r.unpack("BI", f"entry {name} value header")
    if dtype_id not in VALUE_DTYPES:
        raise DiffFormatError(f"entry {name}: unknown value dtype code {dtype_id}")
    dtype = np.dtype(VALUE_DTYPES[dtype_id]).newbyteorder("<")
    size = int(np.prod(shape, dtype=np.int64))
    indices = None
    if method == "sparse":
        (gap_bytes,) = r.unpack("I", f"entry {name} index block length")
        indices = decode_gaps(bytes(r.take(gap_bytes, f"entry {name} indices")), count, name)
        if count and indices[-1] >= size:
            raise DiffFormatError(f"entry {name}: index {indices[-1]} is outside shape {shape}")
    elif method == "hash" and not 1 <= count <= size:
        raise DiffFormatError(f"entry {name}: hash table of {count} values for {size} weights")
    elif method == "lowrank":
        if dtype.kind != "f":
            raise DiffFormatError(f"entry {name}: low-rank factors must be float16 or float32")
        rows, cols = matrix_dims(shape)
        if not 1 <= inner <= min(rows, cols) or count != inner * (rows + cols):
            raise DiffFormatError(f"entry {name}: low-rank factors of inner dimension {inner} and {count} values "
                                  f"for a {rows}x{cols} weight")
    elif method == "seed":
        rows, cols = matrix_dims(shape)
        if dtype.kind != "f" or not 1 <= inner <= min(rows, cols, MAX_SEED_INNER) or count != inner + cols:
            raise DiffFormatError(f"entry {name}: seed-basis scalings of inner dimension {inner} and {count} "
                                  f"{dtype} values for a {rows}x{cols} weight")
    raw = r.take(count * dtype.itemsize, f"entry {name} values")
    values = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
    if values.dtype.kind == "f" and not np.isfinite(values.sum(dtype=np.float64) * 0):  # no temporary array
        raise DiffFormatError(f"entry {name}: values are not all finite")
    return Entry(name, tuple(shape), method, values, indices, seed, num_hashes,
                 inner if method in ("lowrank", "seed") else 0)


# -- stream and bytes layers --------------------------------------------------
def read_diff(stream, cls=DiffFile):
    return decode(stream.read(), cls)


def decode(data, cls=DiffFile):
    """Parse and check a whole diff file; raises DiffFormatError on any fault."""
    # Views, not copies, of the bytes as received: a 64 MiB file costs about its own size again (the
    # decoded values), not a copy per check.
    data = memoryview(bytes(data) if not isinstance(data, bytes) else data)
    if len(data) < len(MAGIC) or data[:len(MAGIC)] != MAGIC:
        raise DiffFormatError("not a tfdiff file (bad magic)")
    if len(data) < 8:
        raise DiffFormatError("diff is truncated: shorter than its header")
    (version,) = struct.unpack_from("<H", data, 6)
    if version not in VERSIONS:
        raise DiffFormatError(f"diff format version {version} is not supported (this reader knows "
                              f"{', '.join(map(str, VERSIONS))})")
    signature = None
    body_end = len(data)
    if len(data) > SIGNATURE_BYTES and data[-SIGNATURE_BYTES:-64] == SIGNATURE_MAGIC:
        candidate_end = len(data) - SIGNATURE_BYTES
        if _digest_ok(data[:candidate_end]):
            body_end, signature = candidate_end, bytes(data[-64:])
    header = _HEADER_V1 if version == 1 else _HEADER
    if body_end < header.size + _DIGEST:
        raise DiffFormatError("diff is truncated: shorter than its header")
    if not _digest_ok(data[:body_end]):
        raise DiffFormatError("diff is corrupted or truncated: checksum mismatch")
    r = _Reader(data[:body_end - _DIGEST])
    if version == 1:
        (_, _, method_id, num_hashes, seed, generation, base, target, count) = header.unpack(
            r.take(header.size, "header"))
        header_fields = (_method(method_id), seed, num_hashes)
        raw = r.data[r.pos:]
    else:
        (_, _, generation, base, target, graph, count) = header.unpack(r.take(header.size, "header"))
        header_fields = None
        coding, raw_length = r.unpack(_CODING.format[1:], "entries header")
        block = r.take(len(r.data) - r.pos, "entries")
        raw = _decode_entries(coding, block, raw_length)
        r = _Reader(raw)
    entries = [_read_entry(r, version, header_fields, i) for i in range(count)]
    if r.pos != len(r.data):
        raise DiffFormatError(f"diff has {len(r.data) - r.pos} unexpected bytes after its entries")
    if version == 1:
        method, seed, num_hashes = header_fields
        graph = UNBOUND
    else:
        method, seed, num_hashes = file_fields(entries)
    diff = cls(method=method, entries=entries, base_digest=bytes(base), target_digest=bytes(target),
               generation=generation, seed=seed, num_hashes=num_hashes, signature=signature,
               version=version, graph_digest=bytes(graph))
    _check_canonical(data, raw, version, (method, seed, num_hashes, generation, base, target, graph,
                                         count, None if version == 1 else coding))
    return diff


def _check_canonical(data, raw, version, fields):
    """One diff, one encoding: refuse a file that would encode differently (padded varints, a stray byte).

    The reader already refused what could be written two ways inside the
    entries (a padded varint in a gap block, bytes after the last entry);
    every other entry field has one fixed-width form, so the entries are not
    encoded again. The header is packed again and compared; the block,
    checksum and signature are the received bytes by construction. The
    compressed block is compared as received: another liblzma may compress
    the same entries to other bytes, and both are the one diff the signature named.
    """
    method, seed, num_hashes, generation, base, target, graph, count, coding = fields
    if version == 1:
        header_again = _HEADER_V1.pack(MAGIC, 1, METHOD_IDS[method], num_hashes, seed, generation, base, target,
                                       count)
    else:
        header_again = _HEADER.pack(MAGIC, version, generation, base, target, graph, count) + _CODING.pack(
            coding, len(raw))
    if data[:len(header_again)] != header_again:
        raise DiffFormatError("diff is not canonically encoded")


def _code_entries(raw):
    """(coding, bytes): LZMA2 when it is smaller, else the raw entries."""
    packed = lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    if len(packed) < len(raw) <= _inflation_limit(len(packed)):
        return 1, packed
    return 0, raw  # incompressible, or so compressible (all zeros) that readers would refuse it


def _decode_entries(coding, block, raw_length):
    if coding == 0:
        if len(block) != raw_length:
            raise DiffFormatError("diff's raw entries do not have their declared length")
        return block
    if coding != 1:
        raise DiffFormatError(f"unknown entries coding {coding}")
    if raw_length > _inflation_limit(len(block)):
        raise DiffFormatError(f"diff's {len(block)} compressed bytes claim {raw_length} bytes of entries; "
                              "refusing to inflate them")
    inflater = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    try:
        raw = inflater.decompress(block, max_length=raw_length + 1)
    except lzma.LZMAError as e:
        raise DiffFormatError(f"diff's compressed entries are damaged: {e}") from None
    # Capped at the declared length (+1 to see an overlong stream): no bomb inflates further.
    if len(raw) != raw_length or not inflater.eof or inflater.unused_data:
        raise DiffFormatError("diff's compressed entries do not hold their declared length")
    return raw


def file_fields(entries):
    """(method, seed, num_hashes) a v2 diff reports for its entries.

    The method is "sparse" or "hash" when every entry uses it, "mixed"
    otherwise (an empty diff: "sparse"); a hash diff reports its first
    entry's seed and K (each entry carries its own).
    """
    methods = {entry.method for entry in entries}
    method = methods.pop() if len(methods) == 1 else ("mixed" if methods else "sparse")
    return (method, entries[0].seed, entries[0].num_hashes) if method == "hash" else (method, 0, 0)


def _method(code):
    if code not in METHODS:
        raise DiffFormatError(f"unknown diff method code {code}")
    return METHODS[code]


def _digest_ok(body):
    return len(body) >= _DIGEST and hashlib.sha256(body[:-_DIGEST]).digest() == body[-_DIGEST:]


# -- sparse indices as LEB128 gaps -------------------------------------------
def encode_gaps(indices):
    """Sorted unique positions -> LEB128 varints of (index - previous - 1)."""
    indices = np.asarray(indices, dtype=np.int64)
    gaps = np.diff(indices, prepend=-1) - 1
    if gaps.size and gaps.min() < 0:
        raise ValueError("sparse indices must be sorted and unique")
    gaps = gaps.astype(np.uint64)
    nbytes = np.ones(gaps.size, dtype=np.int64)
    for bits in (7, 14, 21, 28, 35):
        nbytes += gaps >= (np.uint64(1) << np.uint64(bits))
    ends = np.cumsum(nbytes)
    out = np.empty(int(ends[-1]) if ends.size else 0, dtype=np.uint8)
    starts = ends - nbytes
    for j in range(int(nbytes.max()) if nbytes.size else 0):
        has = nbytes > j
        chunk = (gaps[has] >> np.uint64(7 * j)) & np.uint64(0x7F)
        more = (nbytes[has] > j + 1).astype(np.uint8) << 7
        out[starts[has] + j] = chunk.astype(np.uint8) | more
    return out.tobytes()


def decode_gaps(block, count, name="?"):
    raw = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(raw < 0x80)
    if ends.size != count or (count and ends[-1] != raw.size - 1) or (not count and raw.size):
        raise DiffFormatError(f"entry {name}: index block does not hold {count} indices")
    starts = np.concatenate(([0], ends[:-1] + 1)) if count else ends
    if count and np.max(ends - starts) > 5:
        raise DiffFormatError(f"entry {name}: index gap longer than 5 bytes")
    if count and np.any((raw[ends] == 0) & (ends > starts)):  # a gap padded with a zero byte: two encodings
        raise DiffFormatError("diff is not canonically encoded")
    owner = np.repeat(np.arange(count), ends - starts + 1)
    shift = (np.arange(raw.size) - starts[owner]) * 7
    parts = (raw & 0x7F).astype(np.uint64) << shift.astype(np.uint64)
    gaps = np.add.reduceat(parts, starts) if count else parts
    indices = np.cumsum(gaps.astype(np.int64) + 1) - 1
    # int32 halves a device's memory for the positions of a big sparse diff.
    return indices.astype(np.int32) if count and indices[-1] < 2**31 else indices
