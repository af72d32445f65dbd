"""Face images (LFW deep-funneled, or any folder or archive of photos) as uint8 NCHW.

Loading 13,233 JPEGs takes a few seconds, so the preprocessed array is cached
as ``.npy`` under a key that changes whenever the files, the size or the crop
change; later calls read the cache. See :func:`load_faces`.

LFW is downloaded from the sources of :data:`LFW_SOURCES`, tried in order and
each verified by its published checksum: the deep-funneled archive at its
original address, then the "funneled" variant (the same 13,233 photos aligned
by the earlier funneling method) that scikit-learn downloads from figshare.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import PIL

from ..files import atomic_write
from .archive import safe_extract
from .cache import cache_lock, cache_writes
from .download import Source, default_cache_dir, fetch
from .errors import DataError, data_warning
from .faces_decode import MIN_SIDE, FaceStats, _decode_all, min_side

__all__ = ["load_faces", "FaceStats", "DEFAULT_CROP", "IMAGE_EXTENSIONS", "LFW_URL", "LFW_MD5",
           "LFW_FUNNELED_URL", "LFW_FUNNELED_SHA256", "LFW_SOURCES", "MIN_SIDE", "min_side"]

logger = logging.getLogger(__name__)

LFW_URL = "http://vis-www.cs.umass.edu/lfw/lfw-deepfunneled.tgz"
LFW_MD5 = "68331da3eb755a505a502b5aacb3c201"
#: scikit-learn's copy of LFW "funneled" (fetch_lfw_people downloads it).
LFW_FUNNELED_URL = "https://ndownloader.figshare.com/files/5976015"
LFW_FUNNELED_SHA256 = "b47c8422c8cded889dc5a13418c4bc2abbda121092b3533a83306f90d900100a"

#: Where ``load_faces(None)`` gets LFW, in order; each file is checked against
#: its published checksum before it is used.
LFW_SOURCES = (
    Source(LFW_URL, f"md5:{LFW_MD5}", "LFW deep-funneled, original site", "lfw-deepfunneled.tgz"),
    Source(LFW_FUNNELED_URL, f"sha256:{LFW_FUNNELED_SHA256}",
           "LFW funneled, scikit-learn's copy on figshare", "lfw-funneled.tgz"),
)

#: How to get LFW by hand: the end of the message when every source failed.
LFW_BY_HAND = ("get lfw-deepfunneled.tgz (or lfw-funneled.tgz, or the deep-funneled .zip) by hand "
               "from a public dataset site that mirrors LFW (search the dataset hubs for "
               "'lfw-deepfunneled'), or use any folder of face photos, and pass it with --data PATH "
               "(a folder, .tgz or .zip; load_faces(source=PATH) in Python)")

#: Side of the centred square cut from each original before resizing; chosen
#: for LFW's 250x250 deep-funneled frames (see load_faces).
DEFAULT_CROP = 128

#: File name endings recognised as images (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# Bump whenever the preprocessing changes, so stale caches are not reused.
# 2: images smaller than min_side(size) are left out.
_CACHE_VERSION = 2


def load_faces(
    source: Union[str, os.PathLike, None] = None,
    size: int = 64,
    crop: Optional[int] = DEFAULT_CROP,
    cache_dir: Union[str, os.PathLike, None] = None,
    download: bool = True,
    progress: bool = True,
    *,
    return_stats: bool = False,
    workers: Optional[int] = None,
    warn: bool = True,
) -> Union[np.ndarray, Tuple[np.ndarray, FaceStats]]:
    """Load colour face images, centre-cropped and resized, as ``uint8`` NCHW.

    Each image is decoded at full resolution; images that are grayscale
    (R == G == B at every pixel of the decoded original, or stored with a
    single channel) are excluded and counted, and so are images whose shorter
    side is under :func:`min_side` ``(size)`` pixels (``max(8, size / 2)``: 32
    for 64x64; they would be enlarged more than twice); a centred ``crop`` x
    ``crop`` square is cut and resized to ``size`` x ``size`` with Lanczos
    filtering.
    On LFW deep-funneled this keeps exactly 13,194 of 13,233 images (the count
    the BEGAN write-up trained on).

    The default ``crop=128`` frames the whole face of LFW's 250x250
    deep-funneled photos, before the alignment warp's black margins reach the
    corners, and halves exactly to 64; the study behind it is in
    docs/data-notes.md. For other data sets pass the crop that suits them, or
    ``crop=None``.

    Caching: the result is saved as ``.npy`` (with a ``.json`` of the stats)
    in ``cache_dir``, under a key made of the folder's resolved path, every
    file's relative path, size and mtime, ``size``, ``crop`` and the Pillow
    version, so any change decodes again. On LFW with 2 cores decoding takes
    about 8 s and reading the cache 0.6 s (docs/data-notes.md).
    Colour JPEGs are not decoded in Pillow's reduced-size draft mode: the
    grayscale test must see the full-resolution pixels (draft is used only
    for single-channel JPEGs, which are grayscale whatever their pixels).
    Several processes may load the same source at once: one extracts and
    decodes, the others wait for it (saying so in one line) and read its cache.

    Parameters
    ----------
    source : str, os.PathLike or None
        A folder searched recursively for .jpg/.jpeg/.png/.bmp/.webp files
        (hidden files and ``__MACOSX`` folders skipped; files read in sorted
        order of their relative paths, so the order is the same on every
        machine); or a .tgz/.tar.gz/.tar/.zip archive, extracted safely into
        the cache once; or ``None`` for LFW, downloaded into the cache from
        the first of :data:`LFW_SOURCES` that works (LFW deep-funneled,
        111 MB, md5 checked; else LFW funneled from figshare, sha256 checked,
        with a note) and extracted.
    size : int
        Side of the returned images in pixels.
    crop : int or None
        Side of the centred square cut from each original, in pixels of the
        original, or ``None`` for the largest centred square. An image smaller
        than ``crop`` uses its largest centred square (counted in the stats,
        with a warning).
    cache_dir : str, os.PathLike or None
        Where archives are extracted and arrays cached; default
        ``default_cache_dir() / "faces"``.
    download : bool
        With ``source=None``, allow downloading LFW. ``False`` raises if it is
        not in the cache yet.
    progress : bool
        Show tqdm progress bars.
    return_stats : bool
        Also return a :class:`FaceStats`.
    workers : int, optional
        Decoding processes; default ``min(2, cpu_count)``; 1 decodes in this
        process. Folders under 256 files are always decoded here, where a pool
        would cost more to start than it saves.
    warn : bool
        Emit the notes as warnings. ``False`` leaves them only in
        ``FaceStats.notes``, for a caller that prints them itself.

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, FaceStats)
        ``uint8`` array ``(N, 3, size, size)``, or ``(array, FaceStats)``.

    Warns
    -----
    DataWarning
        (A UserWarning, shown as one line without a source line.) One when
        files were skipped as unreadable (``"skipped 3 unreadable files under
        ..., e.g. a/b.jpg: reason"``), one when images were too small, one
        when images were smaller than ``crop``, and one when LFW came from the
        funneled fallback. The same lines are in ``FaceStats.notes``.

    Raises
    ------
    DataError
        The source does not exist or is neither a folder nor an archive, holds
        no image files, or no usable colour image; the cache cannot be written
        (the message names the path and suggests ``TINYGAN_CACHE``).
    DownloadError
        No LFW source works (a subclass of DataError).
    ValueError
        ``size`` or ``crop`` is not a positive integer.
    """
    start = time.perf_counter()
    _check_positive_int("size", size)
    if crop is not None:
        _check_positive_int("crop", crop)
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir() / "faces"

    folder, described, fallback = _resolve_source(source, cache_dir, download, progress)
    entries = _list_images(folder)
    if not entries:
        raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found under {folder}")

    cache_file = cache_dir / _cache_name(folder, entries, size, crop)
    stats_file = cache_file.with_suffix(".json")
    cached = _read_cache(cache_file, stats_file, size)
    if cached is None:
        # One process decodes; the others wait here, then find its cache.
        with cache_lock(cache_file, f"decode the images under {folder}"):
            cached = _read_cache(cache_file, stats_file, size)
            if cached is None:
                images, stats = _decode_all(folder, entries, size, crop, progress, workers)
                stats.folder = str(folder)
                stats.cache_file = str(cache_file)
                if stats.kept == 0:
                    raise DataError(
                        f"no usable colour images under {folder}: found {stats.found} image "
                        f"files, {stats.grayscale_excluded} grayscale (excluded), "
                        f"{stats.unreadable} unreadable"
                        + (f", e.g. {stats.unreadable_examples[0]}"
                           if stats.unreadable_examples else "")
                        + (f", {stats.too_small} smaller than {min_side(size)} px"
                           if stats.too_small else ""))
                _write_cache(cache_file, stats_file, images, stats)
    if cached is not None:
        images, stats = cached
        stats.from_cache = True
        stats.folder, stats.cache_file = str(folder), str(cache_file)
    stats.seconds = time.perf_counter() - start
    stats.source = described
    stats.notes = _notes(stats, size, crop, fallback)
    if warn:
        for note in stats.notes:
            data_warning(note)
    logger.info("faces from %s: found %d, grayscale excluded %d, unreadable %d, too small %d, "
                "kept %d (%s, %.1f s)", described, stats.found, stats.grayscale_excluded,
                stats.unreadable, stats.too_small, stats.kept,
                "cached" if stats.from_cache else "decoded", stats.seconds)
    return (images, stats) if return_stats else images


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer number of pixels, got {value!r}")


# ----------------------------------------------------------------------------
# Where the images are
# ----------------------------------------------------------------------------

def _resolve_source(source, cache_dir: Path, download: bool, progress: bool):
    """``(folder to read, the source in words, the LFW fallback Source or None)``."""
    if source is None:
        return _lfw(cache_dir, download, progress)

    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve(), str(path.resolve()), None
    if path.is_file():
        return _extracted(path, cache_dir), f"{path.resolve()} (archive)", None
    raise DataError(f"face source not found: {path} (expected a folder of images or a "
                    ".tgz/.tar.gz/.tar/.zip archive)")


def _lfw(cache_dir: Path, download: bool, progress: bool):
    """LFW from the cache, or downloaded from the first of LFW_SOURCES that works."""
    if not download:
        for candidate in LFW_SOURCES:
            # Files reach these names only once verified (see fetch), so no
            # checksum is recomputed here.
            if (cache_dir / candidate.dest_name()).is_file():
                archive, used = cache_dir / candidate.dest_name(), candidate
                break
        else:
            names = " or ".join(str(cache_dir / c.dest_name()) for c in LFW_SOURCES)
            raise DataError(f"LFW is not in the cache ({names}); pass download=True, or "
                            "source= a folder or archive of images")
    else:
        archive, used, _ = fetch(LFW_SOURCES, cache_dir, desc="LFW", progress=progress,
                                 hint=LFW_BY_HAND)
    described = f"{used.what}: {used.url} (cached as {archive})"
    fallback = used if used is not LFW_SOURCES[0] else None
    return _extracted(archive, cache_dir), described, fallback


def _extracted(archive: Path, cache_dir: Path) -> Path:
    """Extract ``archive`` into the cache unless an earlier call (or another process) did."""
    archive = archive.resolve()
    st = archive.stat()
    # The archive's identity is its path, size and mtime: re-downloading or
    # editing it gives a new folder, and the md5 of 111 MB is not recomputed
    # on every call.
    key = hashlib.sha256(f"{archive}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:12]
    stem = archive.name
    for suffix in (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar", ".zip"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    dest = cache_dir / "extracted" / f"{stem}-{key}"
    if dest.is_dir():
        return dest
    with cache_lock(dest, f"extract {archive.name}"):
        if not dest.is_dir():  # another process may have finished while we waited
            logger.info("extracting %s into %s (once)", archive, dest)
            with cache_writes(dest):
                # safe_extract works in a private temporary folder beside dest
                # and renames it into place at the end.
                safe_extract(archive, dest)
    return dest


def _list_images(root: Path) -> List[Tuple[str, int, int]]:
    """Sorted ``(relative posix path, size, mtime_ns)`` of the image files under ``root``."""
    entries = []
    seen = set()
    for folder, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:  # a symlink loop: do not walk it twice
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        # Hidden files and macOS resource forks (__MACOSX/._x.jpg) are not images.
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__MACOSX"]
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = os.path.join(folder, name)
            try:
                fst = os.stat(path)
                size, mtime = fst.st_size, fst.st_mtime_ns
            except OSError:  # a broken symlink: listed, then reported as unreadable
                size, mtime = -1, 0
            entries.append((os.path.relpath(path, root).replace(os.sep, "/"), size, mtime))
    entries.sort()
    return entries



# ----------------------------------------------------------------------------
# Cache
# ----------------------------------------------------------------------------

def _cache_name(folder: Path, entries, size: int, crop: Optional[int]) -> str:
    """File name whose key changes with the folder, its files, size, crop and Pillow."""
    digest = hashlib.sha256()
    # Pillow's version is part of the key: another libjpeg may decode
    # slightly different pixels.
    digest.update(json.dumps({"version": _CACHE_VERSION, "folder": str(folder), "size": size,
                              "crop": crop, "pillow": PIL.__version__}).encode())
    for rel, nbytes, mtime in entries:
        digest.update(f"{rel}\0{nbytes}\0{mtime}\n".encode())
    crop_name = "max" if crop is None else str(crop)
    return f"{folder.name}-{size}px-crop{crop_name}-{digest.hexdigest()[:16]}.npy"


def _read_cache(cache_file: Path, stats_file: Path, size: int):
    """The cached ``(images, stats)``, or None when absent, stale or damaged."""
    if not (cache_file.is_file() and stats_file.is_file()):
        return None
    try:
        saved = json.loads(stats_file.read_text())
        saved.pop("notes", None)  # made again for each call
        stats = FaceStats(**saved)
        images = np.load(cache_file, allow_pickle=False)
    except (OSError, ValueError, TypeError) as e:
        logger.warning("ignoring damaged face cache %s (%s); decoding again", cache_file, e)
        return None
    if images.dtype != np.uint8 or images.shape != (stats.kept, 3, size, size):
        logger.warning("ignoring face cache %s: holds %s %s, expected uint8 %s; decoding again",
                       cache_file, images.dtype, images.shape, (stats.kept, 3, size, size))
        return None
    return images, stats


def _write_cache(cache_file: Path, stats_file: Path, images: np.ndarray, stats: FaceStats) -> None:
    saved = asdict(stats)
    saved.pop("notes")
    with cache_writes(cache_file):
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        # The stats sidecar goes first: the .npy is the commit point read by _read_cache.
        with atomic_write(stats_file) as f:
            f.write(json.dumps(saved, indent=1).encode())
        with atomic_write(cache_file) as f:
            np.save(f, images, allow_pickle=False)


def _notes(stats: FaceStats, size: int, crop: Optional[int], fallback: Optional[Source]) -> List[str]:
    """The one-line notes of a load: fallback source, files left out, clipped crops."""
    notes = []
    if fallback is not None:
        notes.append(f"LFW deep-funneled could not be downloaded; using {fallback.what} "
                     f"({fallback.url}): the same photos aligned by the earlier funneling method, "
                     f"{stats.kept} colour images")
    if stats.unreadable:
        plural = "s" if stats.unreadable != 1 else ""
        notes.append(f"skipped {stats.unreadable} unreadable file{plural} under {stats.folder}, "
                     f"e.g. {stats.unreadable_examples[0]}")
    if stats.too_small:
        plural = "s" if stats.too_small != 1 else ""
        notes.append(f"left out {stats.too_small} image{plural} under {stats.folder} smaller than "
                     f"{min_side(size)} px on a side (they would be enlarged more than twice to "
                     f"{size}x{size}), e.g. {stats.too_small_examples[0]}")
    if stats.smaller_than_crop:
        notes.append(f"{stats.smaller_than_crop} images under {stats.folder} are smaller than "
                     f"crop={crop} px; their largest centred square was used instead")
    return notes
