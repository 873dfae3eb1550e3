"""The device applier against the converter, LiteRT and crashes (slow: every test trains
or converts through the shared fixture; tests/test_golden.py is the fast check of apply)."""
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tfdiff
from benchmarks.fuzz import mutations
from device import applier, journal, tflite
from device import signing
from device.converter import ConversionError, convert
from device.tflite import TFLiteFile
from tfdiff import keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def every_layer_model(seed=0):
    """One model holding every layer type the core supports."""
    keras.utils.set_random_seed(seed)
    feats = keras.Input((6, 5), name="feats")
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    x = keras.layers.LSTM(16, return_sequences=True, name="lstm")(feats)
    x = keras.layers.Bidirectional(keras.layers.LSTM(8, return_sequences=True), name="bilstm")(x)
    x = keras.layers.GRU(12, return_sequences=True, name="gru")(x)
    x = keras.layers.Conv1D(8, 3, padding="same", name="conv1d")(x)
    e = keras.layers.Embedding(40, 8, name="embedding")(tokens)
    x = keras.layers.Concatenate()([x, e])
    x = keras.layers.Reshape((6, 16, 1))(x)
    x = keras.layers.Conv2D(4, 3, name="conv2d")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(5, name="dense")(x)
    return keras.Model([feats, tokens], out)


def batch(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, 6, 5)).astype("float32"), rng.integers(0, 40, size=(n, 6)).astype("int32")]


def train_diff(base, method, seed=0, generation=1):
    keras.utils.set_random_seed(seed)
    diff_model = tfdiff.wrap(base, method)
    diff_model.compile(keras.optimizers.Adam(0.01), "mse")
    x = batch(seed=seed)
    y = np.random.default_rng(seed + 7).normal(size=(32, 5)).astype("float32")
    diff_model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=tfdiff.callbacks(diff_model))
    return tfdiff.extract(diff_model, generation=generation)


def run_litert(path, inputs):
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    details = sorted(interpreter.get_input_details(), key=lambda d: d["name"])
    outputs = []
    for i in range(inputs[0].shape[0]):
        interpreter.reset_all_variables()  # fused LSTMs keep state across invokes
        for detail, value in zip(details, inputs):  # "feats" < "tokens"
            interpreter.set_tensor(detail["index"], value[i:i + 1])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy())
    return np.concatenate(outputs)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A base model, its .tflite, and signed sparse and hash diffs (`NAME.tfdiff`; unsigned:
    `NAME-unsigned.tfdiff`). The signing key is the devices' trusted key ($TFDIFF_PUBLIC_KEY)."""
    tmp = tmp_path_factory.mktemp("device")
    signing.keygen(tmp / "server.pem", tmp / "server.pub")
    base = every_layer_model()
    convert(base, tmp / "base.tflite")
    diffs = {}
    for name, method in [("sparse", tfdiff.SparseDiff(compression=8.0, end_step=6, frequency=2)),
                         ("hash", tfdiff.HashDiff(compression=8.0, num_hashes=3, seed=1))]:
        diff = train_diff(base, method)
        diff.save(tmp / f"{name}-unsigned.tfdiff")
        signing.sign(tmp / f"{name}-unsigned.tfdiff", tmp / "server.pem", out=tmp / f"{name}.tfdiff",
                     model=tmp / "base.tflite")
        folded = tfdiff.fold(base, diff)
        convert(folded, tmp / f"{name}-folded.tflite")
        diffs[name] = (diff, folded)
    saved = os.environ.get(applier.KEY_ENVIRONMENT)
    os.environ[applier.KEY_ENVIRONMENT] = str(tmp / "server.pub")
    yield tmp, base, diffs
    if saved is None:
        del os.environ[applier.KEY_ENVIRONMENT]
    else:
        os.environ[applier.KEY_ENVIRONMENT] = saved


def signed(tmp, diff, path):
    """Save `diff` at `path` signed by the devices' trusted key, bound to the devices' graph."""
    diff.save(path)
    signing.sign(path, tmp / "server.pem", model=tmp / "base.tflite")
    return path


def weight_bytes(path):
    data = open(path, "rb").read()
    model = TFLiteFile(data)
    wmap = model.weight_map()
    out = {}
    for name in wmap.names():
        out[name] = b"".join(bytes(model.buffer_bytes(s.buffer)[4 * s.offset:4 * (s.offset + s.count)])
                             for s in wmap.segments(name))
    return out


