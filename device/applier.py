"""Patch a .tflite model with a diff, crash-safe, in place or by a copy renamed over it.

The order of events of an update in place, so that a kill at any instant
leaves the old model or, after the next call, the new one:

0. Trust: the diff file is read (at most `max_diff_bytes`), its signature
   checked over the raw bytes against the device's trusted key, and only
   then parsed. Its generation must be above the installed one.
1. Recover: if a journal (device/journal.py) from an interrupted run exists, finish it first.
2. Check: the diff's entries fit the model's weights (names, shapes,
   float32 or int8) and its graph, and the model is writable.
3. Prepare, in one read of the model (device/passes.py): every weight is
   hashed as it is and as the diff leaves it, and the old values of the
   elements the diff changes are streamed, after the diff itself, into
   MODEL.tfdiff-journal.tmp, which is fsynced. The weights as they are must
   be the diff's base (or its target: nothing to do), the patched ones its
   target; otherwise the .tmp is deleted and the model was never touched.
4. Commit: the journal is renamed to MODEL.tfdiff-journal. Before this
   rename the model is untouched and a stray .tmp is discarded (under the
   lock); after it the update will complete.
5. Write the new values (recomputed from the journal's old values and the
   diff) into the model through a writable mmap, msync, fsync.
6. Record the new generation in MODEL.tfdiff-state (atomically), and keep
   the journal as the undo record MODEL.tfdiff-undo.

`recover` replays a committed journal only after checking, with no write,
that its diff is signed by a trusted key, that the model holds each
changed element's old or new value, and that the weights the replay leaves
hash to the diff's target. `rollback` renames the undo record to
MODEL.tfdiff-rollback (its commit point) after the same check against the
diff's base, and writes the old values back.

The copy strategy writes MODEL.tfdiff-next whole (the model, patched,
fsynced), keeps the old file as MODEL.tfdiff-previous (a second name, no
copy) and renames the new one over the model: one rename commits it. With
`out=...` the patched copy is renamed over `out` instead.

Memory stays bounded: one weight at a time is read through the mmap (its
pages released afterwards), so neither the model nor its journal is ever held whole.
"""
import fcntl
import mmap
import os
import shutil
import stat

import numpy as np

from . import signing
from .trust import check_private, model_path_of, trusted_keys
from .files import fsync_dir, write_atomic
from .format import MAX_DIFF_BYTES, UNBOUND, DiffFormatError, decode, read_bounded
from .journal import JournalError, JournalWriter, OldBytes, chunks_v3, read_header, read_update
from .passes import (ApplyError, check_journal, entries_by_weight, in_place_bytes, patch_pass,
                     model_weights_digest, write_changed, write_journal)
from .state import STATE_SUFFIX, read_digest_record, read_state, record_text, write_state
from .tflite import TFLiteFile, graph_digest_of, read_mapped
from .weightmap import DTYPES

JOURNAL_SUFFIX = ".tfdiff-journal"
ROLLBACK_SUFFIX = ".tfdiff-rollback"  # the undo record, renamed: a rollback in progress
LOCK_SUFFIX = ".tfdiff-lock"
PLAN_SUFFIX = ".tfdiff-plan"  # an earlier version's --out plan: removed if a killed run left one
OUT_SUFFIX = ".tfdiff-out"  # names the temporary copy of an apply --out in progress
TMP_SUFFIX = ".tfdiff-tmp"  # that copy, beside its destination
UNDO_SUFFIX = ".tfdiff-undo"
# The copy strategy (A/B): the new model is built whole in MODEL.tfdiff-next and renamed over the model; the
# old one stays as MODEL.tfdiff-previous (its generation and digest in .tfdiff-previous-state) for rollback.
SWAP_SUFFIX = ".tfdiff-swap"
NEXT_SUFFIX = ".tfdiff-next"
PREVIOUS_SUFFIX = ".tfdiff-previous"
STRATEGIES = ("auto", "inplace", "copy")


