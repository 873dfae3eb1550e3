"""The attack review's cases against the device, replayed and counted (python -m benchmarks attack).

Each case sets up a device directory (the golden model, a genuine server key
and diff, an attacker's key and diff) the way the review found a weakness,
runs `tfdiff-device` in a fresh process, and records its exit status and
whether the model changed:

- key configurations: 0 diffs may apply that the configured key did not sign;
- planted side files (journal, state) and symlinks: 0 may be accepted;
- full disks, by fault injection at each write of an apply: the exit status
  must say what happened to the model (1 unchanged, 3 committed and
  finished by `recover`, 0 the target);
- killed `apply --out` runs: 0 bytes may remain after the next `recover`;
- crafted files of up to 64 MiB: the peak memory of `tfdiff show` and of an
  `--allow-unsigned` apply, against the input's size.
"""
import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden")


def run(crafted_mib=64):
    """Every case, as a JSON-ready dict with a `summary` of the counts the targets are about."""
    with tempfile.TemporaryDirectory() as tmp:
        world = _world(tmp)
        report = {"keys": _key_cases(world), "side_files": _side_file_cases(world),
                  "full_disk": _full_disk_cases(world), "killed_out": _killed_out(world),
                  "memory": _memory(world, crafted_mib)}
    report["summary"] = {
        "foreign_diffs_applied": sum(c["applied"] for c in report["keys"] if c["expect"] == "refused"),
        "genuine_diffs_refused": sum(not c["applied"] for c in report["keys"] if c["expect"] == "applied"),
        "side_files_accepted": sum(c["accepted"] for c in report["side_files"]),
        "exit_status_lies": sum(not c["truthful"] for c in report["full_disk"]),
        "exit_2_on_bad_input": sum(c["status"] == 2 for group in ("keys", "side_files") for c in report[group]),
        "bytes_left_by_killed_runs": report["killed_out"]["bytes_left"],
        "peak_over_input": max(report["memory"][k]["peak_rss_mb"] - report["memory"]["runtime_mb"]
                               for k in ("tfdiff show", "apply --allow-unsigned"))
        / (report["memory"]["input_bytes"] / 2**20),
    }
    return report


def _world(tmp):
    from device import signing
    world = {"tmp": tmp, "base": os.path.join(GOLDEN, "base.tflite")}
    for who in ("server", "attacker"):
        signing.keygen(os.path.join(tmp, f"{who}.pem"), os.path.join(tmp, f"{who}.pub"))
        world[f"{who}_diff"] = os.path.join(tmp, f"{who}.tfdiff")
        signing.sign(os.path.join(GOLDEN, "hash.tfdiff"), os.path.join(tmp, f"{who}.pem"), out=world[f"{who}_diff"])
        world[f"{who}_key"] = os.path.join(tmp, f"{who}.pub")
    return world


def _device(world, name, mode=0o755):
    """A fresh device directory holding the golden model; (directory, model path)."""
    directory = os.path.join(world["tmp"], name)
    os.makedirs(directory)
    os.chmod(directory, mode)
    model = os.path.join(directory, "model.tflite")
    shutil.copyfile(world["base"], model)
    return directory, model


