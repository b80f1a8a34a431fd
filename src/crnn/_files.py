"""Atomic file writing, for every file crnn writes (model files,
checkpoints, ONNX graphs).

``atomic_write(path, write)`` calls ``write(file)`` on a new temporary file
in the destination's folder, flushes it to disk and ``os.replace``-s it over
`path`: an interrupted write leaves the old file (or no file) at `path`,
never half of a new one, and removes its temporary file.  Imports nothing
of crnn.
"""
import errno
import os
import secrets

__all__ = ["atomic_write"]


def atomic_write(path, write):
    """Call ``write(file)`` on a new temporary file beside `path`, then move
    it over `path`.  On any exception (KeyboardInterrupt included) the
    temporary file is removed and `path` is untouched."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, "cannot save: no such folder", folder)
    temporary = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
    # os.open with mode 0o666 lets the umask decide the permissions, as a
    # plain open() of the destination would (tempfile would force 0o600).
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    descriptor = os.open(temporary, flags, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    _fsync_folder(folder)


def _fsync_folder(folder):
    # Makes the rename itself durable on POSIX; not possible (nor needed)
    # on Windows.
    if os.name != "posix":
        return
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