class UpdateCommittedError(RuntimeError):
    """The update is committed but could not be finished (a full disk, say): `recover` finishes it.

    Not a ValueError: the model may already be the new one, so the command
    line exits with status 3, not 1 ("unchanged").
    """

    exit_status = 3


class Trust:
    """How a diff is checked before it is parsed: the keys trusted, or none (`allow_unsigned`), and a size bound.

    apply, recover and rollback take the same options: a journal holds its
    diff, which is checked again before a replay.
    """

    def __init__(self, public_key=None, allow_unsigned=False, key_beside_model=False, max_diff_bytes=None):
        self.public_key, self.allow_unsigned = public_key, allow_unsigned
        self.key_beside_model, self.max_diff_bytes = key_beside_model, max_diff_bytes

    def open(self, data, model_path):
        """The diff in `data` (raw bytes), its signature checked first; DiffFormatError or SignatureError."""
        if not self.allow_unsigned:
            signing.verify_bytes(data, trusted_keys(model_path, self.public_key, self.key_beside_model))
        return decode(data)

    def open_journal(self, path, header, model_path):
        """The diff a format 4 journal holds, checked as a received diff would be."""
        limit = MAX_DIFF_BYTES if self.max_diff_bytes is None else self.max_diff_bytes
        if header.update_bytes > limit:
            raise ApplyError(f"journal {path} holds a diff larger than the {limit}-byte limit")
        return self.open(read_update(path, header), model_path)


class Result:
    """What an apply did: 'applied', or 'already' when the model was the target; and how ('inplace', 'copy', 'out')."""

    def __init__(self, status, path, diff, patched_elements=0, strategy="inplace"):
        self.status, self.path, self.diff = status, path, diff
        self.patched_elements, self.strategy = patched_elements, strategy

    def __repr__(self):
        return (f"Result({self.status!r}, {self.path!r}, patched_elements={self.patched_elements}, "
                f"strategy={self.strategy!r})")


def apply(model_path: "str | os.PathLike", diff_path: "str | os.PathLike", out: "str | os.PathLike | None" = None,
          public_key: "str | None" = None, allow_unsigned: bool = False,
          max_diff_bytes: "int | None" = None, key_beside_model: bool = False, force: bool = False,
          strategy: str = "auto") -> "Result":
    """Apply the diff at `diff_path` to the .tflite at `model_path`.

    Args:
        model_path: the device's model; patched in place unless `out` is given.
        diff_path: the received diff file.
        out: write the patched model here instead (atomically): a new file,
            or with `force` an existing regular file to replace.
        public_key: path of the trusted Ed25519 public key (PEM). Without
            it, the keys device/trust.py finds ($TFDIFF_PUBLIC_KEY, the key
            directory); with none the diff is refused.
        allow_unsigned: accept a diff without checking any signature (for
            development and for a server evaluating its own diffs).
        max_diff_bytes: refuse larger diff files (default 64 MiB).
        key_beside_model: also trust MODEL.tfdiff-key.pem (device/trust.py).
        force: let `out` replace an existing regular file.
        strategy: "inplace" journals the old value of every element it
            changes and writes the new ones into the model; "copy" builds
            the new model whole beside it, renames it over, and keeps the old
            file for `rollback`; "auto" picks the one that writes fewer
            bytes (copy for hash and composed diffs, which change most
            weights; in place for a small sparse diff).

    Returns:
        a Result: "applied" (with the count of patched elements), or
        "already" when the model already is the diff's target.

    Raises:
        DiffFormatError, ApplyError, ModelFormatError, signing.SignatureError,
        all ValueErrors with a one-line message; the model is then unchanged.
        UpdateCommittedError: committed, not finished; `recover` finishes it.

    Example (from the shell): tfdiff-device apply model.tflite gen1.tfdiff --public-key k.pub
    """
    if strategy not in STRATEGIES:
        raise ApplyError(f"`strategy` must be one of {STRATEGIES}. Received: strategy={strategy!r}")
    model_path = _model(model_path)
    if out is not None:
        out = _check_out(model_path, os.fspath(out), force)
    trust = Trust(public_key, allow_unsigned, key_beside_model, max_diff_bytes)
    data = read_bounded(diff_path, max_diff_bytes)
    diff = trust.open(data, model_path)

    with _locked(model_path):
        _recover(model_path, trust)
        # Names, shapes and kinds first: a float32 diff for an int8 model (or the reverse) says so.
        sizes = read_mapped(model_path, lambda model: _weight_sizes(diff, model))
        graph = diff.graph_digest if diff.graph_digest == UNBOUND else graph_digest_of(model_path)
        if graph != diff.graph_digest:
            raise ApplyError(f"diff (generation {diff.generation}) is bound to another model graph "
                             f"({diff.graph_digest.hex()[:12]}); this model's is {graph.hex()[:12]}")
        installed, recorded = read_state(model_path)
        if diff.generation <= installed:
            current = weights_digest_of(model_path)
            _check_recorded(model_path, installed, recorded, current)
            if out is None and current == diff.target_digest:
                return Result("already", model_path, diff)
            raise ApplyError(f"diff is generation {diff.generation}, but this model is already at "
                             f"generation {installed}; refusing to go back")
        if out is not None:
            return _apply_to_copy(model_path, diff, out, (installed, recorded))
        if strategy == "copy" or (strategy == "auto"
                                  and _copy_writes_less(os.path.getsize(model_path), diff, sizes, len(data))):
            return _apply_by_swap(model_path, diff, (installed, recorded))
        return _apply_in_place(model_path, diff, data, (installed, recorded))


