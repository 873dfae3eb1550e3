"""What a device trusts (#31): keys only from where the owner put them, side files and paths that cannot be
planted or aliased, exit statuses that say what happened to the model, --out that writes only new files,
server tools that verify, and bounded reads. Golden files, no TensorFlow."""
import os
import shutil
import signal
import subprocess
import sys

import pytest

from device import applier, trust
from device.format import DiffFile
from tests.device_world import GOLDEN, ROOT, digest, make_world, run_cli, trusting


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trust")
    make_world(tmp)
    undo = trusting(tmp)
    yield tmp
    undo()


def fresh(world, tmp_path, name="device.tflite"):
    model = tmp_path / name
    model.write_bytes((world / "base.tflite").read_bytes())
    return model


def untrusting(tmp_path, **extra):
    """The environment of a device with an empty key directory and no key variable."""
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != trust.KEY_ENVIRONMENT}
    return dict(env, **{trust.KEY_DIR_ENVIRONMENT: str(keys)}, **extra)


def test_keys_come_only_from_where_the_owner_put_them(world, tmp_path):
    model = fresh(world, tmp_path)
    original = model.read_bytes()
    (tmp_path / ("device.tflite" + trust.KEY_SUFFIX)).write_bytes((world / "server.pub").read_bytes())  # planted
    env = untrusting(tmp_path)
    for flags, message in [([], "no trusted public key"), (["--public-key", ""], "names no file"),
                           (["--public-key", tmp_path / "missing.pem"], "No such file")]:
        proc = run_cli("apply", model, world / "hash.tfdiff", *flags, env=env)
        assert proc.returncode == 1 and message in proc.stderr, (flags, proc.stderr)
    proc = run_cli("apply", model, world / "hash.tfdiff", env=dict(env, TFDIFF_PUBLIC_KEY=str(tmp_path / "none.pem")))
    assert proc.returncode == 1 and "TFDIFF_PUBLIC_KEY" in proc.stderr, proc.stderr
    proc = run_cli("apply", model, world / "hash.tfdiff", env=dict(env, TFDIFF_KEY_DIR=str(tmp_path / "nodir")))
    assert proc.returncode == 1 and "key directory" in proc.stderr, proc.stderr
    proc = run_cli("apply", model, world / "hash.tfdiff", "--public-key", "/dev/zero", env=env)
    assert proc.returncode == 1 and "not a regular file" in proc.stderr, proc.stderr
    assert model.read_bytes() == original
    # Installed by `trust`, the key is the device's: the diff applies.
    proc = run_cli("trust", world / "server.pub", env=env)
    assert proc.returncode == 0, proc.stderr
    assert run_cli("apply", model, world / "hash.tfdiff", env=env).returncode == 0


@pytest.mark.parametrize("target", ["key", "key directory", "model directory"])
def test_files_others_can_write_are_not_trusted(world, tmp_path, target):
    home = tmp_path / "home"
    home.mkdir()
    model = fresh(world, home)
    key = tmp_path / "keys" / "server.pem"
    env = untrusting(tmp_path)
    shutil.copyfile(world / "server.pub", key)
    writable = {"key": key, "key directory": key.parent, "model directory": home}[target]
    os.chmod(writable, os.stat(writable).st_mode | 0o002)
    proc = run_cli("apply", model, world / "hash.tfdiff", env=env)
    assert proc.returncode == 1 and "writable by others" in proc.stderr, proc.stderr
    assert model.read_bytes() == (world / "base.tflite").read_bytes()


def test_a_model_reached_through_a_symlink_is_one_model(world, tmp_path):
    model = fresh(world, tmp_path)
    link = tmp_path / "link.tflite"
    link.symlink_to(model)
    proc = run_cli("apply", link, world / "hash.tfdiff", "--strategy", "inplace",
                   env=dict(os.environ, TFDIFF_CRASH_AT="half-written"))
    assert proc.returncode == -signal.SIGKILL
    assert os.path.lexists(str(model) + applier.JOURNAL_SUFFIX)  # the real path's journal, lock and state
    proc = run_cli("recover", model)
    assert proc.returncode == 0 and "finished" in proc.stdout, proc.stderr
    assert digest(model) == digest(world / "hash-folded.tflite") and applier.installed_generation(model) == 1


