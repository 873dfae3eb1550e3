"""Just enough of the .tflite flatbuffer to find weight bytes, without TensorFlow.

A .tflite file is a flatbuffer whose root `Model` table holds a vector of
`Buffer` tables (raw constant bytes) and a vector of `Metadata` entries
(name -> buffer index). The field slots below are those of LiteRT's
schema.fbs; everything else in the file is left alone.

`WeightMap` is tfdiff's own metadata entry: for every Keras weight, where
each of its elements lives in the buffers (docs/FORMAT.md).
"""
import base64
import hashlib
import json
import struct
import zlib

import flatbuffers
import numpy as np
from flatbuffers import number_types
from flatbuffers.table import Table

FILE_IDENTIFIER = b"TFL3"
WEIGHT_MAP_NAME = "tfdiff.weight_map"

# vtable slots (4 + 2 * field id) of the schema.fbs fields we read
_MODEL_BUFFERS, _MODEL_METADATA = 12, 16
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 4, 6, 8
_METADATA_NAME, _METADATA_BUFFER = 4, 6


MAX_MAP_BYTES = 64 << 20


class ModelFormatError(ValueError):
    """A file that is not a .tflite model tfdiff can patch."""


class TFLiteFile:
    """Byte ranges of a .tflite model's buffers, read through any buffer object.

    Works on bytes, bytearray or an mmap, without copying the weights.
    """

    def __init__(self, data):
        self.data = data
        if len(data) < 8 or bytes(data[4:8]) != FILE_IDENTIFIER:
            raise ModelFormatError("not a .tflite model (no TFL3 identifier)")
        try:
            root = flatbuffers.encode.Get(flatbuffers.packer.uoffset, data, 0)
            self._model = Table(data, root)
            self.buffer_ranges = [self._buffer_range(t) for t in self._tables(_MODEL_BUFFERS)]
            self.metadata = {self._string(t, _METADATA_NAME):
                             t.Get(number_types.Uint32Flags, t.Pos + t.Offset(_METADATA_BUFFER))
                             for t in self._tables(_MODEL_METADATA)}
        except (IndexError, ValueError, OverflowError, TypeError, AttributeError, struct.error) as e:
            raise ModelFormatError(f"malformed .tflite flatbuffer: {type(e).__name__}: {e}") from None
        for start, length in self.buffer_ranges:
            if start < 0 or start + length > len(data):
                raise ModelFormatError("malformed .tflite flatbuffer: a buffer lies outside the file")

    def _tables(self, slot):
        o = self._model.Offset(slot)
        if not o:
            return []
        base = self._model.Vector(o)
        return [Table(self.data, self._model.Indirect(base + 4 * j))
                for j in range(self._model.VectorLen(o))]

    def _string(self, table, slot):
        o = table.Offset(slot)
        return table.String(table.Pos + o).decode("utf-8") if o else ""

    @staticmethod
    def _buffer_range(table):
        o = table.Offset(_BUFFER_DATA)
        if o:
            return table.Vector(o), table.VectorLen(o)
        offset, size = (table.Get(number_types.Uint64Flags, table.Pos + table.Offset(slot))
                        if table.Offset(slot) else 0 for slot in (_BUFFER_OFFSET, _BUFFER_SIZE))
        # Models over 2 GB keep buffers after the flatbuffer, at absolute offsets.
        return (offset, size) if offset > 1 else (0, 0)

    def buffer_bytes(self, index):
        start, length = self.buffer_ranges[index]
        return memoryview(self.data)[start:start + length]

    def weight_map(self):
        if WEIGHT_MAP_NAME not in self.metadata:
            raise ModelFormatError("model has no tfdiff weight map: convert it with "
                                   "`python -m device convert`")
        index = self.metadata[WEIGHT_MAP_NAME]
        if not 0 <= index < len(self.buffer_ranges):
            raise ModelFormatError(f"model's tfdiff weight map names buffer {index}, which does not exist")
        try:
            weight_map = WeightMap.from_bytes(bytes(self.buffer_bytes(index)))
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError, struct.error, zlib.error) as e:
            raise ModelFormatError(f"model's tfdiff weight map is unreadable: {e}") from None
        self._check(weight_map)
        return weight_map

    def _check(self, weight_map):
        """Every segment inside a weight buffer, each weight's elements counted once, no overlaps."""
        spans = []
        for name in weight_map.names():
            shape = weight_map.shape(name)
            if any(not isinstance(d, int) or d < 0 for d in shape):
                raise ModelFormatError(f"weight map: {name} has shape {shape}")
            size = int(np.prod(shape, dtype=np.int64))
            segments = weight_map.segments(name)
            if sum(s.count for s in segments) != size:
                raise ModelFormatError(f"weight map: the segments of {name} do not hold its {size} elements")
            for s in segments:
                if not 0 <= s.buffer < len(self.buffer_ranges):
                    raise ModelFormatError(f"weight map: {name} names buffer {s.buffer}, which does not exist")
                start, length = self.buffer_ranges[s.buffer]
                if s.offset < 0 or s.count < 0 or 4 * (s.offset + s.count) > length or start % 4:
                    raise ModelFormatError(f"weight map: a segment of {name} lies outside buffer {s.buffer}")
                low, high = s.key_range()
                if s.count and (low < 0 or high >= size):
                    raise ModelFormatError(f"weight map: a segment of {name} points outside its shape")
                spans.append((start + 4 * s.offset, start + 4 * (s.offset + s.count), name))
        spans.sort()
        for (_, end, first), (begin, _, second) in zip(spans, spans[1:]):
            if begin < end:
                raise ModelFormatError(f"weight map: {first} and {second} overlap in the file")
        self.weight_spans = [(begin, end) for begin, end, _ in spans]

    def graph_digest(self):
        """sha256 of every byte that is not a weight: the graph, its other constants, the weight map.

        Applying a diff changes weight bytes only, so this digest stays the
        same across a device's generations; a diff that names it is bound
        to this graph, not only to weights that another graph might share.
        The weight spans' positions are hashed in place of their bytes.
        """
        self.weight_map()
        h = hashlib.sha256(b"tfdiff graph digest 1\0")
        data, position = memoryview(self.data), 0
        for start, end in self.weight_spans:
            h.update(data[position:start])
            h.update(struct.pack("<QQ", start, end))
            position = end
        h.update(data[position:])
        del data
        return h.digest()

    def inside_weights(self, elements):
        """Whether every file element (index in float32s) lies in some weight's bytes.

        Call after `weight_map()`, which checks and records the spans.
        """
        if not self.weight_spans:
            return elements.size == 0
        starts = np.array([b // 4 for b, _ in self.weight_spans], dtype=np.int64)
        ends = np.array([e // 4 for _, e in self.weight_spans], dtype=np.int64)
        slot = np.searchsorted(starts, elements, side="right") - 1
        return bool(np.all((slot >= 0) & (elements < ends[np.maximum(slot, 0)])))


class Segment:
    """A run of `count` float32 elements at element `offset` of buffer `buffer`.

    Element i of the run is Keras element `start + sum_d digit_d(i) * strides[d]`,
    the digits being i written in the mixed radix `dims` (row-major). Runs the
    converter laid out irregularly carry an explicit `index` array instead.
    """

    def __init__(self, buffer, offset, count, start=0, dims=(), strides=(), index=None):
        self.buffer, self.offset, self.count = int(buffer), int(offset), int(count)
        self.start, self.dims, self.strides = int(start), tuple(dims), tuple(strides)
        self.index = index

    def key_range(self):
        """(lowest, highest) Keras element of the run, without enumerating it."""
        if self.index is not None:
            if self.index.size != self.count:
                return -1, -1
            return (int(self.index.min()), int(self.index.max())) if self.count else (0, 0)
        if int(np.prod(self.dims, dtype=np.int64)) != self.count or any(d < 1 for d in self.dims):
            return -1, -1
        low = self.start + sum(min(0, (d - 1) * s) for d, s in zip(self.dims, self.strides))
        high = self.start + sum(max(0, (d - 1) * s) for d, s in zip(self.dims, self.strides))
        return low, high

    def keras_indices(self):
        if self.index is not None:
            return self.index
        keys = np.full((), self.start, dtype=np.int64)
        for d, s in zip(self.dims, self.strides):
            keys = keys[..., None] + np.arange(d, dtype=np.int64) * s
        return keys.reshape(-1)

    def to_json(self):
        out = {"buffer": self.buffer, "offset": self.offset, "count": self.count}
        if self.index is not None:
            out["index"] = base64.b64encode(self.index.astype("<i8").tobytes()).decode()
        else:
            out.update(start=self.start, dims=list(self.dims), strides=list(self.strides))
        return out

    @classmethod
    def from_json(cls, d):
        if "index" in d:
            index = np.frombuffer(base64.b64decode(d["index"]), dtype="<i8").astype(np.int64)
            return cls(d["buffer"], d["offset"], d["count"], index=index)
        return cls(d["buffer"], d["offset"], d["count"], d["start"], d["dims"], d["strides"])

    @classmethod
    def describe(cls, buffer, offset, keys):
        """The compact form of a run whose elements are Keras elements `keys`."""
        keys = np.asarray(keys, dtype=np.int64)
        dims, strides, block = [], [], 1
        while block < keys.size:
            heads = keys[::block]
            stride = int(heads[1] - heads[0])
            steps = np.diff(heads) == stride
            run = int(np.argmin(steps)) + 1 if not steps.all() else heads.size
            if (keys.size // block) % run:
                break
            dims.insert(0, run)
            strides.insert(0, stride)
            block *= run
        segment = cls(buffer, offset, keys.size, int(keys[0]), dims or [1], strides or [1])
        if block != keys.size or not np.array_equal(segment.keras_indices(), keys):
            segment = cls(buffer, offset, keys.size, index=keys)
        return segment


class WeightMap:
    """Where every element of every Keras weight sits in the .tflite buffers."""

    VERSION = 1

    def __init__(self, weights):
        self.weights = weights  # name -> (shape, [Segment])

    def names(self):
        return sorted(self.weights)

    def shape(self, name):
        return self.weights[name][0]

    def segments(self, name):
        return self.weights[name][1]

    def to_bytes(self):
        doc = {"version": self.VERSION,
               "weights": [{"name": n, "shape": list(s), "segments": [g.to_json() for g in segs]}
                           for n, (s, segs) in sorted(self.weights.items())]}
        return zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 9)

    @classmethod
    def from_bytes(cls, data):
        # Capped: a crafted map cannot inflate past 64 MiB (a zlib bomb).
        inflater = zlib.decompressobj()
        raw = inflater.decompress(data, MAX_MAP_BYTES)
        if inflater.unconsumed_tail:
            raise ValueError(f"weight map inflates past {MAX_MAP_BYTES} bytes")
        doc = json.loads(raw)
        if doc.get("version") != cls.VERSION:
            raise ValueError(f"weight map version {doc.get('version')} is not supported")
        return cls({w["name"]: (tuple(w["shape"]), [Segment.from_json(s) for s in w["segments"]])
                    for w in doc["weights"]})