def installed_generation(model_path: "str | os.PathLike") -> int:
    """The generation the model holds: 0 (as shipped) until a diff was applied to it."""
    return read_state(model_path)[0]


def state_matches(model_path: "str | os.PathLike") -> bool:
    """True unless the state records the weights digest of another model (the model file was replaced)."""
    _, recorded = read_state(model_path)
    return recorded is None or recorded == weights_digest_of(model_path)


def reset_state(model_path: "str | os.PathLike") -> None:
    """Take the model as shipped: forget its recorded generation and its undo record (the owner's decision)."""
    model_path = _model(model_path)
    with _locked(model_path):
        _remove(model_path + STATE_SUFFIX, model_path + UNDO_SUFFIX)
        fsync_dir(os.path.dirname(model_path))


def weights_digest_of(model_path):
    """The weights digest of the .tflite at `model_path`, as diffs name their base and target."""
    return read_mapped(model_path, model_weights_digest)


def recover(model_path: "str | os.PathLike", public_key: "str | None" = None, allow_unsigned: bool = False,
            key_beside_model: bool = False, max_diff_bytes: "int | None" = None) -> bool:
    """Finish an update (or rollback) interrupted by a crash; returns True if one was found.

    The journal's diff is checked against the trusted keys as `apply`
    checks a received one (same arguments). Raises ApplyError or
    JournalError when a journal is there but does not belong to the model
    (see `discard`); the model is then left as it is.
    """
    model_path = _model(model_path)
    with _locked(model_path):
        return _recover(model_path, Trust(public_key, allow_unsigned, key_beside_model, max_diff_bytes))


def _recover(model_path, trust):
    _clean_leftovers(model_path)
    if os.path.lexists(model_path + SWAP_SUFFIX):
        return _finish_swap(model_path)
    for suffix, forward in ((JOURNAL_SUFFIX, True), (ROLLBACK_SUFFIX, False)):
        if os.path.lexists(model_path + suffix):
            _replay(model_path, model_path + suffix, forward, trust)
            return True
    return False