def _cli(*args, env=None, **extra):
    base = {k: v for k, v in os.environ.items() if k not in ("TFDIFF_PUBLIC_KEY", "TFDIFF_KEY_DIR")}
    base["PYTHONPATH"] = ROOT
    return subprocess.run([sys.executable, "-m", "device", *map(str, args)], capture_output=True, text=True,
                          env=dict(base, **(env or {})), **extra)


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _key_cases(world):
    empty = os.path.join(world["tmp"], "empty-keys")
    os.makedirs(empty)
    cases = []

    def case(label, expect, diff="attacker_diff", flags=(), env=None, prepare=None, mode=0o755):
        directory, model = _device(world, f"key-{len(cases)}", mode)
        env = dict({"TFDIFF_KEY_DIR": empty}, **(env or {}))
        if prepare:
            prepare(directory, model, env)
        before = _sha(model)
        proc = _cli("apply", model, world[diff], *flags, env=env)
        cases.append({"case": label, "expect": expect, "status": proc.returncode, "applied": _sha(model) != before,
                      "message": proc.stderr.strip()[:160]})

    def plant(directory, model, env):
        shutil.copyfile(world["attacker_key"], model + ".tfdiff-key.pem")

    def key_dir(mode, key="attacker_key", file_mode=0o644):
        def prepare(directory, model, env):
            keys = os.path.join(directory, "keys")
            os.makedirs(keys)
            shutil.copyfile(world[key], os.path.join(keys, "k.pem"))
            os.chmod(os.path.join(keys, "k.pem"), file_mode)
            os.chmod(keys, mode)
            env["TFDIFF_KEY_DIR"] = keys
        return prepare

    case("no key anywhere", "refused")
    case("attacker's key planted beside the model", "refused", prepare=plant)
    case("planted key, --key-beside-model, model directory o+w", "refused", flags=["--key-beside-model"],
         prepare=plant, mode=0o1777)
    case("--public-key ''", "refused", flags=["--public-key", ""], prepare=plant)
    case("$TFDIFF_PUBLIC_KEY names no file", "refused", env={"TFDIFF_PUBLIC_KEY": "/nonexistent.pem"}, prepare=plant)
    case("$TFDIFF_KEY_DIR names no directory", "refused", env={"TFDIFF_KEY_DIR": "/nonexistent"}, prepare=plant)
    case("attacker's key in a world-writable key directory", "refused", prepare=key_dir(0o777))
    case("attacker's key file group-writable", "refused", prepare=key_dir(0o755, file_mode=0o664))
    case("--public-key /dev/zero", "refused", flags=["--public-key", "/dev/zero"])
    case("server's key, attacker's diff", "refused", env={"TFDIFF_PUBLIC_KEY": world["server_key"]})
    case("server's key installed, server's diff", "applied", diff="server_diff", prepare=key_dir(0o755, "server_key"))
    case("server's key by --public-key, server's diff", "applied", diff="server_diff",
         flags=["--public-key", world["server_key"]])
    return cases


def _side_file_cases(world):
    cases = []
    env = {"TFDIFF_PUBLIC_KEY": world["server_key"]}

    def case(label, command, prepare, mode=0o755):
        directory, model = _device(world, f"side-{len(cases)}", mode)
        prepare(directory, model)
        before = _sha(model)
        proc = _cli(command, model, *([world["server_diff"]] if command == "apply" else []), env=env)
        changed = _sha(model) != before
        accepted = proc.returncode == 0 and (changed or "finished" in proc.stdout)
        cases.append({"case": label, "status": proc.returncode, "accepted": accepted,
                      "message": (proc.stderr or proc.stdout).strip()[:160]})

    def forged_journal(directory, model):
        donor_dir, donor = _device(world, f"donor-{len(cases)}")
        _cli("apply", donor, world["server_diff"], "--strategy", "inplace",
             env=dict(env, TFDIFF_CRASH_AT="journal-committed"))
        shutil.copyfile(donor + ".tfdiff-journal", model + ".tfdiff-journal")

    def linked_journal(directory, model):
        donor_dir, donor = _device(world, f"donor-{len(cases)}")
        _cli("apply", donor, world["server_diff"], "--strategy", "inplace",
             env=dict(env, TFDIFF_CRASH_AT="journal-committed"))
        os.symlink(donor + ".tfdiff-journal", model + ".tfdiff-journal")

    def forged_state(directory, model):
        with open(model + ".tfdiff-state", "w") as f:
            f.write("generation 4294967295\n")

    def linked_state(directory, model):
        os.symlink(os.path.join(world["tmp"], "elsewhere"), model + ".tfdiff-state")

    case("another user's journal in a sticky world-writable directory", "recover", forged_journal, 0o1777)
    case("a symlinked journal of another device", "recover", linked_journal)
    case("another user's state (generation 2**32-1) in a sticky world-writable directory", "apply",
         forged_state, 0o1777)
    case("a symlinked state", "apply", linked_state)
    return cases