def test_symlinked_side_files_are_never_read(world, tmp_path):
    donor = fresh(world, tmp_path, "donor.tflite")
    proc = run_cli("apply", donor, world / "hash.tfdiff", "--strategy", "inplace",
                   env=dict(os.environ, TFDIFF_CRASH_AT="journal-committed"))
    assert proc.returncode == -signal.SIGKILL
    model = fresh(world, tmp_path)
    os.symlink(str(donor) + applier.JOURNAL_SUFFIX, str(model) + applier.JOURNAL_SUFFIX)
    before = model.read_bytes()
    proc = run_cli("recover", model)
    assert proc.returncode == 1 and "cannot open journal" in proc.stderr, proc.stderr
    assert model.read_bytes() == before
    os.unlink(str(model) + applier.JOURNAL_SUFFIX)
    os.symlink(tmp_path / "elsewhere", str(model) + applier.STATE_SUFFIX)
    proc = run_cli("status", model)
    assert proc.returncode == 1 and "cannot read" in proc.stderr, proc.stderr


def test_a_replaced_model_is_reported_not_locked_out(world, tmp_path):
    model = fresh(world, tmp_path)
    assert run_cli("apply", model, world / "hash.tfdiff").returncode == 0
    model.write_bytes((world / "base.tflite").read_bytes())  # the shipped model copied back; the state says 1
    proc = run_cli("status", model)
    assert proc.returncode == 0 and "recorded for another model" in proc.stdout
    proc = run_cli("apply", model, world / "sparse.tfdiff")
    assert proc.returncode == 1 and "--reset-state" in proc.stderr, proc.stderr
    assert run_cli("recover", model, "--reset-state").returncode == 0
    assert run_cli("apply", model, world / "sparse.tfdiff").returncode == 0
    assert digest(model) == digest(world / "sparse-folded.tflite")