def discard(model_path: "str | os.PathLike") -> bool:
    """Delete a journal that recovery refused (one left by another model); returns True if one was there.

    Only for a journal `recover` reported as foreign: discarding the journal of
    a half-written update of *this* model leaves it half-written.
    """
    model_path = _model(model_path)
    with _locked(model_path):
        paths = [model_path + s for s in (JOURNAL_SUFFIX + ".tmp", JOURNAL_SUFFIX, ROLLBACK_SUFFIX)]
        found = any(os.path.lexists(path) for path in paths)
        _remove(*paths)
        fsync_dir(os.path.dirname(model_path))
        return found


def rollback(model_path: "str | os.PathLike", public_key: "str | None" = None, allow_unsigned: bool = False,
             key_beside_model: bool = False, max_diff_bytes: "int | None" = None) -> int:
    """Restore the generation before the last update, bit for bit; returns the restored generation.

    In place, the undo record (MODEL.tfdiff-undo) is the last update's
    journal: its diff and the old value of every element it changed. Its
    diff is checked against the trusted keys (the arguments are `apply`'s),
    and one read checks that writing the old values back gives the diff's
    base; then the record is renamed MODEL.tfdiff-rollback (the commit
    point) and replayed backwards, so a crash at any instant leaves the
    current model or, after the next `recover`, the previous one. After the
    copy strategy, the previous model file is renamed back.
    """
    model_path = _model(model_path)
    trust = Trust(public_key, allow_unsigned, key_beside_model, max_diff_bytes)
    with _locked(model_path):
        _recover(model_path, trust)
        undo = model_path + UNDO_SUFFIX
        if not os.path.lexists(undo) and os.path.lexists(model_path + PREVIOUS_SUFFIX):
            return _rollback_by_swap(model_path)
        if not os.path.lexists(undo):
            raise ApplyError(f"{model_path} has no undo record: nothing to roll back")
        header = read_header(undo, model_path)
        if header.version == 3:  # an earlier version's undo record: it names the digests itself
            if weights_digest_of(model_path) != header.target:
                raise ApplyError(f"{model_path} is not the model its undo record was made for; refusing to roll back")
        else:
            _check_replay(model_path, undo, header, False, trust, current_is_target=True)
        _crash_point("rollback-written")
        os.replace(undo, model_path + ROLLBACK_SUFFIX)  # the commit point
        fsync_dir(os.path.dirname(model_path))
        _crash_point("rollback-committed")
        _committed(model_path, lambda: _replay(model_path, model_path + ROLLBACK_SUFFIX, False, trust))
        return header.generation_from


def _model(model_path):
    """The model's real path, its directory checked (device/trust.py); ApplyError if it is no file."""
    if not os.path.isfile(os.fspath(model_path)):
        raise ApplyError(f"model {os.fspath(model_path)} does not exist")
    return model_path_of(model_path)


def _check_out(model_path, out, force):
    """`out` as a real path if apply may write it: a new file, or with `force` an existing regular file."""
    if os.path.lexists(out):
        info = os.lstat(out)
        if not stat.S_ISREG(info.st_mode):
            raise ApplyError(f"--out {out} exists and is not a regular file; refusing to replace it")
        if not force:
            raise ApplyError(f"--out {out} exists; --force replaces it")
    directory = os.path.realpath(os.path.dirname(os.path.abspath(out)))
    check_private(directory, "the directory of --out", group_ok=True)
    real = os.path.join(directory, os.path.basename(out))
    if real == model_path:
        raise ApplyError("--out names the model itself; apply in place instead")
    return real


def _clean_leftovers(model_path):
    """Remove what killed runs left (an uncommitted journal, an --out's copy); under the lock."""
    leftovers = [model_path + JOURNAL_SUFFIX + ".tmp", model_path + PLAN_SUFFIX]
    record = model_path + OUT_SUFFIX
    if os.path.lexists(record):
        with os.fdopen(os.open(record, os.O_RDONLY | os.O_NOFOLLOW), "rb") as f:
            named = f.read(4096).decode("utf-8", "replace")
        if named.endswith(TMP_SUFFIX):  # only ever a copy this applier made
            leftovers.append(named)
        leftovers.append(record)
    _remove(*leftovers)