@pytest.mark.parametrize("method", ["sparse", "hash"])
def test_patched_tflite_equals_converted_fold_bit_for_bit(world, method, tmp_path):
    tmp, base, diffs = world
    diff, folded = diffs[method]
    model = tmp_path / "device.tflite"
    model.write_bytes((tmp / "base.tflite").read_bytes())
    result = applier.apply(model, tmp / f"{method}.tfdiff")
    assert result.status == "applied" and result.patched_elements > 0
    expected = tmp / f"{method}-folded.tflite"
    assert weight_bytes(model) == weight_bytes(expected)
    assert len(weight_bytes(model)) == len(tfdiff.named_weights(base))
    x = batch(4, seed=3)
    np.testing.assert_array_equal(run_litert(model, x), run_litert(expected, x))
    assert not np.array_equal(run_litert(model, x), run_litert(tmp / "base.tflite", x))
    np.testing.assert_allclose(run_litert(model, x), folded(x).numpy(), atol=2e-2)
    assert not os.path.exists(str(model) + applier.JOURNAL_SUFFIX)
    assert applier.apply(model, tmp / f"{method}.tfdiff").status == "already"


def test_copy_mode_leaves_the_original_alone(world, tmp_path):
    tmp, _, _ = world
    model = tmp_path / "device.tflite"
    original = (tmp / "base.tflite").read_bytes()
    model.write_bytes(original)
    applier.apply(model, tmp / "sparse.tfdiff", out=tmp_path / "new.tflite")
    assert model.read_bytes() == original
    assert weight_bytes(tmp_path / "new.tflite") == weight_bytes(tmp / "sparse-folded.tflite")


def test_equal_weights_land_in_their_own_buffers():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    a = keras.layers.Dense(4, name="a")(inputs)
    b = keras.layers.Dense(4, name="b")(inputs)
    model = keras.Model(inputs, keras.layers.Add()([a, b]))
    model.get_layer("b").set_weights(model.get_layer("a").get_weights())  # tied values, zero biases
    wmap = TFLiteFile(convert(model)).weight_map()
    buffers = [s.buffer for name in wmap.names() for s in wmap.segments(name)]
    assert len(buffers) == len(set(buffers)) == 4


def test_a_weight_folded_by_the_converter_is_reported_by_name():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4, name="dense")(inputs)
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="norm")(x))
    with pytest.raises(ConversionError, match="not stored as-is.*norm/0/gamma"):
        convert(model)


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "device", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env=env)


def test_bad_diffs_are_rejected_and_the_model_is_unchanged(world, tmp_path):
    tmp, _, _ = world
    model = tmp_path / "device.tflite"
    original = (tmp / "base.tflite").read_bytes()
    model.write_bytes(original)
    good = (tmp / "hash.tfdiff").read_bytes()
    signed(tmp, train_diff(every_layer_model(seed=5), tfdiff.HashDiff(compression=8.0)), tmp_path / "other.tfdiff")
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
    env = {k: v for k, v in os.environ.items() if k != applier.KEY_ENVIRONMENT}
    for diff in ("hash.tfdiff", "hash-unsigned.tfdiff"):
        proc = run_cli("apply", model, tmp / diff, env=env)
        assert proc.returncode == 1 and "no trusted public key" in proc.stderr, proc.stderr
        assert model.read_bytes() == original
    # A key installed beside the model is the device's configuration.
    (tmp_path / ("device.tflite" + applier.KEY_SUFFIX)).write_bytes((tmp / "server.pub").read_bytes())
    assert run_cli("apply", model, tmp / "hash-unsigned.tfdiff", env=env).returncode == 1
    proc = run_cli("apply", model, tmp / "hash.tfdiff", env=env)
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
    with pytest.raises(tfdiff.DiffFormatError, match="canonical"):
        decode(twin)
    model = tmp_path / "device.tflite"
    original = (tmp / "base.tflite").read_bytes()
    model.write_bytes(original)
    (tmp_path / "twin.tfdiff").write_bytes(twin)
    with pytest.raises(signing.SignatureError, match="does not match"):
        applier.apply(model, tmp_path / "twin.tfdiff")
    assert model.read_bytes() == original


