"""The applier's passes over a model's weights: each one streaming read (or write) of each weight's segments.

- `patch_pass`: one read of the model hashes every weight as it is and as
  the diff leaves it, and hands each patched weight's changed elements
  (Keras positions, old and new values) to a sink: the journal, or a copy of the model.
- `check_journal`: before a journal is replayed, one read checks that every
  changed element holds its old or its new value and hashes the weights the
  replay will leave (no write).
- `write_journal`: writes the new values (forward) or the old ones
  (backward) of a journal into the model, and fsyncs.

Which elements a diff changes and their new values are computed here from
the diff and the old values alone (device/journal.py stores nothing else).
Memory holds one weight at a time: its pages are released once it is done.
"""
import mmap
import os
import time

import numpy as np

from .digest import WeightsHasher
from .patch import changes_every_element, patch_mismatch, patched_values
from .tflite import TFLiteFile
from .weightmap import DTYPES

_PAGE = mmap.PAGESIZE


class ApplyError(ValueError):
    """A diff that cannot be applied to this model; nothing was changed."""


def entries_by_weight(diff, weight_map):
    """{weight name: [entries in diff order]}; ApplyError if an entry does not fit the model's weight."""
    entries = {}
    for entry in diff.entries:
        if entry.name not in weight_map.weights:
            raise ApplyError(f"diff patches weight {entry.name}, which this model does not have")
        if tuple(weight_map.shape(entry.name)) != tuple(entry.shape):
            raise ApplyError(f"weight {entry.name} has shape {weight_map.shape(entry.name)}, "
                             f"the diff expects {entry.shape}")
        problem = patch_mismatch(entry, weight_map.dtype(entry.name))
        if problem:
            raise ApplyError(problem)
        entries.setdefault(entry.name, []).append(entry)
    return entries


