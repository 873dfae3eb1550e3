"""tfdiff.Diff: the learned diff G as it travels, with its budget and report."""
import dataclasses
from typing import Iterable

import numpy as np

from device import format as wire

from .budget import budget_bytes


class DiffMismatchError(ValueError):
    """A diff applied to a model it was not made for."""


class Diff(wire.DiffFile):
    """A diff between two model generations, as saved and sent.

    `save(path)` / `Diff.load(path)` round-trip exactly; `nbytes` is the file
    size; `summary()` reports, per weight, what was kept and what it costs.

    Example:

    >>> import numpy as np, tfdiff
    >>> from device.format import Entry
    >>> entry = Entry("dense/0/kernel", (10, 10), "sparse", np.float16([0.5]), np.array([7]))
    >>> diff = tfdiff.Diff("sparse", [entry], b"\\0" * 32, b"\\1" * 32)
    >>> diff.nbytes
    187
    """

    cut_values = 0

    def fit_budget(self, compression, sizes):
        """Cut the smallest values (`trim_to`) until the file, signed, fits 4N/compression bytes.

        A diff from `tfdiff.wrap` was planned to fit, so this cuts nothing
        (`cut_values` says how many it did cut, and the model shipped then
        differs from the model trained by those values).
        """
        budget = self.planned_budget(compression, sizes)
        before = sum(int(np.count_nonzero(e.values)) for e in self.entries)
        self.trim_to(budget - wire.SIGNATURE_BYTES)
        self.cut_values = before - sum(int(np.count_nonzero(e.values)) for e in self.entries)
        self.budget = budget
        return budget

    def planned_budget(self, compression, sizes):
        """B = 4N / compression bytes, signature included, N the diffed parameters (`sizes`: name -> size)."""
        return budget_bytes(sum(sizes[e.name] for e in self.entries), compression)

    def trim_to(self, max_bytes):
        """Cut the smallest-magnitude values until `nbytes <= max_bytes`: sparse values are dropped,
        hash table entries set to zero (a table keeps its size; zeros cost almost nothing once coded)."""
        while self.nbytes > max_bytes:
            magnitudes = np.concatenate([np.abs(e.values.astype(np.float32)).ravel() for e in self.entries])
            magnitudes = magnitudes[magnitudes > 0]
            if magnitudes.size == 0:
                raise ValueError(f"even an empty diff ({self.nbytes} bytes) exceeds {max_bytes} bytes: "
                                 "the model is too small for this budget")
            excess = self.nbytes - max_bytes
            drop = min(magnitudes.size, max(1, excess // 3 + 1))
            threshold = np.partition(magnitudes, drop - 1)[drop - 1]
            for e in self.entries:
                keep = np.abs(e.values.astype(np.float32)) > threshold
                if e.method == "sparse":
                    e.values, e.indices = e.values[keep], e.indices[keep]
                else:
                    e.values = np.where(keep, e.values, np.zeros_like(e.values))
        return self

    def summary(self, file_bytes=None):
        """A table, one row per weight (a composed diff's entries of one weight together), adding up to the file.

        `entry bytes` are each weight's entries as encoded; the last rows
        reconcile them with the file: what LZMA2 saved on the entries block,
        the headers and checksum, the signature. `file_bytes`: the size of
        the file this diff was read from, unchanged (saves encoding it again).
        """
        rows = [("weight", "shape", "kind", "stored", "entry bytes", "nominal", "wire")]
        weights = {}
        for entry in self.entries:  # one row per weight, entries in file order
            weights.setdefault(entry.name, []).append(entry)
        raw = 0
        for name, entries in weights.items():
            size, stored = entries[0].size, sum(e.values.size for e in entries)
            nbytes = sum(map(wire.entry_nbytes, entries))
            kinds = sorted({_KINDS[e.method] if e.method != "sparse" or e.values.dtype != np.int8
                            else "int8 deltas" for e in entries})
            rows.append((printable(name), "x".join(map(str, entries[0].shape)) or "scalar",
                         "+".join(kinds) + (f" x{len(entries)}" if len(entries) > 1 else ""), str(stored),
                         str(nbytes), _ratio(size, stored), _ratio(4 * size, nbytes)))
            raw += nbytes
        if file_bytes is None:
            unsigned = len(self.unsigned_bytes())
            signed = self.nbytes
        else:
            signed = file_bytes
            unsigned = signed - (wire.SIGNATURE_BYTES if self.signature is not None else 0)
        coded = unsigned - wire.FILE_OVERHEAD_BYTES if self.version >= 2 else raw  # v1 files are not coded
        if coded != raw:
            rows.append(("lzma2 on the entries", "", "", "", str(coded - raw), "", ""))
        rows.append(("headers, checksum", "", "", "", str(unsigned - coded), "", ""))
        if signed != unsigned:
            rows.append(("signature", "", "", "", str(signed - unsigned), "", ""))
        total_size, total_stored = self.num_params, sum(e.values.size for e in self.entries)
        rows.append(("total (file)", f"{total_size} params", self.method, str(total_stored),
                     str(signed), _ratio(total_size, total_stored), _ratio(4 * total_size, signed)))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "-" * len(lines[0]))
        return "\n".join(lines)

    @property
    def num_params(self):
        """Parameters the diff covers: each weight once, however many entries a composed diff has for it."""
        return sum({e.name: e.size for e in self.entries}.values())

    @property
    def nominal_compression(self):
        """The paper's ratio: diffed parameters / stored diff values."""
        stored = sum(e.values.size for e in self.entries)
        return self.num_params / stored if stored else float("inf")

    @property
    def wire_compression(self):
        """float32 bytes of the diffed weights / bytes of this file."""
        return 4 * self.num_params / self.nbytes


def compose(diffs: "Iterable[Diff]") -> "Diff":
    """One catch-up diff whose result is, bit for bit, the chain's: F_t (+) G_1 (+) ... (+) G_n.

    For a device several generations behind. Entries keep their order, so
    the device computes exactly what the chain computes; consecutive sparse
    entries of a weight that touch disjoint positions merge into one.

    Args:
        diffs: the chain, oldest first; each diff's base must be the
            previous one's target.

    Returns:
        an unsigned `Diff` from the first diff's base to the last one's
        target, at the last one's generation (sign it before shipping).

    Raises:
        ValueError: an empty chain, or a diff whose base is not the previous target.

    Example:

    >>> import numpy as np, tfdiff
    >>> from device.format import Entry
    >>> one = tfdiff.Diff("sparse", [Entry("w", (4,), "sparse", np.float16([1]), np.array([0]))],
    ...                   b"a" * 32, b"b" * 32, generation=1)
    >>> two = tfdiff.Diff("sparse", [Entry("w", (4,), "sparse", np.float16([2]), np.array([3]))],
    ...                   b"b" * 32, b"c" * 32, generation=2)
    >>> both = tfdiff.compose([one, two])
    >>> both.generation, both.entries[0].indices.tolist(), both.nbytes < one.nbytes + two.nbytes
    (2, [0, 3], True)
    """
    diffs = list(diffs)
    if not diffs:
        raise ValueError("`diffs` must name at least one diff. Received: an empty chain")
    for earlier, later in zip(diffs, diffs[1:]):
        if later.base_digest != earlier.target_digest or later.generation <= earlier.generation:
            raise ValueError(f"generation {later.generation} does not follow generation {earlier.generation}: "
                             "each diff's base must be the previous one's target. Received: "
                             f"base {later.base_digest.hex()[:12]} after target {earlier.target_digest.hex()[:12]}")
    entries = []
    for entry in (e for diff in diffs for e in diff.entries):
        previous = next((e for e in reversed(entries) if e.name == entry.name), None)
        if (previous is not None and previous.method == entry.method == "sparse"
                and previous.values.dtype == entry.values.dtype
                and not np.intersect1d(previous.indices, entry.indices).size):
            order = np.argsort(np.concatenate([previous.indices, entry.indices]), kind="stable")
            previous.indices = np.concatenate([previous.indices, entry.indices])[order]
            previous.values = np.concatenate([previous.values, entry.values])[order]
        else:
            entries.append(dataclasses.replace(entry, values=entry.values.copy(),
                                               indices=None if entry.indices is None else entry.indices.copy()))
    graphs = {diff.graph_digest for diff in diffs} - {wire.UNBOUND}
    if len(graphs) > 1:
        raise ValueError("the diffs are bound to different model graphs. Received: "
                         f"{sorted(g.hex()[:12] for g in graphs)}")
    method, seed, num_hashes = wire.file_fields(entries)
    return Diff(method, entries, diffs[0].base_digest, diffs[-1].target_digest, generation=diffs[-1].generation,
                seed=seed, num_hashes=num_hashes, graph_digest=graphs.pop() if graphs else wire.UNBOUND)


def printable(text):
    """`text` with control characters escaped, so a crafted weight name cannot fake lines or move a terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


# What an entry stores, for `summary`.
_KINDS = {"sparse": "nonzeros", "hash": "table", "lowrank": "factors", "seed": "scalings"}


def _ratio(numerator, denominator):
    return f"{numerator / denominator:.1f}x" if denominator else "inf"
