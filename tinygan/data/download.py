"""Downloads from sources tried in order, each verified by its checksum, and the cache folder.

A *source* (:class:`Source`) is a URL, the checksum its publisher gives for
the file (md5 or sha256) and a few words on what it is. :func:`fetch` tries
the sources in order and returns the first file that arrives whole and
verified, with the source it came from; a source that cannot be reached,
answers with an HTTP error or serves bytes with the wrong checksum is skipped
for the next one. When every source fails, one :class:`DownloadError` line
names each source and why it failed, and says how to get the file by hand.
:func:`download` is the one-file form (mirrors of the same file).

A download is written to ``dest + ".part"`` and renamed to ``dest`` only after
its checksum has been checked, so a file found at ``dest`` is always complete
and verified. An interrupted download leaves the ``.part`` behind and the next
call resumes it with an HTTP ``Range`` request. Processes that download the
same file at the same time take turns (see :mod:`tinygan.data.cache`): the
first downloads, the others wait and then use its file.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, List, NamedTuple, Optional, Sequence, Union

from tqdm import tqdm

from .cache import cache_lock, cache_write_error
from .errors import DownloadError

__all__ = ["default_cache_dir", "download", "fetch", "Fetched", "Source", "md5sum", "sha256sum",
           "file_digest"]

logger = logging.getLogger(__name__)

#: Appended to every "could not download" message: the command-line examples
#: accept a local copy of any data set through ``--data``.
LOCAL_COPY_HINT = "pass --data PATH to use a local copy"

#: Said when every source failed: the user's network is not necessarily the cause.
NETWORK_MAY_BE_FINE = "your network itself may be fine: download addresses move and close"

_CHUNK = 1 << 16  # 64 KiB: large enough for speed, small enough for a smooth bar
_ALGORITHMS = {32: "md5", 64: "sha256"}  # hex digits -> algorithm of a bare checksum


def default_cache_dir() -> Path:
    """Return the folder where downloads and preprocessed arrays are kept.

    ``$TINYGAN_CACHE`` when it is set and not empty, else ``~/.cache/tinygan``.
    The folder is not created here; the functions that write to it create it.
    """
    env = os.environ.get("TINYGAN_CACHE", "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "tinygan"


def file_digest(path: Union[str, os.PathLike], algorithm: str = "md5") -> str:
    """Return the hex digest (lowercase) of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def md5sum(path: Union[str, os.PathLike]) -> str:
    """Return the md5 of the file at ``path`` as 32 lowercase hex digits."""
    return file_digest(path, "md5")


def sha256sum(path: Union[str, os.PathLike]) -> str:
    """Return the sha256 of the file at ``path`` as 64 lowercase hex digits."""
    return file_digest(path, "sha256")


@dataclass(frozen=True)
class Source:
    """One place a file can be downloaded from.

    Attributes
    ----------
    url : str
        The address.
    checksum : str or None
        The publisher's checksum, ``"md5:<32 hex>"`` or ``"sha256:<64 hex>"``
        (a bare hex string is read by its length); ``None`` accepts any bytes
        (avoid when a checksum is published).
    what : str
        A few words naming the source in messages, e.g. ``"LFW deep-funneled,
        original site"``; default the URL's host.
    filename : str or None
        The file's name in the download folder (:func:`fetch`); default the last
        part of the URL's path.
    """

    url: str
    checksum: Optional[str] = None
    what: str = ""
    filename: Optional[str] = None

    def __post_init__(self):
        if self.checksum is not None:
            algorithm, digest = _parse_checksum(self.checksum)
            object.__setattr__(self, "checksum", f"{algorithm}:{digest}")

    @property
    def algorithm(self) -> Optional[str]:
        return self.checksum.split(":", 1)[0] if self.checksum else None

    @property
    def digest(self) -> Optional[str]:
        return self.checksum.split(":", 1)[1] if self.checksum else None

    @property
    def label(self) -> str:
        """How messages name this source: ``what (url)``, or the URL alone."""
        return f"{self.what} ({self.url})" if self.what else self.url

    def dest_name(self) -> str:
        name = self.filename or urllib.parse.unquote(
            urllib.parse.urlsplit(self.url).path.rstrip("/").rsplit("/", 1)[-1])
        if not name or name in (".", ".."):
            raise ValueError(f"cannot tell a file name from {self.url!r}; give Source(filename=...)")
        return name

    def verifies(self, path: Path) -> Optional[str]:
        """None when ``path`` matches the checksum (or there is none), else the digest it has."""
        if self.checksum is None:
            return None
        got = file_digest(path, self.algorithm)
        return None if got == self.digest else got


def _parse_checksum(text: str):
    algorithm, sep, digest = text.strip().lower().rpartition(":")
    if not sep:
        algorithm = _ALGORITHMS.get(len(digest), "")
    if algorithm not in ("md5", "sha256") or len(digest) != {"md5": 32, "sha256": 64}[algorithm] \
            or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"checksum must be 'md5:<32 hex digits>' or 'sha256:<64 hex digits>', "
                         f"got {text!r}")
    return algorithm, digest


