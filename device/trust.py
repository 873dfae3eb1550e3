"""Where a device's trust comes from: its trusted keys, and the files it will act on.

A key is trusted only where the device's owner put it, in this order:

1. `public_key` (the CLI's `--public-key`), for one call;
2. the file named by $TFDIFF_PUBLIC_KEY;
3. every `*.pem` in the key directory, $TFDIFF_KEY_DIR or /etc/tfdiff/keys
   (`tfdiff-device trust KEY.pem` installs one there);
4. MODEL.tfdiff-key.pem beside the model, only with `key_beside_model`
   (the CLI's `--key-beside-model`): whoever can write the model's
   directory could plant it.

A key named and absent (an empty `--public-key`, a variable naming no file)
is an error, never a silent fall-through to the next place. As sshd's
StrictModes: key files and key directories are refused when someone other
than their owner or root can write them, the model's directory when anyone
outside its owner and group can (a sticky /tmp-like directory, say), and
keys are read bounded, from regular files only.
"""
import os
import stat

from .signing import MAX_KEY_BYTES, SignatureError, load_public_key, read_key

KEY_ENVIRONMENT = "TFDIFF_PUBLIC_KEY"
KEY_DIR_ENVIRONMENT = "TFDIFF_KEY_DIR"
DEFAULT_KEY_DIR = "/etc/tfdiff/keys"
KEY_SUFFIX = ".tfdiff-key.pem"


class TrustError(SignatureError):
    """A key, key directory or model directory the device cannot trust (missing, foreign, writable by others)."""


def trusted_keys(model_path, public_key=None, key_beside_model=False):
    """Paths of the keys a diff for `model_path` may be signed by; TrustError if there is none.

    Every key path returned has been checked: a regular file, owned by its
    reader or root, writable by no one else, in a directory likewise.
    """
    if public_key is not None:
        return [checked_key(public_key, "--public-key")]
    if KEY_ENVIRONMENT in os.environ:
        return [checked_key(os.environ[KEY_ENVIRONMENT], f"${KEY_ENVIRONMENT}")]
    directory = os.environ.get(KEY_DIR_ENVIRONMENT)
    named = directory is not None
    directory = directory or DEFAULT_KEY_DIR
    keys = []
    if named or os.path.isdir(directory):
        keys = _directory_keys(directory, named)
    if key_beside_model:
        keys.append(checked_key(os.fspath(model_path) + KEY_SUFFIX, "--key-beside-model"))
    if not keys:
        raise TrustError(f"no trusted public key: install one with `tfdiff-device trust KEY.pem` (into "
                         f"{directory}), set {KEY_ENVIRONMENT} or give --public-key (--allow-unsigned skips "
                         "the check, for development)")
    return keys


def checked_key(path, source):
    """`path` if it is a key file the device may trust (see the module docstring); TrustError otherwise."""
    if not path:
        raise TrustError(f"{source} names no file")
    try:
        info = os.stat(path)
    except OSError as e:
        raise TrustError(f"trusted key {path} ({source}): {e.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise TrustError(f"trusted key {path} ({source}) is not a regular file")
    if info.st_size > MAX_KEY_BYTES:
        raise TrustError(f"trusted key {path} ({source}) is larger than {MAX_KEY_BYTES} bytes")
    check_private(path, "trusted key")
    check_private(os.path.dirname(os.path.abspath(path)), "the directory of trusted key")
    return path


def check_private(path, what, group_ok=False):
    """TrustError unless `path` is owned by this user or root and writable by no one else (`group_ok`: or its group)."""
    try:
        info = os.stat(path)
    except OSError as e:
        raise TrustError(f"{what} {path}: {e.strerror}") from None
    if info.st_uid not in (0, os.geteuid()):
        raise TrustError(f"{what} {path} belongs to another user (uid {info.st_uid}); refusing to trust it")
    if info.st_mode & (stat.S_IWOTH if group_ok else stat.S_IWGRP | stat.S_IWOTH):
        raise TrustError(f"{what} {path} is writable by others (mode {stat.S_IMODE(info.st_mode):o}); "
                         f"refusing to trust it: chmod {'o' if group_ok else 'go'}-w")


def model_path_of(model_path):
    """The model's real path (symlinks resolved: one model, one lock, one state), its directory checked."""
    real = os.path.realpath(os.fspath(model_path))
    # Its group may write it (a umask of 002 makes such directories); anyone else could plant side files.
    check_private(os.path.dirname(real), "the model's directory", group_ok=True)
    return real


def install(key_path, directory=None):
    """Copy a public key into the key directory (created owner-only); returns the installed path."""
    data = read_key(key_path)
    load_public_key(data, key_path)  # refuse anything but an Ed25519 public key
    directory = directory or os.environ.get(KEY_DIR_ENVIRONMENT) or DEFAULT_KEY_DIR
    os.makedirs(directory, mode=0o755, exist_ok=True)
    check_private(directory, "key directory")
    target = os.path.join(directory, os.path.basename(key_path) if key_path.endswith(".pem")
                          else os.path.basename(key_path) + ".pem")
    from .files import write_atomic
    write_atomic(target, data)
    os.chmod(target, 0o644)
    return target


def _directory_keys(directory, named):
    try:
        names = sorted(os.listdir(directory))
    except OSError as e:
        if named:
            raise TrustError(f"key directory {directory} (${KEY_DIR_ENVIRONMENT}): {e.strerror}") from None
        return []
    check_private(directory, "key directory")
    return [checked_key(os.path.join(directory, name), directory) for name in names if name.endswith(".pem")]
