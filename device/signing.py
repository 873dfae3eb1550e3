"""Ed25519 signatures over diff files (the `cryptography` package).

The signature covers every byte of the unsigned file, checksum included,
and is appended as "SIG1" + 64 bytes (docs/FORMAT.md). Keys are PEM files:
PKCS#8 for the private key, SubjectPublicKeyInfo for the public one.
"""
import os
import stat

from .files import write_atomic
from .format import SIGNATURE_BYTES, SIGNATURE_MAGIC, UNBOUND, DiffFile, DiffFormatError
from .tflite import graph_digest_of


MAX_KEY_BYTES = 16 << 10  # an Ed25519 PEM is under 200 bytes


class SignatureError(ValueError):
    """A diff that is unsigned, or not signed by the trusted key."""


def read_key(path):
    """The bytes of a key file, at most MAX_KEY_BYTES, from a regular file only (never a device or a pipe)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise SignatureError(f"cannot read key {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise SignatureError(f"key {path} is not a regular file")
        data = f.read(MAX_KEY_BYTES + 1)
    if len(data) > MAX_KEY_BYTES:
        raise SignatureError(f"key {path} is larger than {MAX_KEY_BYTES} bytes")
    return data


def load_public_key(data, path):
    """The Ed25519 public key in PEM `data` (read from `path`); SignatureError otherwise."""
    return _parse_key(data, path, private=False)


def _serialization():
    from cryptography.hazmat.primitives import serialization
    return serialization


def keygen(private_path, public_path):
    """Write a new Ed25519 key pair; the private key file is readable by its owner only."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    s = _serialization()
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption())
    public = key.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo)
    if os.path.abspath(private_path) == os.path.abspath(public_path):
        raise ValueError(f"the private and the public key need two paths. Received: {private_path} twice")
    for path in (private_path, public_path):
        if os.path.exists(path):
            raise FileExistsError(f"{path} exists; refusing to overwrite a key")
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    write_atomic(public_path, public)


def _load_key(path, private):
    return _parse_key(read_key(path), path, private)


def _parse_key(data, path, private):
    from cryptography.hazmat.primitives.asymmetric import ed25519
    s = _serialization()
    try:
        key = (s.load_pem_private_key(data, password=None) if private
               else s.load_pem_public_key(data))
    except (ValueError, TypeError):
        raise SignatureError(f"{path} is not a PEM {'private' if private else 'public'} key") from None
    wanted = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, wanted):
        raise SignatureError(f"{path} is not an Ed25519 key")
    return key


def sign(diff_path, private_key_path, out=None, model=None, unbound=False):
    """Sign a diff file in place (or into `out`), replacing any old signature.

    Args:
        diff_path: the diff to sign.
        private_key_path: the server's Ed25519 private key (PEM).
        out: write the signed diff here instead.
        model: the .tflite the diff is for (the device's generation-0
            conversion): its graph digest is written into the diff before
            signing, so the signed diff applies to that graph only.
        unbound: sign a diff that names no graph (weights digest only).

    Raises:
        SignatureError: an unreadable key, or a diff bound to no graph
            without `model` or `unbound`.
    """
    diff = DiffFile.load(diff_path)
    if model is not None and diff.version < 2:
        raise SignatureError(f"{diff_path} is a format-v{diff.version} diff, which cannot name a graph; "
                             "extract it again to sign it bound to --model")
    if model is not None:
        diff.graph_digest = graph_digest_of(model)
    elif diff.graph_digest == UNBOUND and diff.version >= 2 and not unbound:
        raise SignatureError("name the .tflite this diff is for (--model), so the signature binds its graph; "
                             "--unbound signs it bound to the weights only")
    key = _load_key(private_key_path, private=True)
    diff.signature = key.sign(diff.unsigned_bytes())
    diff.save(out or diff_path)
    return diff


def verify_bytes(data, public_keys):
    """Check the Ed25519 signature over the raw bytes of a diff file, before any parsing.

    The signature covers every byte before "SIG1" exactly as received, so
    two different files never verify with one signature. Raises
    SignatureError unless `data` ends in a signature by one of the trusted
    keys (`public_keys`: a path, or a list of paths).
    """
    from cryptography.exceptions import InvalidSignature
    paths = [public_keys] if isinstance(public_keys, (str, os.PathLike)) else list(public_keys)
    keys = [_load_key(path, private=False) for path in paths]
    if len(data) <= SIGNATURE_BYTES or data[-SIGNATURE_BYTES:-64] != SIGNATURE_MAGIC:
        raise SignatureError("diff is not signed, and this device requires signed diffs")
    for key in keys:
        try:
            key.verify(bytes(data[-64:]), bytes(data[:-SIGNATURE_BYTES]))
            return
        except InvalidSignature:
            continue
    raise SignatureError("diff signature does not match the trusted public key")


__all__ = ["keygen", "sign", "verify_bytes", "read_key", "load_public_key", "SignatureError", "DiffFormatError"]