class Fetched(NamedTuple):
    """What :func:`fetch` returns: the verified file, its source, whether it was downloaded now."""

    path: Path
    source: Source
    downloaded: bool


def download(
    urls: Union[str, Source, Iterable[Union[str, Source]]],
    dest: Union[str, os.PathLike],
    md5: str | None = None,
    desc: str | None = None,
    *,
    sha256: str | None = None,
    timeout: float = 30.0,
    progress: bool = True,
    hint: str = LOCAL_COPY_HINT,
    log: Optional[Callable[[str], None]] = None,
) -> Path:
    """Download one file to ``dest``, trying each mirror in turn, and verify it.

    Parameters
    ----------
    urls : str, Source, or an iterable of them
        One URL or :class:`Source`, or a list of them tried in order.
    dest : str or os.PathLike
        Where the verified file ends up. Its folder is created.
    md5, sha256 : str, optional
        Expected checksum (hex) of plain-URL mirrors; a :class:`Source`
        without a checksum gets it too. ``None``: no check.
    desc : str, optional
        Name shown on the progress bar and in errors (default: ``dest``'s name).
    timeout : float
        Seconds to wait for a connection or for the next bytes.
    progress : bool
        Show a tqdm progress bar.
    hint : str
        The end of the all-sources-failed message: how to get the data by hand.
    log : callable, optional
        Where the one-line notes go (a mirror failed, trying the next; waiting for
        another process's download); default stderr.

    Returns
    -------
    pathlib.Path
        ``dest``. See :func:`fetch` for the rules.
    """
    if md5 and sha256:
        raise ValueError("download(): give md5 or sha256, not both")
    default = f"md5:{md5}" if md5 else (f"sha256:{sha256}" if sha256 else None)
    items = [urls] if isinstance(urls, (str, Source)) else list(urls)
    dest = Path(dest)
    sources = []
    for item in items:
        if isinstance(item, str):
            item = Source(item, default)
        elif item.checksum is None and default:
            item = Source(item.url, default, item.what)
        sources.append(Source(item.url, item.checksum, item.what, dest.name))
    return fetch(sources, dest.parent, desc=desc or dest.name, timeout=timeout, progress=progress,
                 hint=hint, log=log).path


def fetch(
    sources: Sequence[Source],
    folder: Union[str, os.PathLike],
    *,
    desc: str | None = None,
    timeout: float = 30.0,
    progress: bool = True,
    hint: str = LOCAL_COPY_HINT,
    log: Optional[Callable[[str], None]] = None,
) -> Fetched:
    """Get the first of ``sources`` that arrives whole and verified, into ``folder``.

    Each source's file is ``folder / source.filename`` (default: the URL's
    last path part). First, a file already there that matches its source's
    checksum is used without any network access (in the order of
    ``sources``); a damaged one is downloaded again and replaced only once the
    new copy verifies. Then the sources are tried in order: a source that
    cannot be reached (name not resolved, connection refused, timeout), that
    answers with an HTTP error, whose connection breaks, or that serves bytes
    with the wrong checksum is skipped for the next one. Only a failure to
    *write* (read-only cache, full disk) stops at once, as a DataError that
    names the path. Processes fetching the same file at once take turns: the
    first downloads, the others wait and use its file. One-line notes (a
    source failed and the next is tried; waiting for another process) go to
    ``log``, default stderr.

    Returns
    -------
    Fetched
        ``(path, source, downloaded)``.

    Raises
    ------
    DownloadError
        Every source failed: one line naming each source and why, that the
        network itself may be fine, and ``hint``. A broken connection keeps
        its ``.part`` (resumed next time); a wrong checksum deletes it.
    """
    sources = list(sources)
    if not sources:
        raise ValueError("fetch() needs at least one source, got an empty list")
    folder = Path(folder)
    name = desc or sources[0].dest_name()
    say = log if log is not None else _stderr

    for source in sources:
        dest = folder / source.dest_name()
        if dest.is_file() and source.verifies(dest) is None:
            return Fetched(dest, source, False)

    failures: List[tuple] = []  # (source, kind, reason)
    for i, source in enumerate(sources):
        dest = folder / source.dest_name()
        with cache_lock(dest, f"download {dest.name}", log=say):
            # Another process may have finished this download while we waited.
            if dest.is_file() and source.verifies(dest) is None:
                return Fetched(dest, source, False)
            kind, reason = _try_source(source, dest, name, timeout, progress)
        if kind is None:
            return Fetched(dest, source, True)
        failures.append((source, kind, reason))
        logger.info("source %s failed: %s", source.label, reason)
        if i + 1 < len(sources):
            say(f"{name}: {source.label} failed ({reason}); trying {sources[i + 1].label}")

    raise DownloadError(_summary(name, failures, hint))


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _try_source(source: Source, dest: Path, name: str, timeout: float, progress: bool):
    """Download ``source`` into ``dest``: ``(None, None)`` on success, else ``(kind, reason)``."""
    part = dest.with_name(dest.name + ".part")
    for attempt in range(2):
        resumed = part.is_file() and part.stat().st_size > 0
        try:
            _fetch(source.url, part, name, timeout, progress)
        except _Interrupted as e:
            # Whatever reached the .part stays there and is resumed next time.
            return "interrupted", str(e)
        except urllib.error.HTTPError as e:
            # The server answered but will not give us the file.
            return "http", f"HTTP {e.code} {e.reason}"
        except _Unreachable as e:
            return "network", str(e)
        got = source.verifies(part)
        if got is None:
            try:
                os.replace(part, dest)  # atomic: dest is either absent or complete
            except OSError as e:
                raise cache_write_error(dest, e) from None
            return None, None
        part.unlink()
        if not (resumed and attempt == 0):
            return "checksum", (f"{source.algorithm} mismatch: expected {source.digest}, got {got} "
                                "(the download was deleted)")
        # The kept .part may have come from another mirror or file: once more from zero.
    raise AssertionError("unreachable")


