"""The device's safety on golden files, without TensorFlow: signatures, trusted keys, generations,
graph binding, journals, kills, rollback, composed diffs, crafted and damaged inputs.

tests/test_device.py checks, with TensorFlow and LiteRT, that a patched model is bit for bit the
converted fold of a trained diff; this file checks that nothing bad gets through and that every
interruption leaves one generation or the other (tests/device_world.py)."""
import hashlib
import os
import re
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from benchmarks.fuzz import mutations
from device import applier, journal, signing, trust
from device.status import status
from device.format import DiffFile, DiffFormatError, Entry
from device.patch import patch_weight
from tests.device_world import (ROOT, digest, make_world, next_diff, run_cli, signed, trusting, weight_bytes,
                                weights_of)
from tfdiff.diff import compose


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(directory, None, {method: (generation-1 DiffFile, None)}): see tests/device_world.py. The server's
    key is the devices' trusted key ($TFDIFF_PUBLIC_KEY)."""
    tmp = tmp_path_factory.mktemp("device")
    diffs = make_world(tmp)
    undo = trusting(tmp)
    yield tmp, None, {name: (diff, None) for name, diff in diffs.items()}
    undo()


def test_copy_mode_leaves_the_original_alone(world, tmp_path):
    tmp, _, _ = world
    model = tmp_path / "device.tflite"
    original = (tmp / "base.tflite").read_bytes()
    model.write_bytes(original)
    applier.apply(model, tmp / "sparse.tfdiff", out=tmp_path / "new.tflite")
    assert model.read_bytes() == original
    assert weight_bytes(tmp_path / "new.tflite") == weight_bytes(tmp / "sparse-folded.tflite")