def test_no_rollback_to_an_older_generation(world, tmp_path):
    tmp, base, diffs = world
    gen1_model = diffs["hash"][1]
    model = tmp_path / "device.tflite"
    model.write_bytes((tmp / "base.tflite").read_bytes())
    assert applier.installed_generation(model) == 0
    applier.apply(model, tmp / "hash.tfdiff")
    assert applier.installed_generation(model) == 1
    # A validly signed diff whose base is this very model, but whose generation is not newer.
    stale = signed(tmp, train_diff(gen1_model, tfdiff.HashDiff(compression=8.0, seed=3), seed=2, generation=1),
                   tmp_path / "stale.tfdiff")
    before = model.read_bytes()
    proc = run_cli("apply", model, stale)
    assert proc.returncode == 1 and "refusing to go back" in proc.stderr, proc.stderr
    assert model.read_bytes() == before and applier.installed_generation(model) == 1


def test_a_diff_bound_to_another_graph_is_refused(world, tmp_path):
    tmp, base, _ = world
    # The same weights in another graph: the model with one more output op.
    other = keras.Model(base.inputs, keras.layers.Activation("tanh")(base.outputs[0]))
    model = tmp_path / "other.tflite"
    convert(other, model)
    assert tflite.graph_digest_of(model) != tflite.graph_digest_of(tmp / "base.tflite")
    before = model.read_bytes()
    proc = run_cli("apply", model, tmp / "sparse.tfdiff")
    assert proc.returncode == 1 and "another model graph" in proc.stderr, proc.stderr
    assert model.read_bytes() == before
    # Unbound (signed with --unbound), the weights digest alone binds it, and it applies.
    unbound = tmp_path / "unbound.tfdiff"
    signing.sign(tmp / "sparse-unsigned.tfdiff", tmp / "server.pem", out=unbound, unbound=True)
    assert run_cli("apply", model, unbound).returncode == 0


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
    tmp, base, diffs = world
    gen1_model = diffs["hash"][1]
    gen2 = train_diff(gen1_model, tfdiff.HashDiff(compression=8.0, seed=2), seed=1, generation=2)
    signed(tmp, gen2, tmp_path / "gen2.tfdiff")
    model = tmp_path / "device.tflite"
    model.write_bytes((tmp / "base.tflite").read_bytes())
    with pytest.raises(applier.ApplyError, match=r"generation 2\) is for base model"):
        applier.apply(model, tmp_path / "gen2.tfdiff")
    applier.apply(model, tmp / "hash.tfdiff")
    applier.apply(model, tmp_path / "gen2.tfdiff")
    want = {k: v.astype("<f4").tobytes() for k, v in tfdiff.named_weights(tfdiff.fold(gen1_model, gen2)).items()}
    got = weight_bytes(model)
    wmap = TFLiteFile(model.read_bytes()).weight_map()
    for name, value in want.items():
        flat = np.frombuffer(value, "<f4")
        order = np.concatenate([s.keras_indices() for s in wmap.segments(name)])
        assert got[name] == flat[order].tobytes(), name
    with pytest.raises(applier.ApplyError, match="refusing to go back"):
        applier.apply(model, tmp / "sparse.tfdiff")


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("stage", ["journal-written", "journal-committed", "half-written", "model-written"])
def test_killed_at_each_stage_leaves_old_or_finishes_new(world, tmp_path, stage):
    tmp, _, _ = world
    model = tmp_path / "device.tflite"
    model.write_bytes((tmp / "base.tflite").read_bytes())
    old, new = digest(model), digest(tmp / "hash-folded.tflite")
    env = dict(os.environ, TFDIFF_CRASH_AT=stage)
    proc = run_cli("apply", model, tmp / "hash.tfdiff", env=env)
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
    old, new = digest(tmp / "base.tflite"), digest(tmp / "hash-folded.tflite")
    command = [sys.executable, "-m", "device", "apply", str(model), str(tmp / "hash.tfdiff")]
    # A pause after each weight's write widens the window, so that kills land mid-write.
    env = dict(os.environ, TFDIFF_REPLAY_PAUSE="0.05")
    model.write_bytes((tmp / "base.tflite").read_bytes())
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, env=env)
    full_run = time.perf_counter() - start
    rng = np.random.default_rng(0)
    seen_before_recovery = []
    for _ in range(8):
        model.write_bytes((tmp / "base.tflite").read_bytes())
        if os.path.exists(str(model) + applier.STATE_SUFFIX):
            os.unlink(str(model) + applier.STATE_SUFFIX)
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(rng.uniform(0.5, 0.95) * full_run)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen_before_recovery.append(digest(model))
        assert run_cli("recover", model).returncode == 0
        assert digest(model) in (old, new)
    # The kills proved something only if some of them left a half-written model to recover.
    assert any(d not in (old, new) for d in seen_before_recovery), "no kill landed mid-write"