class _Unreachable(Exception):
    """No response from the server: DNS failure, refused connection, timeout."""


class _Interrupted(Exception):
    """The connection broke after the download had started."""


def _fetch(url: str, part: Path, name: str, timeout: float, progress: bool) -> None:
    """Stream ``url`` into ``part``, resuming from its current length if possible."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "tinygan-downloader"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # "Range not satisfiable": the .part may already hold the whole
            # file (a previous run died between the last byte and the rename).
            total = _total_from_content_range(e.headers.get("Content-Range", ""))
            e.close()
            if total == offset:
                return
            part.unlink()  # longer than the file, or unknown: start over
            return _fetch(url, part, name, timeout, progress)
        raise
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise _Unreachable(_reason(e, url)) from e

    with response:
        content_range = response.headers.get("Content-Range", "")
        resumed = bool(offset) and response.status == 206 and _range_start(content_range) == offset
        if offset and response.status == 206 and not resumed:
            # A part of the file, but not the part we asked for: start over
            # without a Range rather than stitch mismatched pieces together.
            part.unlink(missing_ok=True)
            response.close()
            return _fetch(url, part, name, timeout, progress)
        if not resumed:
            # The server ignored our Range (status 200) or answered oddly:
            # its body is the whole file, so overwrite the .part from zero.
            offset = 0
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        received = 0
        try:
            # Read errors become _Interrupted inside; an OSError that gets out
            # of this block is a failed write (a full disk): name the file.
            with open(part, "ab" if resumed else "wb") as f, tqdm(
                total=None if expected is None else offset + expected,
                initial=offset,
                desc=name,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                disable=not progress,
            ) as bar:
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as e:
                        raise _Interrupted(f"connection broke ({_reason(e, url)})") from e
                    if not chunk:
                        break
                    _write(f, chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except OSError as e:
            raise cache_write_error(part, e) from None
    if expected is not None and received < expected:
        # http.client returns b"" rather than raising when the peer closes early.
        raise _Interrupted(f"connection closed with {expected - received} of "
                           f"{offset + expected} bytes still to come")


def _write(f, chunk: bytes) -> None:
    """One write of a download (a function so that tests can make the disk full)."""
    f.write(chunk)


def _range_start(content_range: str) -> int | None:
    """First byte position of a ``Content-Range: bytes A-B/N`` header, or None."""
    try:
        unit, _, rest = content_range.strip().partition(" ")
        return int(rest.split("-", 1)[0]) if unit == "bytes" else None
    except ValueError:
        return None


def _total_from_content_range(content_range: str) -> int | None:
    """Total size of a ``Content-Range: bytes */N`` header, or None."""
    try:
        return int(content_range.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        return None


def _reason(error: BaseException, url: str = "") -> str:
    """A short human reason for a network failure (no traceback, no class zoo)."""
    if isinstance(error, urllib.error.URLError) and not isinstance(error.reason, str):
        error = error.reason  # the underlying socket error says more
    elif isinstance(error, urllib.error.URLError):
        return error.reason
    if isinstance(error, socket.gaierror):
        host = urllib.parse.urlsplit(url).hostname or url
        return f"name not resolved ({host})"
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror[:1].lower() + error.strerror[1:]
    return str(error) or type(error).__name__


def _summary(name: str, failures: list, hint: str) -> str:
    """One line: each source and why it failed, that the network may be fine, the hint."""
    count = f"its {len(failures)} sources" if len(failures) > 1 else "its source"
    detail = "; ".join(
        f"{i}) {source.label}: {reason}" if len(failures) > 1 else f"{source.label}: {reason}"
        for i, (source, _, reason) in enumerate(failures, 1))
    message = f"could not download {name} from {count}: {detail}"
    if any(kind == "interrupted" for _, kind, _ in failures):
        message += "; the partial download was kept, run again to resume"
    return f"{message}; {NETWORK_MAY_BE_FINE}; {hint}"
