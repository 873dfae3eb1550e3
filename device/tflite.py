"""Just enough of the .tflite flatbuffer to find weight bytes, without TensorFlow.

A .tflite file is a flatbuffer whose root `Model` table holds a vector of
`Buffer` tables (raw constant bytes) and a vector of `Metadata` entries
(name -> buffer index). The field slots below are those of LiteRT's
schema.fbs; everything else in the file is left alone.

`WeightMap` (device/weightmap.py) is tfdiff's own metadata entry: for every
Keras weight, where each of its elements lives in the buffers (docs/FORMAT.md).
"""
import hashlib
import math
import mmap
import struct
import zlib

import flatbuffers
import numpy as np
from flatbuffers import number_types
from flatbuffers.table import Table

from .weightmap import DTYPES, WEIGHT_MAP_NAME, WeightMap

FILE_IDENTIFIER = b"TFL3"

# vtable slots (4 + 2 * field id) of the schema.fbs fields we read
_MODEL_BUFFERS, _MODEL_METADATA = 12, 16
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 4, 6, 8
_METADATA_NAME, _METADATA_BUFFER = 4, 6


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
            size = math.prod(shape)  # Python integers: a crafted shape cannot wrap around to a small size
            itemsize = DTYPES[weight_map.dtype(name)].itemsize
            if size * itemsize > len(self.data):
                raise ModelFormatError(f"weight map: {name} has shape {shape}, larger than the model file")
            segments = weight_map.segments(name)
            if sum(s.count for s in segments) != size:
                raise ModelFormatError(f"weight map: the segments of {name} do not hold its {size} elements")
            for s in segments:
                if not 0 <= s.buffer < len(self.buffer_ranges):
                    raise ModelFormatError(f"weight map: {name} names buffer {s.buffer}, which does not exist")
                start, length = self.buffer_ranges[s.buffer]
                if s.offset < 0 or s.count < 0 or itemsize * (s.offset + s.count) > length or start % 4:
                    raise ModelFormatError(f"weight map: a segment of {name} lies outside buffer {s.buffer}")
                low, high = s.key_range()
                if s.count and (low < 0 or high >= size):
                    raise ModelFormatError(f"weight map: a segment of {name} points outside its shape")
                first = start + itemsize * s.offset
                spans.append((first, first + itemsize * s.count, name))
        spans.sort()
        self._spans_by_name = {}
        for begin, end, name in spans:
            self._spans_by_name.setdefault(name, []).append((begin, end))
        for (_, end, first), (begin, _, second) in zip(spans, spans[1:]):
            # Whole 4-byte words: an update writes words (device/journal.py), so no word may hold two weights.
            if begin < -(-end // 4) * 4:
                raise ModelFormatError(f"weight map: {first} and {second} overlap in the file")
        self.weight_spans = [(begin, end) for begin, end, _ in spans]
        self._weight_map = weight_map

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

    def inside_weights(self, words):
        """Whether every 4-byte word (file offset / 4) holds bytes of some weight.

        Call after `weight_map()`, which checks and records the spans.
        """
        if not self.weight_spans:
            return words.size == 0
        starts = np.array([b // 4 for b, _ in self.weight_spans], dtype=np.int64)
        ends = np.array([-(-e // 4) for _, e in self.weight_spans], dtype=np.int64)
        slot = np.searchsorted(starts, words, side="right") - 1
        return bool(np.all((slot >= 0) & (words < ends[np.maximum(slot, 0)])))

    def weight_spans_of(self, name):
        """[(begin, end)] byte spans of weight `name` in the file."""
        return self._spans_by_name.get(name, [])

    def byte_positions(self, name):
        """File offset of every element of weight `name`, in Keras (row-major) order.

        Call after `weight_map()`. An element mapped twice leaves another
        unmapped, which raises ModelFormatError.
        """
        weight_map = self._weight_map
        itemsize = DTYPES[weight_map.dtype(name)].itemsize
        size = int(np.prod(weight_map.shape(name), dtype=np.int64))
        positions = np.full(size, -1, dtype=np.int64)
        for segment in weight_map.segments(name):  # bounds and overlaps: _check did them
            first = self.buffer_ranges[segment.buffer][0] + itemsize * segment.offset
            positions[segment.keras_indices()] = first + itemsize * np.arange(segment.count, dtype=np.int64)
        if size and positions.min() < 0:  # counts sum to size, so each element is mapped exactly once
            raise ModelFormatError(f"weight map of {name} maps some elements twice and others never")
        return positions

    def positions_of(self, name, keras):
        """File offsets of the elements `keras` (ascending Keras positions) of weight `name`.

        Without enumerating the weight: each run's element is found from its
        Keras position by peeling off the run's strides, largest first (the
        runs the converter writes are transposes and slices, whose strides
        nest). A run with an explicit index, or strides that do not nest,
        falls back to `byte_positions`.
        """
        weight_map = self._weight_map
        itemsize = DTYPES[weight_map.dtype(name)].itemsize
        keras = np.asarray(keras, dtype=np.int64)
        positions = np.full(keras.size, -1, dtype=np.int64)
        for segment in weight_map.segments(name):
            run = _run_index(segment, keras)
            if run is None:
                return self.byte_positions(name)[keras]
            found = run >= 0
            positions[found] = self.buffer_ranges[segment.buffer][0] + itemsize * (segment.offset + run[found])
        if keras.size and positions.min() < 0:
            raise ModelFormatError(f"weight map of {name} leaves some elements unmapped")
        return positions

    def weight_values(self, name):
        """The weight as it is in the file, in its Keras shape: float32, or int8 for a quantized one.

        Each segment is read as the contiguous run it is, with no index
        array of file positions: one read of the weight. An element mapped
        twice leaves another at zero, a weight no diff names.
        """
        weight_map = self._weight_map
        dtype = DTYPES[weight_map.dtype(name)]
        shape = weight_map.shape(name)
        values = np.zeros(int(np.prod(shape, dtype=np.int64)), dtype=dtype)
        for first, keys in self.runs(name):
            values[keys] = np.frombuffer(self.data, dtype=dtype, count=keys.size, offset=first)
        return values.reshape(shape)

    def runs(self, name):
        """(file offset, Keras positions of its elements) of each contiguous run of weight `name`."""
        weight_map = self._weight_map
        itemsize = DTYPES[weight_map.dtype(name)].itemsize
        for segment in weight_map.segments(name):
            yield self.buffer_ranges[segment.buffer][0] + itemsize * segment.offset, segment.keras_indices()


def read_mapped(path, read):
    """`read(TFLiteFile)` of the .tflite at `path`, through a read-only mmap closed afterwards."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        model = TFLiteFile(mm)
        result = read(model)
        del model  # its views of the mmap must go before the mmap closes
    return result


def graph_digest_of(path):
    """The graph digest (`TFLiteFile.graph_digest`) of the .tflite at `path`."""
    return read_mapped(path, TFLiteFile.graph_digest)


def _run_index(segment, keras):
    """For each Keras position, its element number in the run (-1 if the run does not hold it); None when the
    run's layout cannot be inverted this way (an explicit index, strides that are not positive and nested)."""
    if segment.index is not None or any(s <= 0 for s in segment.strides):
        return None
    order = sorted(range(len(segment.dims)), key=lambda d: -segment.strides[d])
    for outer, inner in zip(order, order[1:]):
        below = sum((segment.dims[d] - 1) * segment.strides[d] for d in order[order.index(inner):])
        if segment.strides[outer] <= below:
            return None
    rest = keras - segment.start
    inside = rest >= 0
    run = np.zeros(keras.size, dtype=np.int64)
    weights = np.cumprod((segment.dims[1:] + (1,))[::-1])[::-1]  # row-major place value of each digit
    for d in order:
        digit = rest // segment.strides[d]
        inside &= digit < segment.dims[d]
        rest = rest - digit * segment.strides[d]
        run += digit * int(weights[d])
    inside &= rest == 0
    return np.where(inside, run, -1)