def _committed(model_path, work):
    """Run `work()` after the commit point: any failure leaves a committed update for `recover`."""
    try:
        return work()
    except (OSError, ValueError) as e:
        raise UpdateCommittedError(f"the update of {model_path} is committed but not finished ({e}); "
                                   f"`tfdiff-device recover {model_path}` finishes it") from None


def _weight_sizes(diff, model):
    """{name: (element count, bytes per element)} of the weights the diff patches, once its entries fit them."""
    weight_map = model.weight_map()
    return {name: (int(np.prod(weight_map.shape(name), dtype=np.int64)), DTYPES[weight_map.dtype(name)].itemsize)
            for name in entries_by_weight(diff, weight_map)}


def _check_recorded(model_path, installed, recorded, current):
    if recorded is not None and recorded != current:
        raise ApplyError(f"{model_path} is not the model its state records (generation {installed}): the "
                         f"file was replaced. `tfdiff-device recover {model_path} --reset-state` takes it as "
                         "shipped")


def _check_digests(model_path, diff, state, before, after):
    """True if the model (weights `before`) already is the diff's target; ApplyError unless `before` is its
    base, recorded by the state, and the patched weights `after` are its target."""
    _check_recorded(model_path, *state, before)
    if before == diff.target_digest:
        return True
    if before != diff.base_digest:
        raise ApplyError(f"diff (generation {diff.generation}) is for base model "
                         f"{diff.base_digest.hex()[:12]}, but this model is {before.hex()[:12]}")
    if after != diff.target_digest:
        raise ApplyError("patched weights do not match the diff's target digest; refusing to write")
    return False


# -- in place: a journal of old values ---------------------------------------
def _apply_in_place(model_path, diff, data, state):
    if not os.access(model_path, os.W_OK):
        raise ApplyError(f"{model_path} is not writable")
    journal = model_path + JOURNAL_SUFFIX
    try:
        with JournalWriter(journal + ".tmp", os.path.getsize(model_path), state[0], diff.generation,
                           data) as writer:
            before, after, patched = patch_pass(model_path, diff, lambda model, name, changed, old, new:
                                                writer.add(old))
        already = _check_digests(model_path, diff, state, before, after)
    except BaseException:
        _remove(journal + ".tmp")
        raise
    if already:  # record its generation, nothing else to do
        _remove(journal + ".tmp")
        write_state(model_path, diff.generation, diff.target_digest)
        return Result("already", model_path, diff)
    _crash_point("journal-written")
    os.replace(journal + ".tmp", journal)  # the commit point
    fsync_dir(os.path.dirname(model_path))
    _crash_point("journal-committed")

    def finish():
        with OldBytes(journal, read_header(journal, model_path)) as old:
            write_journal(model_path, diff, old, True, _crash_point)
        _crash_point("model-written")
        _finish(model_path, journal, read_header(journal, model_path), True, diff.target_digest)
    _committed(model_path, finish)
    return Result("applied", model_path, diff, patched)


def _check_replay(model_path, path, header, forward, trust, current_is_target=False):
    """The journal's diff, once a read with no write has shown the replay leaves the diff's target (forward) or
    base; ApplyError otherwise. `current_is_target`: the model must now be the target (a rollback)."""
    diff = trust.open_journal(path, header, model_path)
    with OldBytes(path, header) as old:
        now, result = check_journal(model_path, diff, old, forward)
    if current_is_target and now != diff.target_digest:
        raise ApplyError(f"{model_path} is not the model its undo record was made for; refusing to roll back")
    if result != (diff.target_digest if forward else diff.base_digest):
        raise ApplyError(f"journal {path} would not leave the model its diff names: "
                         f"`tfdiff-device recover --discard {model_path}` deletes it")
    return diff


