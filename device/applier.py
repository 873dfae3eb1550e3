"""Patch a .tflite model with a diff, in place and crash-safe.

The order of events, so that a kill at any instant leaves the old model or,
after the next call, the new one:

0. Trust: the diff file is read (at most `max_diff_bytes`), its signature
   checked over the raw bytes against the device's trusted key, and only
   then parsed. Its generation must be above the installed one.
1. Recover: if a journal (device/journal.py) from an interrupted run exists, finish it first.
2. Check, touching nothing: the diff's entries fit the model's weights
   (names, shapes, float32 or int8), the model is writable and its weights
   digest is the diff's base.
3. Prepare: weight by weight, the 4-byte words the patch changes, with their
   old and new bits, are streamed into MODEL.tfdiff-journal.tmp, and fsynced; the patched
   weights must hash to the diff's target.
4. Commit: the journal is renamed to MODEL.tfdiff-journal. Before this
   rename the model is untouched and a stray .tmp is discarded (under the
   lock); after it the update will complete.
5. Replay the journal into the model through a writable mmap, msync, fsync.
   Every word must lie in a weight's bytes and hold its old or new bits,
   or nothing is written: a journal of another model is refused, and
   `discard` removes it.
6. Re-check the model against the target digest, record the new generation
   in MODEL.tfdiff-state (atomically), and keep the journal as the undo
   record MODEL.tfdiff-undo. A replay after a crash rewrites the same
   state, so model and generation commit together.

`rollback` commits the undo record's inverse journal and replays it the same
way. With `out=...` the model is instead copied to a temporary file next to
`out`, the same plan is replayed there, and the copy is fsynced and renamed
over `out`.

Memory stays bounded: one weight at a time is read through the mmap (its
pages released afterwards), patched and streamed to the journal, so neither
the model nor the patch plan is ever held whole.
"""
import fcntl
import mmap
import os
import shutil
import stat
import time

import numpy as np

from . import signing
from .trust import check_private, model_path_of, trusted_keys
from .format import UNBOUND, DiffFormatError, WeightsHasher, decode, fsync_dir, read_bounded, write_atomic
from .journal import JournalHeader, JournalWriter, chunks, read_header, write_inverse
from .patch import patch_mismatch, patched_values
from .tflite import TFLiteFile, graph_digest_of, read_mapped

JOURNAL_SUFFIX = ".tfdiff-journal"
STATE_SUFFIX = ".tfdiff-state"
LOCK_SUFFIX = ".tfdiff-lock"
PLAN_SUFFIX = ".tfdiff-plan"  # an apply --out's patch plan, beside the model
OUT_SUFFIX = ".tfdiff-out"  # names the temporary copy of an apply --out in progress
TMP_SUFFIX = ".tfdiff-tmp"  # that copy, beside its destination
UNDO_SUFFIX = ".tfdiff-undo"
# The copy strategy (A/B): the new model is built whole in MODEL.tfdiff-next and renamed over the model; the
# old one stays as MODEL.tfdiff-previous (its generation and digest in .tfdiff-previous-state) for rollback.
SWAP_SUFFIX = ".tfdiff-swap"
NEXT_SUFFIX = ".tfdiff-next"
PREVIOUS_SUFFIX = ".tfdiff-previous"
STRATEGIES = ("auto", "inplace", "copy")
_JOURNAL_BYTES_PER_ELEMENT = 16  # device/journal.py: position, old and new word
_PAGE = mmap.PAGESIZE


class ApplyError(ValueError):
    """A diff that cannot be applied to this model; nothing was changed."""


