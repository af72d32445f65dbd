"""Downloads with mirrors, resumption and checksums, and the cache folder.

A download is written to ``dest + ".part"`` and renamed to ``dest`` only after
its md5 has been checked, so a file found at ``dest`` is always complete and
verified. An interrupted download leaves the ``.part`` behind and the next call
resumes it with an HTTP ``Range`` request.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterable, Union

from tqdm import tqdm

from .errors import DownloadError

__all__ = ["default_cache_dir", "download", "md5sum"]

#: Appended to every "could not download" message: the command-line examples
#: accept a local copy of any data set through ``--data``.
LOCAL_COPY_HINT = "pass --data PATH to use a local copy"

_CHUNK = 1 << 16  # 64 KiB: large enough for speed, small enough for a smooth bar


def default_cache_dir() -> Path:
    """Return the folder where downloads and preprocessed arrays are kept.

    ``$TINYGAN_CACHE`` when it is set and not empty, else ``~/.cache/tinygan``.
    The folder is not created here; the functions that write to it create it.
    """
    env = os.environ.get("TINYGAN_CACHE", "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "tinygan"


def md5sum(path: Union[str, os.PathLike]) -> str:
    """Return the md5 of the file at ``path`` as 32 lowercase hex digits.

    The file is read in chunks, so large archives need little memory.
    """
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    urls: Union[str, Iterable[str]],
    dest: Union[str, os.PathLike],
    md5: str | None = None,
    desc: str | None = None,
    *,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Download a file, trying each mirror in turn, and verify its md5.

    Args:
        urls: one URL, or a list of mirrors tried in order until one works.
        dest: where the verified file ends up. Its folder is created.
        md5: expected md5 (hex). ``None`` skips the check; pass it whenever
            the publisher gives one.
        desc: name shown on the progress bar and in errors (default: the
            file name of ``dest``).
        timeout: seconds to wait for a connection or for the next bytes.
        progress: show a tqdm progress bar.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    If ``dest`` exists and matches ``md5`` (or no md5 is given) nothing is
    downloaded. An existing ``dest`` with the wrong md5 is downloaded again and
    replaced only once the new copy verifies.

    Raises:
        DownloadError: when no mirror can be reached or serves the file (one
            line that names the file, the reason and the ``--data`` hint), or
            when the downloaded bytes do not match ``md5``; in that case the
            ``.part`` file is deleted so the next attempt starts afresh.
    """
    url_list = [urls] if isinstance(urls, str) else list(urls)
    if not url_list:
        raise ValueError("download() needs at least one URL, got an empty list")
    dest = Path(dest)
    name = desc or dest.name
    md5 = md5.lower() if md5 else None

    if dest.exists() and (md5 is None or md5sum(dest) == md5):
        return dest

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures: list[tuple[str, str, str]] = []  # (url, kind, reason)
    for url in url_list:
        try:
            _fetch(url, part, name, timeout, progress)
        except _Interrupted as e:
            # Whatever reached the .part stays there and is resumed next time.
            failures.append((url, "interrupted", str(e)))
            continue
        except urllib.error.HTTPError as e:
            # The server answered but will not give us the file: try the next.
            failures.append((url, "http", f"HTTP {e.code} {e.reason}"))
            continue
        except _Unreachable as e:
            # DNS failure, refused connection, timeout: try the next mirror.
            failures.append((url, "network", str(e)))
            continue
        if md5 is not None:
            got = md5sum(part)
            if got != md5:
                part.unlink()
                raise DownloadError(
                    f"md5 mismatch for {name} downloaded from {url}: expected {md5}, "
                    f"got {got}; the partial file was deleted, run again to retry"
                )
        os.replace(part, dest)  # atomic: dest is either absent or complete
        return dest

    raise DownloadError(f"could not download {name}: {_summary(failures)}; {LOCAL_COPY_HINT}")


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
        raise _Unreachable(_reason(e)) from e

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
                    raise _Interrupted(_reason(e)) from e
                if not chunk:
                    break
                f.write(chunk)  # a full disk raises here, as itself
                received += len(chunk)
                bar.update(len(chunk))
    if expected is not None and received < expected:
        # http.client returns b"" rather than raising when the peer closes early.
        raise _Interrupted(f"connection closed with {expected - received} of "
                           f"{offset + expected} bytes still to come")


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


def _reason(error: BaseException) -> str:
    """A short human reason for a network failure (no traceback, no class zoo)."""
    if isinstance(error, urllib.error.URLError) and not isinstance(error.reason, str):
        error = error.reason  # the underlying socket error says more
    elif isinstance(error, urllib.error.URLError):
        return error.reason
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _summary(failures: list[tuple[str, str, str]]) -> str:
    """Condense the failures of all mirrors into one clause of one line."""
    if all(kind == "network" for _, kind, _ in failures):
        reasons = {reason for _, _, reason in failures}
        if len(reasons) == 1:
            return f"network unreachable ({reasons.pop()})"
        detail = "; ".join(f"{urllib.parse.urlsplit(u).netloc}: {r}" for u, _, r in failures)
        return f"network unreachable ({detail})"
    detail = "; ".join(f"{u}: {r}" for u, _, r in failures)
    summary = f"no mirror delivered it ({detail})"
    if any(kind == "interrupted" for _, kind, _ in failures):
        summary += "; the partial download was kept, run again to resume"
    return summary