def test_a_committed_update_that_cannot_finish_exits_3_and_recover_finishes_it(world, tmp_path, monkeypatch):
    model = fresh(world, tmp_path)

    def full_disk(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(applier, "write_state", full_disk)
    with pytest.raises(applier.UpdateCommittedError, match="recover"):
        applier.apply(model, world / "hash.tfdiff", strategy="inplace")
    monkeypatch.undo()
    assert applier.installed_generation(model) == 0 and os.path.lexists(str(model) + applier.JOURNAL_SUFFIX)
    assert applier.recover(model)
    assert applier.installed_generation(model) == 1 and digest(model) == digest(world / "hash-folded.tflite")
    # Before the commit point a full disk is a refusal: the model is unchanged.
    model = fresh(world, tmp_path, "other.tflite")
    monkeypatch.setattr(applier.JournalWriter, "add", full_disk)
    with pytest.raises(OSError):
        applier.apply(model, world / "hash.tfdiff", strategy="inplace")
    assert model.read_bytes() == (world / "base.tflite").read_bytes()
    assert not any(p.name.startswith("other.tflite.tfdiff-journal") for p in tmp_path.iterdir())


def test_out_writes_only_new_regular_files_and_killed_runs_leave_nothing(world, tmp_path):
    model = fresh(world, tmp_path)
    newer = tmp_path / "newer.tflite"
    newer.write_bytes(b"a newer model")
    proc = run_cli("apply", model, world / "hash.tfdiff", "--out", newer)
    assert proc.returncode == 1 and "--force" in proc.stderr and newer.read_bytes() == b"a newer model"
    os.mkfifo(tmp_path / "fifo")
    proc = run_cli("apply", model, world / "hash.tfdiff", "--out", tmp_path / "fifo", "--force")
    assert proc.returncode == 1 and "not a regular file" in proc.stderr
    assert run_cli("apply", model, world / "hash.tfdiff", "--out", newer, "--force").returncode == 0
    assert digest(newer) == digest(world / "hash-folded.tflite") and applier.installed_generation(newer) == 1
    before = sorted(os.listdir(tmp_path))
    proc = run_cli("apply", model, world / "hash.tfdiff", "--out", tmp_path / "killed.tflite",
                   env=dict(os.environ, TFDIFF_CRASH_AT="copy-written"))
    assert proc.returncode == -signal.SIGKILL
    assert any(name.endswith(applier.TMP_SUFFIX) for name in os.listdir(tmp_path))
    assert run_cli("recover", model).returncode == 0
    assert sorted(os.listdir(tmp_path)) == before and model.read_bytes() == (world / "base.tflite").read_bytes()


def test_server_tools_verify_before_they_parse_or_sign(world, tmp_path):
    def tfdiff_cli(*args):
        return subprocess.run([sys.executable, "-m", "tfdiff", *map(str, args)], capture_output=True, text=True,
                              cwd=ROOT)
    proc = tfdiff_cli("show", world / "hash-unsigned.tfdiff", "--public-key", world / "server.pub")
    assert proc.returncode == 1 and "not signed" in proc.stderr
    proc = tfdiff_cli("compose", world / "hash-unsigned.tfdiff", "-o", tmp_path / "c.tfdiff", "--key",
                      world / "server.pem")
    assert proc.returncode == 1 and "--public-key" in proc.stderr and not (tmp_path / "c.tfdiff").exists()
    proc = tfdiff_cli("compose", world / "hash-unsigned.tfdiff", "-o", tmp_path / "c.tfdiff", "--key",
                      world / "server.pem", "--public-key", world / "server.pub")
    assert proc.returncode == 1 and "not signed" in proc.stderr and not (tmp_path / "c.tfdiff").exists()
    proc = tfdiff_cli("sign", os.path.join(GOLDEN, "v1-hash.tfdiff"), "--key", world / "server.pem", "--model",
                      world / "base.tflite")
    assert proc.returncode == 1 and "format-v1" in proc.stderr
    crafted = DiffFile.load(world / "hash-unsigned.tfdiff")
    crafted.entries[0].name = "embed/0/embeddings\n\x1b[2Jfake line"
    crafted.save(tmp_path / "crafted.tfdiff")
    proc = tfdiff_cli("show", tmp_path / "crafted.tfdiff")
    assert proc.returncode == 0 and "\x1b" not in proc.stdout and "fake line" in proc.stdout
    assert not any(line.startswith("fake line") for line in proc.stdout.splitlines())
    proc = tfdiff_cli("keygen", "--private", tmp_path / "same.pem", "--public", tmp_path / "same.pem")
    assert proc.returncode == 1 and not (tmp_path / "same.pem").exists()


def test_bad_command_lines_are_refusals(world, tmp_path):
    model = fresh(world, tmp_path)
    for args in (["apply", model, world / "hash.tfdiff", "--max-diff-bytes", "1e20"],
                 ["apply", model, world / "hash.tfdiff", "--max-diff-bytes", str(10**20)],
                 ["bench", model, "--runs", "0"], ["no-such-command"]):
        proc = run_cli(*args)
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) <= 1 + ("usage" in proc.stderr), (
            args, proc.stderr)


def test_a_weight_map_with_a_huge_shape_is_refused_before_any_allocation(world):
    from device.tflite import ModelFormatError, TFLiteFile
    from device.weightmap import WeightMap
    model = TFLiteFile((world / "base.tflite").read_bytes())
    good = model.weight_map()
    name = good.names()[0]
    crafted = {n: (good.shape(n), good.segments(n)) for n in good.names()}
    crafted[name] = ((2**32, 2**32), good.segments(name))  # 2**64 elements: wraps to 0 in int64
    with pytest.raises(ModelFormatError, match="larger than the model file"):
        model._check(WeightMap(crafted))
