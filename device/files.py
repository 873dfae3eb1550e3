"""Files a device writes whole: written beside their name, fsynced, renamed into place, directory fsynced.

A reader never sees half of one: it finds the old file or the new one.
"""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def replacing(path):
    """Yield a temporary path beside `path`; on success it atomically becomes `path`.

    The caller writes the temporary file; it is fsynced, renamed over
    `path` and the directory fsynced. On any error it is removed and `path`
    is untouched.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    os.close(fd)
    try:
        os.chmod(tmp, _mode_for(path))
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def _mode_for(path):
    """The replaced file's permissions, or what a plain open() would give."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_atomic(path, data):
    with replacing(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def fsync_dir(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