def _replay(model_path, path, forward, trust):
    """Finish a committed journal: forward (an update) or backward (a rollback); checked before any write."""
    header = read_header(path, model_path)
    if header.version == 3:
        return _replay_v3(model_path, path, header, forward)
    diff = _check_replay(model_path, path, header, forward, trust)
    with OldBytes(path, header) as old:
        write_journal(model_path, diff, old, forward, _crash_point)
    _finish(model_path, path, header, forward, diff.target_digest if forward else diff.base_digest)


def _finish(model_path, path, header, forward, digest):
    """After a replay: record the generation, keep a forward journal as the undo record, drop a backward one."""
    write_state(model_path, header.generation_to if forward else header.generation_from, digest)
    _remove(model_path + PREVIOUS_SUFFIX, model_path + PREVIOUS_SUFFIX + "-state")  # one rollback record
    if forward:
        os.replace(path, model_path + UNDO_SUFFIX)  # one undo generation: the newest update's
    else:
        os.unlink(path)  # a rollback is not itself undone
    fsync_dir(os.path.dirname(model_path))


def _replay_v3(model_path, path, header, forward):
    """A format 3 journal (an earlier version's): words with old and new bits, checked before any write."""
    problem = None
    with open(model_path, "r+b") as m, mmap.mmap(m.fileno(), 0) as mm:
        model = TFLiteFile(mm)
        model.weight_map()
        bits = np.frombuffer(mm, dtype="<u4", count=len(mm) // 4)
        for words, old, new in chunks_v3(path, header):
            if not model.inside_weights(words):
                problem = f"writes outside the weights of {model_path}"
            elif not np.all((bits[words] == old) | (bits[words] == new)):
                problem = f"does not belong to {model_path} (the values there differ)"
            if problem:
                break
        if problem is None:
            for words, old, new in chunks_v3(path, header):
                bits[words] = new if forward else old
            mm.flush()
            os.fsync(m.fileno())
        del bits, model  # views of the mmap: gone before it closes
    if problem:
        raise ApplyError(f"journal {path} {problem}: `tfdiff-device recover --discard {model_path}` deletes it")
    digest = weights_digest_of(model_path)
    if digest != (header.target if forward else header.base):
        raise ApplyError(f"journal replay left {model_path} with unexpected weights ({digest.hex()[:12]})")
    _finish(model_path, path, header, forward, digest)


# -- the copy strategy and --out: a patched copy -----------------------------
def _copy_writes_less(model_bytes, diff, sizes, diff_bytes):
    """True when a copy (`model_bytes`) writes fewer bytes than in place: the journal (the diff, old values) and
    the pages of the model the new values land on."""
    return model_bytes < diff_bytes + in_place_bytes(diff, sizes)


def _apply_by_swap(model_path, diff, state):
    """The copy strategy: MODEL.tfdiff-next built and checked whole, the old model kept, then one rename.

    The swap record (written first) names the target digest; after a kill,
    `recover` finishes the update if the model already is the target, and
    otherwise removes what was built, leaving the old model.
    """
    swap, following, previous = (model_path + SWAP_SUFFIX, model_path + NEXT_SUFFIX, model_path + PREVIOUS_SUFFIX)
    write_atomic(swap, record_text(diff.generation, diff.target_digest))
    _remove(following, following + ".plan")
    try:
        before, after, patched = _patched_copy(model_path, diff, following)
        already = _check_digests(model_path, diff, state, before, after)
    except BaseException:
        _remove(following, swap)
        raise
    if already:
        _remove(following, swap)
        write_state(model_path, diff.generation, diff.target_digest)
        return Result("already", model_path, diff, strategy="copy")
    _remove(previous + ".tmp")
    os.link(model_path, previous + ".tmp")  # the old model, kept for rollback (no copy: a second name)
    write_atomic(previous + "-state", record_text(state[0], diff.base_digest))
    os.replace(previous + ".tmp", previous)
    _crash_point("swap-written")
    os.replace(following, model_path)  # the commit point
    fsync_dir(os.path.dirname(model_path))
    _crash_point("swap-committed")
    _committed(model_path, lambda: _finish_swap(model_path, checked=True))
    return Result("applied", model_path, diff, patched, strategy="copy")


def _finish_swap(model_path, checked=False):
    """After a kill or a swap: the model is the swap record's target (finish) or not (undo what was built).

    `checked`: the caller just renamed over the model a copy it hashed as it wrote it.
    """
    generation, target = read_digest_record(model_path + SWAP_SUFFIX)
    previous = model_path + PREVIOUS_SUFFIX
    if checked or weights_digest_of(model_path) == target:
        write_state(model_path, generation, target)
        _remove(model_path + UNDO_SUFFIX)  # the rollback record is now the previous model
    elif os.path.lexists(previous) and os.path.samefile(previous, model_path):
        _remove(previous, previous + "-state")  # not committed: the link to the model as it still is goes
    _remove(model_path + NEXT_SUFFIX, model_path + NEXT_SUFFIX + ".plan", previous + ".tmp", model_path + SWAP_SUFFIX)
    fsync_dir(os.path.dirname(model_path))
    return True


def _rollback_by_swap(model_path):
    """Put MODEL.tfdiff-previous back, if it is the model its state records; returns its generation."""
    previous = model_path + PREVIOUS_SUFFIX
    generation, digest = read_digest_record(previous + "-state")
    if weights_digest_of(previous) != digest:
        raise ApplyError(f"{previous} is not the model its state records; refusing to roll back")
    write_atomic(model_path + SWAP_SUFFIX, record_text(generation, digest))
    _crash_point("rollback-written")
    os.replace(previous, model_path)  # the commit point
    fsync_dir(os.path.dirname(model_path))
    _crash_point("rollback-committed")
    _committed(model_path, lambda: _finish_swap(model_path, checked=True))
    _remove(previous + "-state")
    return generation


def previous_generation(model_path):
    """The generation of MODEL.tfdiff-previous, the copy strategy's rollback record."""
    return read_digest_record(os.fspath(model_path) + PREVIOUS_SUFFIX + "-state")[0]


def _patched_copy(model_path, diff, path, patch=True):
    """A new file at `path` (never through a planted file or symlink): the model, patched as it is read, fsynced.

    Returns patch_pass's (digest before, digest after, patched elements); None with `patch` False (a plain copy).
    """
    with open(model_path, "rb") as source, os.fdopen(
            os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), "wb") as copy:
        shutil.copyfileobj(source, copy, 1 << 20)
    result = None
    if patch:
        with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as out:
            result = patch_pass(model_path, diff, lambda model, name, changed, old, new:
                                write_changed(out, model, name, changed, new))
            out.flush()
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
    return result


