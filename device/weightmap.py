"""The weight map: where every element of every Keras weight lives in a .tflite's buffers.

`device.convert` stores it as the metadata entry `tfdiff.weight_map`, a
zlib-compressed JSON document (docs/FORMAT.md); `tflite.TFLiteFile` reads
and checks it against the file's buffers.

A weight is float32, or int8 in a model converted with `quantize="int8"`
(dynamic-range quantization: the kernel travels as int8 with per-channel
scales in its tensor's table). A map with an int8 weight is version 2;
an all-float map stays version 1, byte for byte.
"""
import base64
import json
import zlib

import numpy as np

WEIGHT_MAP_NAME = "tfdiff.weight_map"
MAX_MAP_BYTES = 64 << 20
# The element types a weight can have in the file, and their sizes in bytes.
DTYPES = {"float32": np.dtype("<f4"), "int8": np.dtype("i1")}


class Segment:
    """A run of `count` elements at element `offset` of buffer `buffer` (elements of the weight's dtype).

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

    VERSIONS = (1, 2)

    def __init__(self, weights, dtypes=None):
        self.weights = weights  # name -> (shape, [Segment])
        self.dtypes = {name: d for name, d in (dtypes or {}).items() if d != "float32"}  # the exceptions

    def dtype(self, name):
        """"float32" or "int8": the element type of the weight in the file."""
        return self.dtypes.get(name, "float32")

    def names(self):
        return sorted(self.weights)

    def shape(self, name):
        return self.weights[name][0]

    def segments(self, name):
        return self.weights[name][1]

    def to_bytes(self):
        weights = [{"name": n, "shape": list(s), "segments": [g.to_json() for g in segs]}
                   for n, (s, segs) in sorted(self.weights.items())]
        for weight in weights:
            if weight["name"] in self.dtypes:
                weight["dtype"] = self.dtypes[weight["name"]]
        doc = {"version": 2 if self.dtypes else 1, "weights": weights}
        return zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 9)

    @classmethod
    def from_bytes(cls, data):
        # Capped: a crafted map cannot inflate past 64 MiB (a zlib bomb).
        inflater = zlib.decompressobj()
        raw = inflater.decompress(data, MAX_MAP_BYTES)
        if inflater.unconsumed_tail:
            raise ValueError(f"weight map inflates past {MAX_MAP_BYTES} bytes")
        doc = json.loads(raw)
        if doc.get("version") not in cls.VERSIONS:
            raise ValueError(f"weight map version {doc.get('version')} is not supported")
        dtypes = {w["name"]: w["dtype"] for w in doc["weights"] if "dtype" in w}
        if doc["version"] == 1 and dtypes or any(d not in DTYPES for d in dtypes.values()):
            raise ValueError(f"weight map declares element types {sorted(set(dtypes.values()))}; "
                             f"version {doc['version']} maps know "
                             f"{sorted(DTYPES) if doc['version'] > 1 else ['float32']}")
        return cls({w["name"]: (tuple(w["shape"]), [Segment.from_json(s) for s in w["segments"]])
                    for w in doc["weights"]}, dtypes)
