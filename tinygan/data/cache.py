"""Writing into the shared cache safely: one lock per result, and errors that name the path.

Several processes may start at once with the same cache folder (two examples
launched together, a test suite run in parallel). Everything the data layer
writes there (downloads, extracted archives, decoded face arrays, the MNIST
judge) follows the same pattern:

1. take the lock of the result (``<result>.lock`` beside it) with
   :func:`cache_lock`; a process that finds it taken says so in one line
   (``waiting for another process to ... (lock FILE)``) and waits;
2. look again whether the result is there now (the process that held the
   lock may just have made it), and use it if so;
3. otherwise do the work in a private temporary file or folder and rename it
   into place atomically, so a reader never sees half a result.

The lock is ``fcntl.flock`` where it exists (released by the kernel when its
holder dies, so it can never go stale). Where ``fcntl`` is missing (Windows) or
the file system refuses ``flock`` (some network file systems), it is a lock file
created with ``O_CREAT | O_EXCL``: its holder touches it every few seconds, and
one untouched for :data:`STALE_AFTER` seconds is taken to belong to a process
that died and is removed.

Write failures (a read-only cache, a full disk) become one-line
:class:`~tinygan.data.DataError` messages that name the path being written and
how to use another folder (:func:`cache_write_error`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

from .errors import DataError

try:  # POSIX only
    import fcntl
except ImportError:  # pragma: no cover - exercised by monkeypatching fcntl = None
    fcntl = None

__all__ = ["cache_lock", "cache_write_error", "CACHE_HINT", "STALE_AFTER"]

#: Appended to cache write failures: where else the cache can live.
CACHE_HINT = ("set TINYGAN_CACHE=/writable/folder to keep the cache elsewhere, "
              "or pass --data PATH to use a local copy of the data")

#: Seconds after which an O_EXCL lock file nobody touched is taken as stale.
STALE_AFTER = 60.0
_HEARTBEAT = 5.0   # how often the holder of an O_EXCL lock touches it
_POLL = 0.1        # how often a waiting process looks again


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cache_write_error(path: Union[str, os.PathLike], error: OSError) -> DataError:
    """A one-line DataError for a failed write of ``path``: the path, the reason, what to do.

    ``[Errno 28] No space left on device`` becomes ``cannot write PATH: no
    space left on device (errno 28); free some space, or set
    TINYGAN_CACHE=/folder/on/another/disk``; a permission problem or a
    read-only file system suggests ``TINYGAN_CACHE=/writable/folder`` or
    ``--data``.
    """
    code = getattr(error, "errno", None)
    reason = (error.strerror or str(error) or type(error).__name__).rstrip(".")
    reason = reason[:1].lower() + reason[1:]
    where = f" (errno {code})" if code else ""
    if code == errno.ENOSPC or code == getattr(errno, "EDQUOT", -1):
        hint = "free some space there, or set TINYGAN_CACHE=/folder/on/another/disk"
    else:
        hint = CACHE_HINT
    return DataError(f"cannot write {os.fspath(path)}: {reason}{where}; {hint}")


@contextlib.contextmanager
def cache_writes(path: Union[str, os.PathLike]) -> Iterator[None]:
    """Turn an OSError raised inside the block into :func:`cache_write_error` for ``path``."""
    try:
        yield
    except DataError:
        raise
    except OSError as e:
        raise cache_write_error(getattr(e, "filename", None) or path, e) from None


@contextlib.contextmanager
def cache_lock(target: Union[str, os.PathLike], what: str,
               log: Optional[Callable[[str], None]] = None) -> Iterator[Path]:
    """Hold the lock of the cache entry ``target`` (the file ``<target>.lock``) for the block.

    ``what`` completes "waiting for another process to ...", e.g. ``"train the
    MNIST judge"``; that line goes to ``log`` (default: stderr) once, only when
    another process holds the lock. Yields the lock file's path. The lock's
    folder is created; failing to create it or the lock raises a DataError
    naming the path (:func:`cache_write_error`).
    """
    target = Path(target)
    lock = target.with_name(target.name + ".lock")
    say = log if log is not None else _stderr
    with cache_writes(lock.parent):
        lock.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is not None:
        told = []
        while True:
            with cache_writes(lock):
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                got = _flock(fd, lock, what, say, told)
            except BaseException:
                os.close(fd)
                raise
            if not got:  # the file system has no flock: use a lock file instead
                os.close(fd)
                break
            if _same_file(fd, lock):
                try:
                    yield lock
                finally:
                    # Removed while still held: a process that opened it before
                    # the removal sees, once it holds the flock, that the path
                    # now names another file (or none) and starts again.
                    with contextlib.suppress(OSError):
                        os.unlink(lock)
                    os.close(fd)  # releases the flock
                return
            os.close(fd)  # we locked a file its holder removed on release: again
        # fall through to the O_EXCL lock file
    with _exclusive_file(lock, what, say):
        yield lock


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino)


def _flock(fd: int, lock: Path, what: str, say, told: list) -> bool:
    """Take the flock on ``fd``, waiting if needed; False when the file system has no flock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        pass
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return False
        raise
    if not told:
        say(f"waiting for another process to {what} (lock {lock})")
        told.append(True)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return True


@contextlib.contextmanager
def _exclusive_file(lock: Path, what: str, say) -> Iterator[None]:
    told = False
    while True:
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            pass
        except OSError as e:
            raise cache_write_error(lock, e) from None
        try:
            age = time.time() - os.stat(lock).st_mtime
        except FileNotFoundError:
            continue  # released just now: try again at once
        if age > STALE_AFTER:
            # Its holder stopped touching it: it died. Remove it and compete again.
            say(f"removing the stale lock {lock} (untouched for {age:.0f} s)")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
            continue
        if not told:
            say(f"waiting for another process to {what} (lock {lock})")
            told = True
        time.sleep(_POLL)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)
    stop = threading.Event()

    def heartbeat():
        while not stop.wait(_HEARTBEAT):
            with contextlib.suppress(OSError):
                os.utime(lock)

    beat = threading.Thread(target=heartbeat, name="tinygan-cache-lock", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