def _remove(*paths):
    for path in paths:
        if os.path.lexists(path):
            os.unlink(path)  # a symlink itself, never its target


def _apply_to_copy(model_path, diff, out, state):
    """Copy, patch the copy, rename it over `out`; a kill leaves files `recover MODEL` or the next apply removes."""
    tmp, record = out + TMP_SUFFIX, model_path + OUT_SUFFIX
    _remove(tmp, model_path + PLAN_SUFFIX)
    write_atomic(record, tmp.encode("utf-8"))  # first, so that recover can find the copy
    try:
        before, after, patched = _patched_copy(model_path, diff, tmp)
        if _check_digests(model_path, diff, state, before, after):  # the model already is the target
            _remove(tmp)
            _patched_copy(model_path, diff, tmp, patch=False)
            patched = None
        _crash_point("copy-written")
        os.replace(tmp, out)
        fsync_dir(os.path.dirname(out))
    finally:
        _remove(tmp, record)
    write_state(out, diff.generation, diff.target_digest)
    if patched is None:
        return Result("already", out, diff, strategy="out")
    return Result("applied", out, diff, patched, strategy="out")


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


__all__ = ["apply", "recover", "discard", "rollback", "reset_state", "state_matches", "installed_generation",
           "Trust", "UpdateCommittedError", "ApplyError", "DiffFormatError", "JournalError", "Result"]