def make_journal(model, words, old, new, target=b"\0" * 32):
    """A complete, committed journal for `model`, written with the applier's own writer (float32 values)."""
    path = str(model) + applier.JOURNAL_SUFFIX
    header = journal.JournalHeader(b"\0" * 32, target, os.path.getsize(model), 1, 0, 1)
    with journal.JournalWriter(path, header) as writer:
        writer.add(np.asarray(words), np.asarray(old, "<f4").view("<u4"), np.asarray(new, "<f4").view("<u4"))
    return path


def test_a_journal_of_another_model_is_refused_and_can_be_discarded(world, tmp_path):
    tmp, _, _ = world
    donor = tmp_path / "donor.tflite"
    donor.write_bytes((tmp / "base.tflite").read_bytes())
    proc = run_cli("apply", donor, tmp / "hash.tfdiff", env=dict(os.environ, TFDIFF_CRASH_AT="journal-committed"))
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


def test_a_journal_cannot_write_outside_the_weights(world, tmp_path):
    tmp, _, _ = world
    model = tmp_path / "device.tflite"
    model.write_bytes((tmp / "base.tflite").read_bytes())
    before = model.read_bytes()
    # Element 2 is the flatbuffer's header; its old value is what is there, so only the bounds check stops it.
    held = np.frombuffer(before[8:12], "<f4")
    make_journal(model, [2], held, [1.0])
    proc = run_cli("recover", model)
    assert proc.returncode == 1 and "outside" in proc.stderr, proc.stderr
    assert model.read_bytes() == before


def test_the_base_is_checked_before_any_journal_is_written(world, tmp_path, monkeypatch):
    tmp, _, _ = world
    model = tmp_path / "device.tflite"
    model.write_bytes((tmp / "sparse-folded.tflite").read_bytes())

    def no_journal(*args):
        raise AssertionError("a journal was started for a diff of another base")
    monkeypatch.setattr(journal.JournalWriter, "__enter__", no_journal)
    with pytest.raises(applier.ApplyError, match="is for base model"):
        applier.apply(model, tmp / "hash.tfdiff")


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


