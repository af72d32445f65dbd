"""The library's one atomic file writer: checkpoints, logs, grids, plots and the data cache all use it."""
from __future__ import annotations

import contextlib
import os
import secrets

__all__ = ["atomic_write"]


@contextlib.contextmanager
def atomic_write(path):
    """Open a binary file that appears at ``path`` only once it is completely written.

    Yields a file object for a temporary file in the same directory as ``path``
    (a rename is only atomic within one file system). When the ``with`` block
    ends normally the data is flushed, ``fsync``'ed and the temporary file is
    renamed onto ``path`` with :func:`os.replace`; if anything raises (including
    the rename itself, or ``KeyboardInterrupt``) the temporary file is removed
    and an existing file at ``path`` is left exactly as it was.

    The library's checkpoints, image grids and plots are all written this way::

        with atomic_write("out/grid.png") as fh:
            image.save(fh, format="PNG")
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"cannot write {path!r}: its directory {directory!r} does not exist (create it first)")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path!r}: it is a directory, expected a file path")
    # A hidden, random name: two writers of the same target never share a temp
    # file, and a crashed writer's leftover is easy to recognise.
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    # os.open with mode 0o666 lets the process umask decide the permissions,
    # as for any ordinary new file (tempfile.mkstemp would force 0o600).
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        raise _naming(e, path, tmp) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())  # data on disk before the rename makes it visible
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _naming(e, path, tmp) from None
        raise
    _fsync_directory(directory)


def _naming(error, path, tmp):
    """The same OSError, naming the file the caller asked for rather than its hidden temporary
    (a full disk, for one, raises from write() with no file name at all)."""
    if error.filename not in (None, tmp) or error.errno is None:
        return error
    return type(error)(error.errno, error.strerror, path)


def _fsync_directory(directory):
    # Makes the rename itself survive a power cut. Not possible on every
    # platform (Windows cannot open a directory), where it is skipped.
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