def _full_disk_cases(world):
    """ENOSPC injected at each write of an in-place apply, in process; the exit status against the model."""
    import contextlib
    import io

    from device import applier, format as wire, journal
    from device.__main__ import main

    sites = {"journal write": (journal.JournalWriter, "add"), "rename (the commit point)": (applier.os, "replace"),
             "replay into the model": (applier, "_replay"), "atomic write (the state)": (applier, "write_atomic")}
    cases = []
    for (label, (owner, name)), strategy in ((site, strategy) for site in sites.items()
                                             for strategy in ("inplace", "copy")):
        directory, model = _device(world, f"disk-{len(cases)}")
        before, original = _sha(model), getattr(owner, name)

        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")
        setattr(owner, name, full)
        try:
            with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                status = main(["apply", model, world["server_diff"], "--public-key", world["server_key"],
                               "--strategy", strategy])
        finally:
            setattr(owner, name, original)
        after = _sha(model)
        recovered = applier.recover(model, public_key=world["server_key"]) if status == 3 else None
        target = wire.DiffFile.load(world["server_diff"]).target_digest
        truthful = ((status == 1 and after == before) or (status == 0 and applier.weights_digest_of(model) == target)
                    or (status == 3 and recovered and applier.weights_digest_of(model) == target))
        cases.append({"case": f"{label}, {strategy}", "status": status, "model_changed": after != before,
                      "truthful": truthful})
    return cases


def _killed_out(world):
    directory, model = _device(world, "killed-out")
    env = {"TFDIFF_PUBLIC_KEY": world["server_key"], "TFDIFF_CRASH_AT": "copy-written"}
    before = set(os.listdir(directory))
    runs = 5
    for i in range(runs):
        proc = _cli("apply", model, world["server_diff"], "--out", os.path.join(directory, f"new{i}.tflite"), env=env)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        _cli("recover", model)
    left = set(os.listdir(directory)) - before - {"model.tflite.tfdiff-lock"}
    return {"runs": runs, "files_left": sorted(left),
            "bytes_left": sum(os.path.getsize(os.path.join(directory, n)) for n in left)}


def _memory(world, crafted_mib):
    """Peak RSS of `tfdiff show` and of an --allow-unsigned apply on a crafted unsigned file."""
    from device.format import DiffFile, Entry
    import numpy as np

    crafted = os.path.join(world["tmp"], "crafted.tfdiff")
    # One hash entry of float32 zeros, as large as the limit (64 MiB) allows.
    size = (crafted_mib << 20) // 4 - 64
    diff = DiffFile("hash", [Entry("embed/0/embeddings", (size,), "hash", np.zeros(size, np.float32), None, 1, 1)],
                    b"\0" * 32, b"\0" * 32, generation=1, seed=1, num_hashes=1)
    diff.save(crafted)
    results = {"input_bytes": os.path.getsize(crafted), "decoded_bytes": 4 * size,
               "runtime_mb": _peak_of(["-c", "import device.__main__, tfdiff.__main__, numpy"])}
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork and exec.
    script = ("import sys, runpy; sys.argv = sys.argv[1:]; "
              "code = 0\ntry:\n    runpy.run_module(sys.argv[0], run_name='__main__')\n"
              "except SystemExit as e:\n    code = e.code\n"
              "hwm = next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
              "print('PEAK', hwm, code)")
    for label, module, args in (("tfdiff show", "tfdiff", ["show", crafted]),
                                ("apply --allow-unsigned", "device",
                                 ["apply", _device(world, "memory")[1], crafted, "--allow-unsigned"])):
        proc = subprocess.run([sys.executable, "-c", script, module, *args], capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=ROOT))
        line = [text for text in proc.stdout.splitlines() if text.startswith("PEAK")]
        results[label] = {"peak_rss_mb": int(line[0].split()[1]) / 1024 if line else None,
                          "status": line[0].split()[2] if line else proc.returncode,
                          "message": proc.stderr.strip()[-160:]}
    return results


def _peak_of(args):
    code = ("import runpy, sys; exec(sys.argv[1]); "
            "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))")
    proc = subprocess.run([sys.executable, "-c", code, args[1]], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    return int(proc.stdout.split()[-1]) / 1024