@pytest.mark.parametrize("stage", ["rollback-written", "rollback-committed", "half-written"])
def test_rollback_killed_at_each_stage_leaves_one_generation_or_the_other(world, tmp_path, stage):
    tmp, _, _ = world
    model = tmp_path / "device.tflite"
    model.write_bytes((tmp / "base.tflite").read_bytes())
    assert run_cli("apply", model, tmp / "hash.tfdiff").returncode == 0
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
    gen1, gen1_model = diffs["sparse"]
    gen2 = train_diff(gen1_model, tfdiff.HashDiff(compression=8.0, seed=2), seed=1, generation=2)
    gen3 = train_diff(tfdiff.fold(gen1_model, gen2), tfdiff.SparseDiff(compression=8.0, end_step=6, frequency=2),
                      seed=2, generation=3)
    chain = [tmp / "sparse-unsigned.tfdiff", signed(tmp, gen2, tmp_path / "gen2.tfdiff"),
             signed(tmp, gen3, tmp_path / "gen3.tfdiff")]
    proc = subprocess.run([sys.executable, "-m", "tfdiff", "compose", *map(str, chain), "-o",
                           tmp_path / "catchup.tfdiff", "--key", tmp / "server.pem"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and "for the chain of 3" in proc.stdout, proc.stderr
    stepwise, caught_up = tmp_path / "stepwise.tflite", tmp_path / "caught-up.tflite"
    for path in (stepwise, caught_up):
        path.write_bytes((tmp / "base.tflite").read_bytes())
    for diff in [tmp / "sparse.tfdiff"] + chain[1:]:
        assert run_cli("apply", stepwise, diff).returncode == 0
    assert run_cli("apply", caught_up, tmp_path / "catchup.tfdiff").returncode == 0
    assert caught_up.read_bytes() == stepwise.read_bytes()
    assert applier.installed_generation(caught_up) == 3
    composed = tfdiff.Diff.load(tmp_path / "catchup.tfdiff")
    assert composed.method == "mixed" and composed.nbytes < sum(os.path.getsize(p) for p in chain)
    with pytest.raises(ValueError, match="does not follow"):
        tfdiff.compose([gen2, gen1])
    # Killed mid catch-up, the next call finishes it; the undo record takes the device back to gen 0.
    for stage in ("journal-committed", "half-written"):
        caught_up.write_bytes((tmp / "base.tflite").read_bytes())
        for leftover in tmp_path.glob("caught-up.tflite.tfdiff-*"):
            leftover.unlink()
        env = dict(os.environ, TFDIFF_CRASH_AT=stage)
        assert run_cli("apply", caught_up, tmp_path / "catchup.tfdiff", env=env).returncode == -signal.SIGKILL
        assert run_cli("recover", caught_up).returncode == 0
        assert caught_up.read_bytes() == stepwise.read_bytes() and applier.installed_generation(caught_up) == 3
    assert run_cli("rollback", caught_up).returncode == 0
    assert caught_up.read_bytes() == (tmp / "base.tflite").read_bytes()
    assert applier.installed_generation(caught_up) == 0


def test_a_plain_install_is_the_device_without_tensorflow(world, tmp_path):
    """`pip install .` in a fresh venv, offline: its dependencies are linked from this one."""
    import cffi
    import cryptography
    import flatbuffers
    tmp, _, _ = world
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    python = venv / "bin" / "python"
    deps = tmp_path / "deps"
    deps.mkdir()
    for module in (np, flatbuffers, cryptography, cffi):
        package = os.path.dirname(module.__file__)
        (deps / os.path.basename(package)).symlink_to(package)
    site = os.path.dirname(os.path.dirname(np.__file__))
    for extra in os.listdir(site):
        if extra.startswith(("_cffi_backend", "numpy.libs", "pycparser")):
            (deps / extra).symlink_to(os.path.join(site, extra))
    site_packages = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site_packages, "deps.pth"), "w") as f:
        f.write(str(deps) + "\n")
    source = tmp_path / "source"  # a clean copy: the build writes into the tree it builds
    source.mkdir()
    for name in ("setup.py", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source)
    for name in ("tfdiff", "device"):
        shutil.copytree(os.path.join(ROOT, name), source / name, ignore=shutil.ignore_patterns("__pycache__"))
    # The wheel is built here (this venv has setuptools and wheel), then installed there: pip needs no network.
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-index", "--no-deps",
                            "--no-build-isolation", "-w", tmp_path / "dist", source], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("tfdiff-*.whl"))
    pip = subprocess.run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", wheel],
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*args):
        return subprocess.run([python, *map(str, args)], capture_output=True, text=True, env=env, cwd=tmp_path)
    check = run("-c", "import importlib.util as u; print([bool(u.find_spec(m)) for m in "
                      "('tensorflow', 'recipes', 'benchmarks', 'tfdiff', 'device')])")
    assert check.stdout.strip() == "[False, False, False, True, True]", check.stderr
    model = tmp_path / "device.tflite"
    model.write_bytes((tmp / "base.tflite").read_bytes())
    proc = run("-m", "device", "apply", model, tmp / "sparse.tfdiff")
    assert proc.returncode == 0, proc.stderr
    assert weight_bytes(model) == weight_bytes(tmp / "sparse-folded.tflite")
    shown = run("-m", "tfdiff", "show", tmp / "sparse.tfdiff", "--public-key", tmp / "server.pub")
    assert shown.returncode == 0 and "verified" in shown.stdout, shown.stderr
    script = subprocess.run([venv / "bin" / "tfdiff", "show", tmp / "sparse.tfdiff"], capture_output=True,
                            text=True, env=env)
    assert script.returncode == 0, script.stderr
    needs = run("-c", "import tfdiff; tfdiff.wrap")
    assert needs.returncode == 1 and "pip install 'tfdiff[train]'" in needs.stderr.splitlines()[-1], needs.stderr


def test_bench_reports_latency_and_apply_cost(world):
    tmp, _, _ = world
    from device import bench
    report = bench.latency(tmp / "base.tflite", runs=5, warmup=1)
    assert 0 < report["median_ms"] <= report["p90_ms"]
    cost = bench.apply_cost(tmp / "base.tflite", tmp / "sparse.tfdiff", in_place=True, repeats=1)
    assert cost["seconds"] > 0 and cost["peak_rss_mb"] > 0


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