class UpdateCommittedError(RuntimeError):
    """The update is committed but could not be finished (a full disk, say): `recover` finishes it.

    Not a ValueError: the model may already be the new one, so the command
    line exits with status 3, not 1 ("unchanged").
    """

    exit_status = 3


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
        strategy: in place, "inplace" journals every word it changes (old
            and new bits) and writes them into the model; "copy" builds the
            new model whole beside it, renames it over, and keeps the old
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

    Example (from the shell): python -m device apply model.tflite gen1.tfdiff --public-key k.pub
    """
    if strategy not in STRATEGIES:
        raise ApplyError(f"`strategy` must be one of {STRATEGIES}. Received: strategy={strategy!r}")
    model_path = _model(model_path)
    if out is not None:
        out = _check_out(model_path, os.fspath(out), force)
    data = read_bounded(diff_path, max_diff_bytes)
    if not allow_unsigned:
        signing.verify_bytes(data, trusted_keys(model_path, public_key, key_beside_model))
    diff = decode(data)

    with _locked(model_path):
        recover(model_path, _locked_already=True)
        # Names, shapes and kinds first: a float32 diff for an int8 model (or the reverse) says so.
        read_mapped(model_path, lambda model: _check_entries(diff, model.weight_map()))
        graph = diff.graph_digest if diff.graph_digest == UNBOUND else graph_digest_of(model_path)
        if graph != diff.graph_digest:
            raise ApplyError(f"diff (generation {diff.generation}) is bound to another model graph "
                             f"({diff.graph_digest.hex()[:12]}); this model's is {graph.hex()[:12]}")
        installed, recorded = _read_state(model_path)
        current = weights_digest_of(model_path)  # one read of the weights serves every check below
        if recorded is not None and recorded != current:
            raise ApplyError(f"{model_path} is not the model its state records (generation {installed}): the "
                             f"file was replaced. `tfdiff-device recover {model_path} --reset-state` takes it as "
                             "shipped")
        if diff.generation <= installed:
            if out is None and current == diff.target_digest:
                return Result("already", model_path, diff)
            raise ApplyError(f"diff is generation {diff.generation}, but this model is already at "
                             f"generation {installed}; refusing to go back")
        already = _is_target(diff, current)
        if out is not None:
            return _apply_to_copy(model_path, diff, out, installed, already)
        if strategy == "copy" or (strategy == "auto" and _copy_writes_less(model_path, diff)):
            return _apply_by_swap(model_path, diff, installed, already)
        return _apply_in_place(model_path, diff, installed, already)


def installed_generation(model_path: "str | os.PathLike") -> int:
    """The generation the model holds: 0 (as shipped) until a diff was applied to it."""
    return _read_state(model_path)[0]


def state_matches(model_path: "str | os.PathLike") -> bool:
    """True unless the state records the weights digest of another model (the model file was replaced)."""
    _, recorded = _read_state(model_path)
    return recorded is None or recorded == weights_digest_of(model_path)


def reset_state(model_path: "str | os.PathLike") -> None:
    """Take the model as shipped: forget its recorded generation and its undo record (the owner's decision)."""
    model_path = _model(model_path)
    with _locked(model_path):
        for suffix in (STATE_SUFFIX, UNDO_SUFFIX):
            if os.path.lexists(model_path + suffix):
                os.unlink(model_path + suffix)
        fsync_dir(os.path.dirname(model_path))


def _read_state(model_path):
    """(generation, recorded weights digest or None) from MODEL.tfdiff-state; (0, None) without one.

    The state is "generation N" and, since it is tied to the model,
    "weights <sha256 hex>": the digest of the model that generation is.
    """
    return _state_file(os.fspath(model_path) + STATE_SUFFIX)


def _parse_state(path):
    """(generation, digest) of a state-format record that must name a digest (swap, previous-state)."""
    generation, digest = _state_file(path)
    if digest is None:
        raise ApplyError(f"{path} is damaged: expected 'generation N weights DIGEST'")
    return generation, digest


def _state_file(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return 0, None
    except OSError as e:
        raise ApplyError(f"cannot read {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        raw = f.read(256)
    fields = raw.decode("ascii", "replace").split()
    if (len(fields) not in (2, 4) or fields[0] != "generation" or not fields[1].isdigit()
            or int(fields[1]) >= 2**32 or (len(fields) == 4 and (fields[2] != "weights" or len(fields[3]) != 64))):
        raise ApplyError(f"{path} is damaged: expected 'generation N weights DIGEST'")
    try:
        recorded = bytes.fromhex(fields[3]) if len(fields) == 4 else None
    except ValueError:
        raise ApplyError(f"{path} is damaged: expected 'generation N weights DIGEST'") from None
    return int(fields[1]), recorded


def _write_state(model_path, generation, digest):
    write_atomic(os.fspath(model_path) + STATE_SUFFIX, _state_text(generation, digest))


def _state_text(generation, digest):
    return f"generation {generation}\nweights {digest.hex()}\n".encode()


def weights_digest_of(model_path):
    """The weights digest of the .tflite at `model_path`, as diffs name their base and target."""
    return read_mapped(model_path, _digest)


def recover(model_path: "str | os.PathLike", _locked_already: bool = False) -> bool:
    """Finish an update interrupted by a crash; returns True if one was found.

    Raises ApplyError when a journal is there but does not belong to the
    model (see `discard`); the model is then left as it is.
    """
    if not _locked_already:
        model_path = _model(model_path)
        with _locked(model_path):
            return recover(model_path, _locked_already=True)
    journal = model_path + JOURNAL_SUFFIX
    _clean_leftovers(model_path)
    if os.path.lexists(model_path + SWAP_SUFFIX):
        return _finish_swap(model_path)
    if not os.path.lexists(journal):
        return False
    header = _replay(model_path, journal)
    _finish(model_path, journal, header)
    return True


def discard(model_path: "str | os.PathLike") -> bool:
    """Delete a journal that recovery refused (one left by another model); returns True if one was there.

    Only for a journal `recover` reported as foreign: discarding the journal of
    a half-written update of *this* model leaves it half-written.
    """
    model_path = _model(model_path)
    with _locked(model_path):
        found = False
        for path in (model_path + JOURNAL_SUFFIX + ".tmp", model_path + JOURNAL_SUFFIX):
            if os.path.lexists(path):
                os.unlink(path)
                found = True
        fsync_dir(os.path.dirname(os.path.abspath(model_path)))
        return found


def rollback(model_path: "str | os.PathLike") -> int:
    """Restore the generation before the last update, bit for bit, from its undo record.

    The undo record (MODEL.tfdiff-undo) is the last update's journal: the old
    and new value of every position it wrote. Rolling back commits the
    inverse journal and replays it, so a crash at any instant leaves the
    current model or, after the next `recover`, the previous one. The
    installed generation goes back with it. Returns the restored generation.
    """
    model_path = _model(model_path)
    with _locked(model_path):
        recover(model_path, _locked_already=True)
        undo, journal = model_path + UNDO_SUFFIX, model_path + JOURNAL_SUFFIX
        if not os.path.lexists(undo) and os.path.lexists(model_path + PREVIOUS_SUFFIX):
            return _rollback_by_swap(model_path)
        if not os.path.lexists(undo):
            raise ApplyError(f"{model_path} has no undo record: nothing to roll back")
        header = read_header(undo, model_path)
        if weights_digest_of(model_path) != header.target:
            raise ApplyError(f"{model_path} is not the model its undo record was made for; refusing to roll back")
        write_inverse(undo, journal + ".tmp", header)
        _commit(journal, "rollback")

        def finish():
            os.unlink(undo)
            inverse = _replay(model_path, journal)
            _finish(model_path, journal, inverse)
            return inverse.generation_to
        return _committed(model_path, finish)


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
    """Remove what killed runs left (an uncommitted journal, an --out's plan and copy); under the lock."""
    leftovers = [model_path + JOURNAL_SUFFIX + ".tmp", model_path + PLAN_SUFFIX]
    record = model_path + OUT_SUFFIX
    if os.path.lexists(record):
        with os.fdopen(os.open(record, os.O_RDONLY | os.O_NOFOLLOW), "rb") as f:
            named = f.read(4096).decode("utf-8", "replace")
        if named.endswith(TMP_SUFFIX):  # only ever a copy this applier made
            leftovers.append(named)
        leftovers.append(record)
    _remove(*leftovers)


def _commit(journal, stage):
    """Rename the written JOURNAL.tmp to JOURNAL and fsync the directory: the commit point of an update."""
    _crash_point(f"{stage}-written")
    os.replace(journal + ".tmp", journal)
    fsync_dir(os.path.dirname(os.path.abspath(journal)))
    _crash_point(f"{stage}-committed")


def _committed(model_path, work):
    """Run `work()` after the commit point: any failure leaves a committed update for `recover`."""
    try:
        return work()
    except (OSError, ApplyError) as e:
        raise UpdateCommittedError(f"the update of {model_path} is committed but not finished ({e}); "
                                   f"`tfdiff-device recover {model_path}` finishes it") from None


def _finish(model_path, journal, header):
    """After a replay: check the model is the target, record its generation, keep the undo record."""
    digest = weights_digest_of(model_path)
    if digest != header.target:
        raise ApplyError(f"journal replay left {model_path} with unexpected weights "
                         f"({digest.hex()[:12]}, expected {header.target.hex()[:12]})")
    _write_state(model_path, header.generation_to, digest)
    _remove(model_path + PREVIOUS_SUFFIX, model_path + PREVIOUS_SUFFIX + "-state")  # one rollback record
    if header.generation_to > header.generation_from:
        os.replace(journal, model_path + UNDO_SUFFIX)  # one undo generation: the newest update's
    else:
        os.unlink(journal)  # a rollback is not itself undone
    fsync_dir(os.path.dirname(os.path.abspath(model_path)))


# -- the two modes -----------------------------------------------------------
def _apply_in_place(model_path, diff, installed, already):
    if not os.access(model_path, os.W_OK):
        raise ApplyError(f"{model_path} is not writable")
    if already:  # record its generation, nothing else to do
        _write_state(model_path, diff.generation, diff.target_digest)
        return Result("already", model_path, diff)
    journal = model_path + JOURNAL_SUFFIX
    patched = _prepare(model_path, diff, journal + ".tmp", installed)
    _commit(journal, "journal")

    def finish():
        header = _replay(model_path, journal)
        _crash_point("model-written")
        _finish(model_path, journal, header)
    _committed(model_path, finish)
    return Result("applied", model_path, diff, patched)


def _copy_writes_less(model_path, diff):
    """True when journaling the changed words would write more than a copy of the model."""
    changed = sum(e.values.size if e.method == "sparse" else e.size for e in diff.entries)
    return _JOURNAL_BYTES_PER_ELEMENT * changed > os.path.getsize(model_path)


def _apply_by_swap(model_path, diff, installed, already):
    """The copy strategy: MODEL.tfdiff-next built and checked whole, the old model kept, then one rename.

    The swap record (written first) names the target digest; after a kill,
    `recover` finishes the update if the model already is the target, and
    otherwise removes what was built, leaving the old model.
    """
    if already:
        _write_state(model_path, diff.generation, diff.target_digest)
        return Result("already", model_path, diff, strategy="copy")
    swap, following, previous = (model_path + SWAP_SUFFIX, model_path + NEXT_SUFFIX, model_path + PREVIOUS_SUFFIX)
    write_atomic(swap, _state_text(diff.generation, diff.target_digest))
    _remove(following, following + ".plan")
    try:
        patched = _patched_copy(model_path, diff, following)
    except BaseException:
        _remove(following, swap)
        raise
    _remove(previous + ".tmp")
    os.link(model_path, previous + ".tmp")  # the old model, kept for rollback (no copy: a second name)
    write_atomic(previous + "-state", _state_text(installed, diff.base_digest))
    os.replace(previous + ".tmp", previous)
    _crash_point("swap-written")
    os.replace(following, model_path)  # the commit point
    fsync_dir(os.path.dirname(model_path))
    _crash_point("swap-committed")
    _committed(model_path, lambda: _finish_swap(model_path))
    return Result("applied", model_path, diff, patched, strategy="copy")


def _finish_swap(model_path):
    """After a kill or a swap: the model is the swap record's target (finish) or not (undo what was built)."""
    generation, target = _parse_state(model_path + SWAP_SUFFIX)
    previous = model_path + PREVIOUS_SUFFIX
    if weights_digest_of(model_path) == target:
        _write_state(model_path, generation, target)
        _remove(model_path + UNDO_SUFFIX)  # the rollback record is now the previous model
    elif os.path.lexists(previous) and os.path.samefile(previous, model_path):
        _remove(previous, previous + "-state")  # not committed: the link to the model as it still is goes
    _remove(model_path + NEXT_SUFFIX, model_path + NEXT_SUFFIX + ".plan", previous + ".tmp", model_path + SWAP_SUFFIX)
    fsync_dir(os.path.dirname(model_path))
    return True


def _rollback_by_swap(model_path):
    """Put MODEL.tfdiff-previous back, if it is the model its state records; returns its generation."""
    previous = model_path + PREVIOUS_SUFFIX
    generation, digest = _parse_state(previous + "-state")
    if weights_digest_of(previous) != digest:
        raise ApplyError(f"{previous} is not the model its state records; refusing to roll back")
    write_atomic(model_path + SWAP_SUFFIX, _state_text(generation, digest))
    _crash_point("rollback-written")
    os.replace(previous, model_path)  # the commit point
    fsync_dir(os.path.dirname(model_path))
    _crash_point("rollback-committed")
    _committed(model_path, lambda: _finish_swap(model_path))
    _remove(previous + "-state")
    return generation


def previous_generation(model_path):
    """The generation of MODEL.tfdiff-previous, the copy strategy's rollback record."""
    return _parse_state(os.fspath(model_path) + PREVIOUS_SUFFIX + "-state")[0]


def _patched_copy(model_path, diff, path, patch=True):
    """A new file at `path` (never through a planted file or symlink): the model, patched, fsynced; returns the
    number of patched elements (None with `patch` False: a plain copy)."""
    with open(model_path, "rb") as source, os.fdopen(
            os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), "wb") as copy:
        shutil.copyfileobj(source, copy, 1 << 20)
    patched = _patch_into(model_path, diff, path) if patch else None
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
    return patched


def _remove(*paths):
    for path in paths:
        if os.path.lexists(path):
            os.unlink(path)  # a symlink itself, never its target


def _apply_to_copy(model_path, diff, out, installed, already):
    """Copy, patch the copy, rename it over `out`; a kill leaves files `recover MODEL` or the next apply removes."""
    tmp, record = out + TMP_SUFFIX, model_path + OUT_SUFFIX
    _remove(tmp, model_path + PLAN_SUFFIX)
    write_atomic(record, tmp.encode("utf-8"))  # first, so that recover can find the copy
    patched = None
    try:
        patched = _patched_copy(model_path, diff, tmp, patch=not already)
        _crash_point("copy-written")
        os.replace(tmp, out)
        fsync_dir(os.path.dirname(out))
    finally:
        _remove(tmp, record)
    _write_state(out, diff.generation, diff.target_digest)
    if patched is None:
        return Result("already", out, diff, strategy="out")
    return Result("applied", out, diff, patched, strategy="out")


def _is_target(diff, current):
    """True if the model (weights digest `current`) already is the diff's target; ApplyError unless it is its base.

    Checked before any journal is written, so a diff for another model costs
    one read of the weights and no disk writes.
    """
    if current == diff.target_digest:
        return True
    if current != diff.base_digest:
        raise ApplyError(f"diff (generation {diff.generation}) is for base model "
                         f"{diff.base_digest.hex()[:12]}, but this model is {current.hex()[:12]}")
    return False


# -- preparing: every check happens here, before any write to the model ------
def _prepare(model_path, diff, plan_path, installed):
    """Stream the patch, one weight at a time, into a journal file at `plan_path`.

    Returns the number of patched elements. Raises, leaving no file, on any
    mismatch: memory holds one weight at a time, never the model or the plan.
    """
    header = JournalHeader(diff.base_digest, diff.target_digest, os.path.getsize(model_path),
                           len({e.name for e in diff.entries}), installed, diff.generation)
    try:
        with JournalWriter(plan_path, header) as journal:
            return _patch_weights(model_path, diff,
                                  lambda mm, positions, values: journal.add(*_word_changes(mm, positions, values)))
    except BaseException:
        if os.path.exists(plan_path):
            os.unlink(plan_path)
        raise


def _patch_into(model_path, diff, copy_path):
    """Write the patched weights straight into `copy_path`, a byte copy of the model (no plan, no journal)."""
    with open(copy_path, "r+b") as f, mmap.mmap(f.fileno(), 0) as out:
        views = [np.frombuffer(out, "<u4", count=len(out) // 4), np.frombuffer(out, np.uint8)]

        def write(_, positions, values):
            if values.dtype.itemsize == 4:
                views[0][positions // 4] = np.ascontiguousarray(values).view("<u4")
            else:
                views[1][positions] = values.view(np.uint8)
            if positions.size:  # written back and dropped, so memory holds one weight at a time
                _release(out, [(int(positions.min()), int(positions.max()) + values.dtype.itemsize)], flush=True)
        try:
            patched = _patch_weights(model_path, diff, write)
        finally:
            views.clear()  # the mmap's views go before it closes
        out.flush()
    return patched


def _patch_weights(model_path, diff, write):
    """Patch weight by weight: `write(model mmap, file positions, new values)` for each patched weight.

    The patched weights are hashed from the values written; ApplyError
    unless they are the diff's target. Returns the number of patched elements.
    """
    with open(model_path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        model = TFLiteFile(mm)
        weight_map = model.weight_map()
        entries = _check_entries(diff, weight_map)
        after = WeightsHasher()  # the base digest was checked, under the lock, before this
        patched = 0
        for name in weight_map.names():
            values = model.weight_values(name).reshape(-1)
            if name in entries:
                touched = np.zeros(values.size, dtype=bool)
                for entry in entries[name]:  # a composed diff may patch a weight twice, in order
                    positions = entry.indices if entry.method == "sparse" else np.arange(values.size)
                    values[positions] = patched_values(entry, values[positions], positions)
                    touched[positions] = True
                changed = np.flatnonzero(touched)
                write(mm, model.byte_positions(name)[changed], values[changed])
                patched += changed.size
                del touched
            after.update(name, values.reshape(weight_map.shape(name)))
            _release(mm, model.weight_spans_of(name))
            del values
        del model
    if after.digest() != diff.target_digest:
        raise ApplyError("patched weights do not match the diff's target digest; refusing to write")
    return patched


def _word_changes(data, positions, new_values):
    """(words, old, new): the 4-byte words holding changed elements, before and after, as uint32 bits.

    The journal writes whole words; an int8 element shares its word with its
    neighbours, which keep the bytes they have.
    """
    width = new_values.dtype.itemsize
    if width == 4:  # a float32 element is its own aligned word: no grouping (np.unique of 64M took 39 s)
        words = positions // 4
        bits = np.frombuffer(data, dtype="<u4", count=len(data) // 4)
        return words, bits[words], np.ascontiguousarray(new_values).view("<u4").reshape(-1)
    raw = np.frombuffer(data, dtype=np.uint8)
    ordered = np.sort(positions // 4)
    words = ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))] if ordered.size else ordered
    before = raw[(4 * words)[:, None] + np.arange(4)]
    after = before.copy()
    row = np.searchsorted(words, positions // 4)
    after[row[:, None], (positions % 4)[:, None] + np.arange(width)] = new_values.view(np.uint8).reshape(-1, width)
    del raw
    return words, before.view("<u4").reshape(-1), after.view("<u4").reshape(-1)


def _check_entries(diff, weight_map):
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


def _digest(model):
    """The weights digest of a .tflite model as it is on disk, one weight at a time (pages released)."""
    hasher = WeightsHasher()
    weight_map = model.weight_map()
    for name in weight_map.names():
        hasher.update(name, model.weight_values(name))
        _release(model.data, model.weight_spans_of(name))
    return hasher.digest()


def _release(data, spans, flush=False):
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


def _word_span(words):
    return [(4 * int(words.min()), 4 * int(words.max()) + 4)] if words.size else []


def _replay(model_path, journal):
    """Write a complete journal's new values into the model, and fsync; returns its header.

    Before any write, every position is checked to lie inside the model's
    weight buffers and to hold the journal's old or new value there, so a
    journal of another model is refused with the model untouched.
    """
    header = read_header(journal, model_path)
    with open(model_path, "r+b") as m, mmap.mmap(m.fileno(), 0) as mm:
        model = TFLiteFile(mm)
        model.weight_map()
        bits = np.frombuffer(mm, dtype="<u4", count=len(mm) // 4)
        problem = None
        for words, old, new in chunks(journal, header):
            if not model.inside_weights(words):
                problem = f"writes outside the weights of {model_path}"
            else:
                held = bits[words]
                if not np.all((held == old) | (held == new)):
                    problem = f"does not belong to {model_path} (the values there differ)"
            _release(mm, _word_span(words))
            if problem:
                break
        if problem is None:
            for i, (words, _, new) in enumerate(chunks(journal, header)):
                bits[words] = new
                _release(mm, _word_span(words), flush=True)
                if i == header.chunks // 2:
                    _crash_point("half-written")
                _pause_for_tests()
            mm.flush()
            os.fsync(m.fileno())
        del bits, model  # views of the mmap: gone before it closes
    if problem:
        raise ApplyError(f"journal {journal} {problem}: `python -m device recover --discard {model_path}` "
                         "deletes it")
    return header


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


def _pause_for_tests():
    """TFDIFF_REPLAY_PAUSE (seconds per weight) widens the write window, so random kills land mid-write."""
    pause = os.environ.get("TFDIFF_REPLAY_PAUSE")
    if pause:
        time.sleep(float(pause))


__all__ = ["apply", "recover", "discard", "rollback", "reset_state", "state_matches", "installed_generation",
           "UpdateCommittedError", "ApplyError", "DiffFormatError",
           "Result"]