def in_place_bytes(diff, weight_sizes):
    """Bytes an in-place apply is expected to write, besides the diff its journal holds: the old values, and
    each page of the model holding a changed element (a page is written whole).

    `weight_sizes`: {name: (element count, bytes per element)}. A page of a
    weight with n elements of which k change holds a changed one with
    probability 1 - (1 - k/n)^(elements per page), the changed elements
    taken as spread at random (as magnitude pruning leaves them).
    """
    total = 0.0
    for name, entries in _grouped(diff).items():
        count, itemsize = weight_sizes[name]
        changed = count if any(map(changes_every_element, entries)) else _changed(entries).size
        pages = -(-count * itemsize // _PAGE)
        share = 1.0 - (1.0 - changed / max(1, count)) ** (_PAGE // itemsize)
        total += itemsize * changed + _PAGE * pages * share
    return int(total)


def _grouped(diff):
    grouped = {}
    for entry in diff.entries:
        grouped.setdefault(entry.name, []).append(entry)
    return grouped


def _changed(entries):
    """Ascending positions a weight's entries change; None for every position (`changes_every_element`)."""
    if any(map(changes_every_element, entries)):
        return None
    if len(entries) == 1:
        return np.asarray(entries[0].indices)
    return np.unique(np.concatenate([e.indices for e in entries]))


def _new_values(entries, changed, old):
    """The values the entries, in order, give the elements at `changed` (None: all) that held `old`."""
    values = old.copy()
    for entry in entries:
        if changes_every_element(entry):  # then `changed` is None: the whole weight, in order
            values = patched_values(entry, values, np.arange(values.size, dtype=np.uint32))
        else:
            if changed is None:
                slot = entry.indices
            elif changed is entry.indices:  # the weight's one entry: its positions are all the changed ones
                slot = slice(None)
            else:
                slot = np.searchsorted(changed, entry.indices)
            values[slot] = patched_values(entry, values[slot], entry.indices)
    return values


def patch_pass(model_path, diff, sink):
    """One read of the model: (digest before, digest after, patched elements).

    `sink(model, name, changed, old, new)` receives each patched weight's
    changed elements: their Keras positions (None: all), old and new values.
    """
    patched = 0

    def patch(model, name, flat, changed, entries):
        nonlocal patched
        old = flat.copy() if changed is None else flat[changed]
        new = _new_values(entries, changed, old)
        sink(model, name, changed, old, new)
        patched += old.size
        return new
    return (*_hashing_pass(model_path, diff, patch), patched)


def check_journal(model_path, diff, old_bytes, forward):
    """(digest of the model now, digest of what the replay leaves); ApplyError if an element holds neither value.

    `old_bytes` is a device.journal.OldBytes; `forward` replays the update,
    otherwise it is undone. Reads only.
    """
    def replay(model, name, flat, changed, entries):
        old = old_bytes.take(flat.size if changed is None else changed.size, flat.dtype)
        new = _new_values(entries, changed, old)
        held = flat if changed is None else flat[changed]
        if not np.all(_same_bits(held, old) | _same_bits(held, new)):
            raise ApplyError(f"the journal does not belong to {model_path} (weight {name} holds other "
                             f"values): `tfdiff-device recover --discard {model_path}` deletes it")
        return new if forward else old
    digests = _hashing_pass(model_path, diff, replay)
    old_bytes.finish()
    return digests


def _hashing_pass(model_path, diff, visit):
    """One read of the model: every weight hashed as it is and as the pass leaves it; (digest before, after).

    `visit(model, name, flat values, changed positions or None, entries)`
    returns the values the changed elements of a patched weight take.
    """
    with open(model_path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        model = TFLiteFile(mm)
        weight_map = model.weight_map()
        entries = entries_by_weight(diff, weight_map)
        before, after = WeightsHasher(), WeightsHasher()
        for name in weight_map.names():
            values = model.weight_values(name)
            before.update(name, values)
            if name in entries:
                flat = values.reshape(-1)
                changed = _changed(entries[name])
                flat[slice(None) if changed is None else changed] = visit(model, name, flat, changed, entries[name])
            after.update(name, values)
            release(mm, model.weight_spans_of(name))
            del values
        del model
    return before.digest(), after.digest()


def write_journal(model_path, diff, old_bytes, forward, crash_point):
    """Write a checked journal's new values (forward) or old values into the model, msync and fsync."""
    with open(model_path, "r+b") as m, mmap.mmap(m.fileno(), 0) as mm:
        model = TFLiteFile(mm)
        weight_map = model.weight_map()
        entries = entries_by_weight(diff, weight_map)
        names = [name for name in weight_map.names() if name in entries]
        for i, name in enumerate(names):
            changed = _changed(entries[name])
            size = int(np.prod(weight_map.shape(name), dtype=np.int64)) if changed is None else changed.size
            old = old_bytes.take(size, DTYPES[weight_map.dtype(name)])
            write_changed(mm, model, name, changed, _new_values(entries[name], changed, old) if forward else old)
            if i == len(names) // 2:
                crash_point("half-written")
            _pause_for_tests()
        mm.flush()
        os.fsync(m.fileno())
        del model


def write_changed(out, model, name, changed, values):
    """Write weight `name`'s elements at Keras positions `changed` (None: all of them) into `out`.

    `out` is a writable mmap of the model or of a byte copy of it (`model`
    gives the layout). A whole weight is written run by run, contiguously;
    a few elements by their offsets. Written pages are flushed and dropped.
    """
    if changed is None:
        for first, keys in model.runs(name):
            np.frombuffer(out, dtype=values.dtype, count=keys.size, offset=first)[:] = values[keys]
        release(out, model.weight_spans_of(name), flush=True)
        return
    positions = model.positions_of(name, changed)
    if not positions.size:
        return
    if values.dtype.itemsize == 4 and not np.any(positions % 4):  # aligned: one word per element
        np.frombuffer(out, "<u4", count=len(out) // 4)[positions // 4] = np.ascontiguousarray(values).view("<u4")
    else:
        width = values.dtype.itemsize
        raw = np.frombuffer(out, np.uint8)
        raw[(positions[:, None] + np.arange(width)).reshape(-1)] = np.ascontiguousarray(values).view(np.uint8)
        del raw
    release(out, [(int(positions.min()), int(positions.max()) + values.dtype.itemsize)], flush=True)


def _same_bits(a, b):
    """Elementwise bit equality (NaNs included), for float32 or int8 arrays."""
    view = "<u4" if a.dtype.itemsize == 4 else np.uint8
    return np.ascontiguousarray(a).view(view) == np.ascontiguousarray(b).view(view)


def model_weights_digest(model):
    """The weights digest of a mapped .tflite (`TFLiteFile`), one weight at a time (pages released)."""
    hasher = WeightsHasher()
    weight_map = model.weight_map()
    for name in weight_map.names():
        hasher.update(name, model.weight_values(name))
        release(model.data, model.weight_spans_of(name))
    return hasher.digest()


def release(data, spans, flush=False):
    """Drop the pages of byte spans [(begin, end)] from our resident memory once they are done."""
    if not isinstance(data, mmap.mmap) or not spans:
        return
    start = min(b for b, _ in spans) // _PAGE * _PAGE
    end = min(len(data), max(e for _, e in spans))
    if end <= start:
        return
    if flush:
        data.flush(start, end - start)
    if hasattr(mmap, "MADV_DONTNEED"):
        data.madvise(mmap.MADV_DONTNEED, start, end - start)


def _pause_for_tests():
    """TFDIFF_REPLAY_PAUSE (seconds per weight) widens the write window, so random kills land mid-write."""
    pause = os.environ.get("TFDIFF_REPLAY_PAUSE")
    if pause:
        time.sleep(float(pause))