def test_bad_diffs_are_rejected_and_the_model_is_unchanged(world, tmp_path):
    tmp, _, _ = world
    model = tmp_path / "device.tflite"
    original = (tmp / "base.tflite").read_bytes()
    model.write_bytes(original)
    good = (tmp / "hash.tfdiff").read_bytes()
    signed(tmp, next_diff(tmp / "sparse-folded.tflite", 1, seed=5, method="hash"), tmp_path / "other.tfdiff")
    tampered = bytearray(good)
    tampered[len(good) // 2] ^= 1
    unsigned = (tmp / "hash-unsigned.tfdiff").read_bytes()
    # Cases the parser must catch: the development mode skips the signature.
    padded = bytearray(unsigned)
    cases = {
        "other.tfdiff": (None, "is for base model", []),
        "truncated.tfdiff": (good[:len(good) // 3], "not signed", []),
        "tampered.tfdiff": (bytes(tampered), "signature does not match", []),
        "version.tfdiff": (good[:6] + b"\x09\x00" + good[8:], "signature does not match", []),
        "notadiff.tfdiff": (b"hello", "not signed", []),
        "unsigned.tfdiff": (unsigned, "not signed", []),
        "huge.tfdiff": (good, "larger than the 100-byte limit", ["--max-diff-bytes", "100"]),
        "dev-truncated.tfdiff": (unsigned[:len(unsigned) // 3], "truncated|checksum", ["--allow-unsigned"]),
        "dev-version.tfdiff": (unsigned[:6] + b"\x09\x00" + unsigned[8:], "version 9", ["--allow-unsigned"]),
        "dev-trailing.tfdiff": (bytes(padded) + b"\0", "checksum|unexpected|canonical", ["--allow-unsigned"]),
    }
    for name, (data, message, flags) in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        proc = run_cli("apply", model, tmp_path / name, *flags)
        assert proc.returncode != 0, name
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("tfdiff-device: error:"), proc.stderr
        assert __import__("re").search(message, lines[0]), (name, lines[0])
        assert model.read_bytes() == original, name
    assert sorted(os.listdir(tmp_path)) == sorted(["device.tflite", "device.tflite.tfdiff-lock", *cases])
    proc = run_cli("apply", model, "/dev/zero")
    assert proc.returncode == 1 and "larger than" in proc.stderr and "Traceback" not in proc.stderr


def test_a_device_without_a_trusted_key_refuses_every_diff(world, tmp_path):
    tmp, _, _ = world
    model = tmp_path / "device.tflite"
    original = (tmp / "base.tflite").read_bytes()
    model.write_bytes(original)
    env = {k: v for k, v in os.environ.items() if k != trust.KEY_ENVIRONMENT}  # the key directory is empty
    for diff in ("hash.tfdiff", "hash-unsigned.tfdiff"):
        proc = run_cli("apply", model, tmp / diff, env=env)
        assert proc.returncode == 1 and "no trusted public key" in proc.stderr, proc.stderr
        assert model.read_bytes() == original
    # A key beside the model (planted by whoever can write the directory) counts only when asked for.
    (tmp_path / ("device.tflite" + trust.KEY_SUFFIX)).write_bytes((tmp / "server.pub").read_bytes())
    proc = run_cli("apply", model, tmp / "hash.tfdiff", env=env)
    assert proc.returncode == 1 and "no trusted public key" in proc.stderr, proc.stderr
    assert run_cli("apply", model, tmp / "hash-unsigned.tfdiff", "--key-beside-model", env=env).returncode == 1
    proc = run_cli("apply", model, tmp / "hash.tfdiff", "--key-beside-model", env=env)
    assert proc.returncode == 0, proc.stderr
    assert applier.installed_generation(model) == 1


def padded_varint_copy(data):
    """The same diff content, encoded differently: the first LEB128 gap padded with a
    continuation byte, the entries coded again, the lengths and the sha256 trailer fixed up,
    the signature kept."""
    import hashlib
    import struct
    from device import format as wire
    diff = wire.decode(data)
    raw = b"".join(wire.encode_entry(e) for e in diff.entries)
    entry = diff.entries[0]
    start = wire.entry_header_bytes(entry.name, len(entry.shape), "sparse")
    (length,) = struct.unpack_from("<I", raw, start - 4)
    first = raw[start]
    assert first < 0x80
    raw = raw[:start - 4] + struct.pack("<I", length + 1) + bytes([first | 0x80, 0]) + raw[start + 1:]
    coding, block = wire._code_entries(raw)
    body = data[:wire._HEADER.size] + wire._CODING.pack(coding, len(raw)) + block
    return body + hashlib.sha256(body).digest() + data[-wire.SIGNATURE_BYTES:]


def test_the_signature_covers_the_bytes_received(world, tmp_path):
    """Checked over the raw file before parsing, a signature verifies one file only."""
    tmp, _, _ = world
    from device.format import decode
    data = (tmp / "sparse.tfdiff").read_bytes()
    twin = padded_varint_copy(data)
    assert twin != data
    with pytest.raises(DiffFormatError, match="canonical"):
        decode(twin)
    model = tmp_path / "device.tflite"
    original = (tmp / "base.tflite").read_bytes()
    model.write_bytes(original)
    (tmp_path / "twin.tfdiff").write_bytes(twin)
    with pytest.raises(signing.SignatureError, match="does not match"):
        applier.apply(model, tmp_path / "twin.tfdiff")
    assert model.read_bytes() == original


def test_no_rollback_to_an_older_generation(world, tmp_path):
    tmp, _, _ = world
    model = tmp_path / "device.tflite"
    model.write_bytes((tmp / "base.tflite").read_bytes())
    assert applier.installed_generation(model) == 0
    applier.apply(model, tmp / "hash.tfdiff")
    assert applier.installed_generation(model) == 1
    # A validly signed diff whose base is this very model, but whose generation is not newer.
    stale = signed(tmp, next_diff(model, 1, seed=3, method="hash"), tmp_path / "stale.tfdiff")
    before = model.read_bytes()
    proc = run_cli("apply", model, stale)
    assert proc.returncode == 1 and "refusing to go back" in proc.stderr, proc.stderr
    assert model.read_bytes() == before and applier.installed_generation(model) == 1


def test_signed_diffs(world, tmp_path):
    tmp, _, _ = world
    model = tmp_path / "device.tflite"
    original = (tmp / "base.tflite").read_bytes()
    model.write_bytes(original)
    proc = subprocess.run([sys.executable, "-m", "tfdiff", "keygen", "--private", tmp_path / "k.pem",
                           "--public", tmp_path / "k.pub"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    signing.keygen(tmp_path / "other.pem", tmp_path / "other.pub")
    diff = tmp_path / "d.tfdiff"
    diff.write_bytes((tmp / "sparse-unsigned.tfdiff").read_bytes())
    for key, message in [(tmp_path / "k.pub", "not signed")]:
        with pytest.raises(signing.SignatureError, match=message):
            applier.apply(model, diff, public_key=key)
    proc = subprocess.run([sys.executable, "-m", "tfdiff", "sign", diff, "--key", tmp_path / "k.pem"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1 and "--model" in proc.stderr  # a signature binds a graph, or says it does not
    proc = subprocess.run([sys.executable, "-m", "tfdiff", "sign", diff, "--key", tmp_path / "k.pem",
                           "--model", tmp / "base.tflite"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert diff.stat().st_size == (tmp / "sparse-unsigned.tfdiff").stat().st_size + 68
    with pytest.raises(signing.SignatureError, match="does not match"):
        applier.apply(model, diff, public_key=tmp_path / "other.pub")
    forged = bytearray(diff.read_bytes())
    forged[-1] ^= 1
    (tmp_path / "forged.tfdiff").write_bytes(bytes(forged))
    with pytest.raises(signing.SignatureError, match="does not match"):
        applier.apply(model, tmp_path / "forged.tfdiff", public_key=tmp_path / "k.pub")
    assert model.read_bytes() == original
    proc = run_cli("apply", model, diff, "--public-key", tmp_path / "k.pub")
    assert proc.returncode == 0, proc.stderr
    assert weight_bytes(model) == weight_bytes(tmp / "sparse-folded.tflite")


def test_successive_generations_and_out_of_order(world, tmp_path):
    tmp, _, _ = world
    gen2 = next_diff(tmp / "hash-folded.tflite", 2, seed=2, method="hash")
    signed(tmp, gen2, tmp_path / "gen2.tfdiff")
    model = tmp_path / "device.tflite"
    model.write_bytes((tmp / "base.tflite").read_bytes())
    with pytest.raises(applier.ApplyError, match=r"generation 2\) is for base model"):
        applier.apply(model, tmp_path / "gen2.tfdiff")
    applier.apply(model, tmp / "hash.tfdiff")
    applier.apply(model, tmp_path / "gen2.tfdiff")
    want = weights_of(tmp / "hash-folded.tflite")
    for entry in gen2.entries:
        want[entry.name] = patch_weight(entry, want[entry.name])
    got = weights_of(model)
    for name, value in want.items():
        assert got[name].tobytes() == value.astype("<f4").tobytes(), name
    assert applier.weights_digest_of(model) == gen2.target_digest
    with pytest.raises(applier.ApplyError, match="refusing to go back"):
        applier.apply(model, tmp / "sparse.tfdiff")


@pytest.mark.parametrize("stage", ["journal-written", "journal-committed", "half-written", "model-written"])
def test_killed_at_each_stage_leaves_old_or_finishes_new(world, tmp_path, stage):
    tmp, _, _ = world
    model = tmp_path / "device.tflite"
    model.write_bytes((tmp / "base.tflite").read_bytes())
    old, new = digest(model), digest(tmp / "hash-folded.tflite")
    env = dict(os.environ, TFDIFF_CRASH_AT=stage)
    proc = run_cli("apply", model, tmp / "hash.tfdiff", "--strategy", "inplace", env=env)
    assert proc.returncode == -signal.SIGKILL
    committed = stage != "journal-written"
    assert os.path.exists(str(model) + applier.JOURNAL_SUFFIX) == committed
    if stage in ("journal-written", "journal-committed"):
        assert digest(model) == old
    proc = run_cli("recover", model)
    assert proc.returncode == 0, proc.stderr
    assert digest(model) == (new if committed else old)
    # The generation commits with the model: recovery records it too.
    assert applier.installed_generation(model) == (1 if committed else 0)
    assert not any(p.name.endswith((".tmp", "-journal")) for p in tmp_path.iterdir())
    assert os.path.exists(str(model) + applier.UNDO_SUFFIX) == committed  # the journal became the undo record
    assert run_cli("apply", model, tmp / "hash.tfdiff").returncode == 0
    assert digest(model) == new


def test_sigkill_at_random_instants_some_mid_write(world, tmp_path):
    tmp, _, _ = world
    model = tmp_path / "device.tflite"
    base = (tmp / "base.tflite").read_bytes()
    old, new = digest(tmp / "base.tflite"), digest(tmp / "hash-folded.tflite")
    command = [sys.executable, "-m", "device", "apply", str(model), str(tmp / "hash.tfdiff"), "--strategy", "inplace"]
    # A pause after each weight's write widens the window, so that kills land mid-write.
    pause = 0.05
    env = dict(os.environ, TFDIFF_REPLAY_PAUSE=str(pause))
    rng = np.random.default_rng(0)
    seen_before_recovery = []
    for trial in range(8):
        model.write_bytes(base)
        if os.path.exists(str(model) + applier.STATE_SUFFIX):
            os.unlink(str(model) + applier.STATE_SUFFIX)
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        if trial % 2:
            # Timed from the first write the model shows, not from a wall-clock estimate of the whole run: on a
            # loaded machine start-up time varies by seconds, and kills timed from the start all landed after the end.
            while proc.poll() is None and model.read_bytes() == base:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, pause))
        else:
            time.sleep(rng.uniform(0, 0.5))  # anywhere in start-up, verification or the journal's writing
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen_before_recovery.append(digest(model))
        assert run_cli("recover", model).returncode == 0
        assert digest(model) in (old, new)
    # The kills proved something only if some of them left a half-written model to recover.
    assert any(d not in (old, new) for d in seen_before_recovery), "no kill landed mid-write"


def v3_journal(model, words, old, new, target=b"\0" * 32):
    """A complete, committed journal of format 3 (an earlier version's: positions, old and new bits) for `model`."""
    body = struct.pack("<8s32s32sQIII", b"TFDJRNL3", b"\0" * 32, target, os.path.getsize(model), 1, 0, 1)
    body += struct.pack("<Q", len(words)) + np.asarray(words, "<i8").tobytes()
    body += np.asarray(old, "<f4").tobytes() + np.asarray(new, "<f4").tobytes()
    path = str(model) + applier.JOURNAL_SUFFIX
    with open(path, "wb") as f:
        f.write(body + hashlib.sha256(body).digest())
    return path


def committed_journal(world, tmp_path, diff="sparse.tfdiff"):
    """A device model with a genuine committed journal (the apply killed at its commit point)."""
    tmp, _, _ = world
    model = tmp_path / "device.tflite"
    model.write_bytes((tmp / "base.tflite").read_bytes())
    proc = run_cli("apply", model, tmp / diff, "--strategy", "inplace",
                   env=dict(os.environ, TFDIFF_CRASH_AT="journal-committed"))
    assert proc.returncode == -signal.SIGKILL
    return model, str(model) + applier.JOURNAL_SUFFIX


def resealed(path, edit):
    """Rewrite a journal with `edit(bytes) -> bytes` applied to its body and a matching sha256 trailer."""
    body = edit(open(path, "rb").read()[:-32])
    with open(path, "wb") as f:
        f.write(body + hashlib.sha256(body).digest())


def test_a_journal_of_another_model_is_refused_and_can_be_discarded(world, tmp_path):
    tmp, _, _ = world
    donor = tmp_path / "donor.tflite"
    donor.write_bytes((tmp / "base.tflite").read_bytes())
    proc = run_cli("apply", donor, tmp / "hash.tfdiff", "--strategy", "inplace",
                   env=dict(os.environ, TFDIFF_CRASH_AT="journal-committed"))
    assert proc.returncode == -signal.SIGKILL
    # Another device model of the same size, holding other weights, inherits the journal.
    model = tmp_path / "device.tflite"
    model.write_bytes((tmp / "sparse-folded.tflite").read_bytes())
    assert model.stat().st_size == donor.stat().st_size
    os.replace(str(donor) + applier.JOURNAL_SUFFIX, str(model) + applier.JOURNAL_SUFFIX)
    before = model.read_bytes()
    proc = run_cli("recover", model)
    assert proc.returncode == 1 and "does not belong" in proc.stderr and "--discard" in proc.stderr, proc.stderr
    assert model.read_bytes() == before
    assert run_cli("apply", model, tmp / "sparse.tfdiff").returncode == 1  # blocked until discarded
    proc = run_cli("recover", "--discard", model)
    assert proc.returncode == 0 and "discarded" in proc.stdout
    assert model.read_bytes() == before and not os.path.lexists(str(model) + applier.JOURNAL_SUFFIX)
    assert run_cli("recover", model).returncode == 0


def test_an_old_format_journal_cannot_write_outside_the_weights(world, tmp_path):
    tmp, _, _ = world
    model = tmp_path / "device.tflite"
    model.write_bytes((tmp / "base.tflite").read_bytes())
    before = model.read_bytes()
    # Element 2 is the flatbuffer's header; its old value is what is there, so only the bounds check stops it.
    held = np.frombuffer(before[8:12], "<f4")
    v3_journal(model, [2], held, [1.0])
    proc = run_cli("recover", model)
    assert proc.returncode == 1 and "outside" in proc.stderr, proc.stderr
    assert model.read_bytes() == before


def test_a_forged_journal_is_refused_before_any_write(world, tmp_path):
    """Resealed with a valid trailer, a journal with other old values, or holding a diff no trusted key signed,
    changes nothing: recover checks the signature and what the replay would leave before it writes."""
    tmp, _, diffs = world
    model, path = committed_journal(world, tmp_path)
    genuine, before = open(path, "rb").read(), model.read_bytes()
    header = journal.JournalHeader.LAYOUT.size
    update = len((tmp / "sparse.tfdiff").read_bytes())

    def other_old_value(body):  # the last old float32 value, one bit flipped
        return body[:-1] + bytes([body[-1] ^ 0x01])

    def unsigned(body):  # the same diff with its signature cut off, the length field to match
        fields = list(journal.JournalHeader.LAYOUT.unpack(body[:header]))
        fields[-1] -= 68
        return journal.JournalHeader.LAYOUT.pack(*fields) + body[header:header + update - 68] + body[header + update:]
    for edit, expected in ((other_old_value, "would not leave|holds other values"), (unsigned, "not signed")):
        with open(path, "wb") as f:
            f.write(genuine)
        resealed(path, edit)
        proc = run_cli("recover", model)
        assert proc.returncode == 1 and re.search(expected, proc.stderr), proc.stderr
        assert model.read_bytes() == before
    with open(path, "wb") as f:
        f.write(genuine)
    assert run_cli("recover", model).returncode == 0 and digest(model) == digest(tmp / "sparse-folded.tflite")


def test_the_journal_holds_the_diff_and_four_bytes_per_changed_element(world, tmp_path):
    tmp, _, diffs = world
    model, path = committed_journal(world, tmp_path)
    changed = sum(e.values.size for e in diffs["sparse"][0].entries)
    size = os.path.getsize(path)
    assert size == journal.JournalHeader.LAYOUT.size + len((tmp / "sparse.tfdiff").read_bytes()) + 4 * changed + 32


def test_a_diff_of_another_base_leaves_no_journal_and_the_model_untouched(world, tmp_path):
    tmp, _, _ = world
    model = tmp_path / "device.tflite"
    model.write_bytes((tmp / "sparse-folded.tflite").read_bytes())
    before = model.read_bytes()
    with pytest.raises(applier.ApplyError, match="is for base model"):
        applier.apply(model, tmp / "hash.tfdiff", strategy="inplace")
    assert model.read_bytes() == before
    assert not any("journal" in p.name for p in tmp_path.iterdir())


def test_rollback_restores_the_previous_generation_bit_for_bit(world, tmp_path):
    tmp, _, _ = world
    model = tmp_path / "device.tflite"
    original = (tmp / "base.tflite").read_bytes()
    model.write_bytes(original)
    proc = run_cli("rollback", model)
    assert proc.returncode == 1 and "no undo record" in proc.stderr
    assert run_cli("apply", model, tmp / "hash.tfdiff").returncode == 0
    assert digest(model) == digest(tmp / "hash-folded.tflite")
    proc = run_cli("rollback", model)
    assert proc.returncode == 0 and "generation 0" in proc.stdout, proc.stderr
    assert model.read_bytes() == original and applier.installed_generation(model) == 0
    assert run_cli("rollback", model).returncode == 1  # one undo generation, used
    assert run_cli("apply", model, tmp / "hash.tfdiff").returncode == 0
    assert digest(model) == digest(tmp / "hash-folded.tflite")


@pytest.mark.parametrize("strategy,stage", [("inplace", "rollback-written"), ("inplace", "rollback-committed"),
                                            ("inplace", "half-written"), ("copy", "rollback-written"),
                                            ("copy", "rollback-committed")])
def test_rollback_killed_at_each_stage_leaves_one_generation_or_the_other(world, tmp_path, strategy, stage):
    tmp, _, _ = world
    model = tmp_path / "device.tflite"
    model.write_bytes((tmp / "base.tflite").read_bytes())
    assert run_cli("apply", model, tmp / "hash.tfdiff", "--strategy", strategy).returncode == 0
    old, new = digest(tmp / "hash-folded.tflite"), digest(tmp / "base.tflite")
    proc = run_cli("rollback", model, env=dict(os.environ, TFDIFF_CRASH_AT=stage))
    assert proc.returncode == -signal.SIGKILL
    assert run_cli("recover", model).returncode == 0
    committed = stage != "rollback-written"
    assert digest(model) == (new if committed else old)
    assert applier.installed_generation(model) == (0 if committed else 1)
    if not committed:  # the undo record survives an uncommitted rollback
        assert run_cli("rollback", model).returncode == 0 and digest(model) == new


def test_a_composed_diff_equals_the_chain_bit_for_bit(world, tmp_path):
    tmp, _, diffs = world
    gen1 = diffs["sparse"][0]
    gen2 = next_diff(tmp / "sparse-folded.tflite", 2, seed=2, method="hash")
    gen2_model = tmp_path / "gen2.tflite"
    applier.apply(tmp / "sparse-folded.tflite", signed(tmp, gen2, tmp_path / "gen2.tfdiff"), out=gen2_model)
    gen3 = next_diff(gen2_model, 3, seed=3)
    chain = [tmp / "sparse.tfdiff", signed(tmp, gen2, tmp_path / "gen2.tfdiff"),
             signed(tmp, gen3, tmp_path / "gen3.tfdiff")]
    proc = subprocess.run([sys.executable, "-m", "tfdiff", "compose", *map(str, chain), "-o",
                           tmp_path / "catchup.tfdiff", "--key", tmp / "server.pem", "--public-key",
                           tmp / "server.pub"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and "for the chain of 3" in proc.stdout, proc.stderr
    stepwise, caught_up = tmp_path / "stepwise.tflite", tmp_path / "caught-up.tflite"
    for path in (stepwise, caught_up):
        path.write_bytes((tmp / "base.tflite").read_bytes())
    for diff in chain:
        assert run_cli("apply", stepwise, diff).returncode == 0
    assert run_cli("apply", caught_up, tmp_path / "catchup.tfdiff").returncode == 0
    assert caught_up.read_bytes() == stepwise.read_bytes()
    assert applier.installed_generation(caught_up) == 3
    composed = DiffFile.load(tmp_path / "catchup.tfdiff")
    assert composed.method == "mixed" and composed.nbytes < sum(os.path.getsize(p) for p in chain)
    with pytest.raises(ValueError, match="does not follow"):
        compose([gen2, gen1])
    # Killed mid catch-up, the next call finishes it; the undo record takes the device back to gen 0.
    for stage in ("journal-committed", "half-written"):
        caught_up.write_bytes((tmp / "base.tflite").read_bytes())
        for leftover in tmp_path.glob("caught-up.tflite.tfdiff-*"):
            leftover.unlink()
        env = dict(os.environ, TFDIFF_CRASH_AT=stage)
        assert run_cli("apply", caught_up, tmp_path / "catchup.tfdiff", "--strategy", "inplace",
                       env=env).returncode == -signal.SIGKILL
        assert run_cli("recover", caught_up).returncode == 0
        assert caught_up.read_bytes() == stepwise.read_bytes() and applier.installed_generation(caught_up) == 3
    assert run_cli("rollback", caught_up).returncode == 0
    assert caught_up.read_bytes() == (tmp / "base.tflite").read_bytes()
    assert applier.installed_generation(caught_up) == 0


def test_planted_symlinks_are_never_followed(world, tmp_path):
    tmp, _, _ = world
    model = tmp_path / "device.tflite"
    model.write_bytes((tmp / "base.tflite").read_bytes())
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    journal_tmp = tmp_path / ("device.tflite" + applier.JOURNAL_SUFFIX + ".tmp")
    journal_tmp.symlink_to(victim)  # a stray .tmp is discarded under the lock: the link, not its target
    assert run_cli("apply", model, tmp / "hash.tfdiff").returncode == 0
    assert victim.read_bytes() == b"keep me" and not os.path.lexists(journal_tmp)
    lock = tmp_path / ("device.tflite" + applier.LOCK_SUFFIX)
    lock.unlink()
    lock.symlink_to(tmp_path / "dangling")
    proc = run_cli("recover", model)
    assert proc.returncode == 1 and "lock file" in proc.stderr and not os.path.exists(tmp_path / "dangling")


def test_recover_of_a_missing_model_is_an_error(tmp_path):
    proc = run_cli("recover", tmp_path / "missing.tflite")
    assert proc.returncode == 1 and "does not exist" in proc.stderr


def test_damaged_models_and_diffs_fail_with_one_line_and_change_nothing(world, tmp_path):
    """Fuzzing in process: every failure is a one-line ValueError (DiffFormatError,
    ModelFormatError, ApplyError, SignatureError), never another exception, and a failed
    apply leaves the model's bytes as they were."""
    tmp, _, _ = world
    model_bytes = (tmp / "base.tflite").read_bytes()
    diff_bytes = (tmp / "hash-unsigned.tfdiff").read_bytes()
    model, diff = tmp_path / "model.tflite", tmp_path / "d.tfdiff"
    outcomes = {"refused": 0, "applied": 0}
    cases = [(m, diff_bytes) for m in mutations(model_bytes, 150, 1)]
    cases += [(model_bytes, d) for d in mutations(diff_bytes, 150, 2)]
    for model_data, diff_data in cases:
        model.write_bytes(model_data)
        diff.write_bytes(diff_data)
        for leftover in tmp_path.glob("model.tflite.tfdiff-*"):
            leftover.unlink()
        try:
            applier.apply(model, diff, allow_unsigned=True)
            outcomes["applied"] += 1
        except ValueError as e:
            assert "\n" not in str(e)
            assert model.read_bytes() == model_data
            outcomes["refused"] += 1
    assert outcomes["refused"] > 200 and sum(outcomes.values()) == len(cases)


def test_a_crafted_weight_map_cannot_reach_outside_the_weights(world, tmp_path):
    from device.tflite import ModelFormatError, TFLiteFile
    from device.weightmap import Segment, WeightMap
    tmp, _, _ = world
    data = (tmp / "base.tflite").read_bytes()
    model = TFLiteFile(data)
    good = model.weight_map()
    name = good.names()[0]
    first, rest = good.segments(name)[0], good.segments(name)[1:]
    crafted = {
        "negative offset": {name: (good.shape(name), [Segment(first.buffer, -1, first.count, first.start,
                                                              first.dims, first.strides)] + rest)},
        "missing buffer": {name: (good.shape(name), [Segment(-1, 0, first.count, first.start, first.dims,
                                                             first.strides)] + rest)},
        "overlap": {name: (good.shape(name), good.segments(name)),
                    name + "~twin": (good.shape(name), good.segments(name))},
    }
    messages = {"negative offset": "outside buffer", "missing buffer": "does not exist", "overlap": "overlap"}
    for label, weights in crafted.items():
        with pytest.raises(ModelFormatError, match=messages[label]):
            model._check(WeightMap(weights))
    bomb = __import__("zlib").compress(b" " * (80 << 20), 9)
    with pytest.raises(ValueError, match="inflates past"):
        WeightMap.from_bytes(bomb)


@pytest.mark.parametrize("stage", ["swap-written", "swap-committed"])
def test_the_copy_strategy_killed_at_each_step_leaves_old_or_finishes_new(world, tmp_path, stage):
    tmp, _, _ = world
    model = tmp_path / "device.tflite"
    model.write_bytes((tmp / "base.tflite").read_bytes())
    old, new = digest(model), digest(tmp / "hash-folded.tflite")
    proc = run_cli("apply", model, tmp / "hash.tfdiff", "--strategy", "copy",
                   env=dict(os.environ, TFDIFF_CRASH_AT=stage))
    assert proc.returncode == -signal.SIGKILL
    committed = stage == "swap-committed"
    assert digest(model) == (new if committed else old)  # one rename: never a mix
    assert run_cli("recover", model).returncode == 0
    assert digest(model) == (new if committed else old)
    assert applier.installed_generation(model) == (1 if committed else 0)
    left = sorted(p.name for p in tmp_path.iterdir())
    kept = ["device.tflite.tfdiff-previous", "device.tflite.tfdiff-previous-state", "device.tflite.tfdiff-state"]
    assert left == sorted(["device.tflite", "device.tflite.tfdiff-lock"] + (kept if committed else []))
    assert run_cli("apply", model, tmp / "hash.tfdiff").returncode == 0 and digest(model) == new
    assert run_cli("rollback", model).returncode == 0 and digest(model) == old  # the previous file, put back
    assert applier.installed_generation(model) == 0


def test_auto_picks_the_strategy_that_writes_fewer_bytes(world, tmp_path):
    """In place writes the journal and every page holding a changed element; a copy writes the model once."""
    from device.passes import in_place_bytes
    model_bytes, size = 256 << 20, 64 << 20  # one float32 weight filling a 256 MiB model
    rng = np.random.default_rng(0)

    def sparse(count):
        indices = np.sort(rng.choice(size, count, replace=False))
        return DiffFile("sparse", [Entry("w", (size,), "sparse", np.zeros(count, np.float16), indices)],
                        b"\0" * 32, b"\0" * 32, generation=1)
    hashed = DiffFile("hash", [Entry("w", (size,), "hash", np.zeros(1000, np.float16), None, 1, 2)],
                      b"\0" * 32, b"\0" * 32, generation=1, seed=1, num_hashes=2)
    sizes = {"w": (size, 4)}
    picks = {label: applier._copy_writes_less(model_bytes, diff, sizes, 1 << 20)
             for label, diff in (("1,000 elements", sparse(1000)), ("10 %", sparse(size // 10)), ("hash", hashed))}
    assert picks == {"1,000 elements": False, "10 %": True, "hash": True}
    # 10 % of elements spread at random land on every page: in place would write the model and a journal.
    assert in_place_bytes(sparse(size // 10), sizes) > model_bytes
    tmp, _, _ = world
    for method in ("sparse", "hash"):  # the golden model is 3 pages: both diffs touch them all
        model = tmp_path / f"{method}.tflite"
        model.write_bytes((tmp / "base.tflite").read_bytes())
        result = applier.apply(model, tmp / f"{method}.tfdiff")
        assert result.strategy == "copy" and digest(model) == digest(tmp / f"{method}-folded.tflite")
        assert os.path.exists(str(model) + applier.PREVIOUS_SUFFIX)
        assert not os.path.exists(str(model) + applier.UNDO_SUFFIX)
        assert status(model)["rollback"] == {"to_generation": 0} and not status(model)["pending_journal"]
    proc = run_cli("apply", tmp_path / "fresh.tflite", tmp / "hash.tfdiff", "--json")
    assert proc.returncode == 1  # no such model
