"""Face images (LFW deep-funneled, or any folder or archive of photos) as uint8 NCHW.

Loading 13,233 JPEGs takes a few seconds, so the preprocessed array is cached
as ``.npy`` under a key that changes whenever the files, the size or the crop
change; later calls read the cache. See :func:`load_faces`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import multiprocessing
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import PIL
from PIL import Image, ImageOps
from tqdm import tqdm

from .archive import safe_extract
from .download import default_cache_dir
# Imported under another name: load_faces's ``download`` flag would shadow it.
from .download import download as _download_file
from .errors import DataError

__all__ = ["load_faces", "FaceStats", "DEFAULT_CROP", "IMAGE_EXTENSIONS", "LFW_URL", "LFW_MD5"]

logger = logging.getLogger(__name__)

LFW_URL = "http://vis-www.cs.umass.edu/lfw/lfw-deepfunneled.tgz"
LFW_MD5 = "68331da3eb755a505a502b5aacb3c201"

#: Side of the centred square cut from each original before resizing; chosen
#: for LFW's 250x250 deep-funneled frames (see load_faces).
DEFAULT_CROP = 128

#: File name endings recognised as images (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# Bump whenever the preprocessing changes, so stale caches are not reused.
_CACHE_VERSION = 1
# Below this many files a worker pool costs more to start than it saves.
_POOL_MIN_FILES = 256
# Modes that have one colour channel: grayscale by construction.
_SINGLE_CHANNEL_MODES = {"1", "L", "LA", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
_EXIF_ORIENTATION = 0x0112

_OK, _GRAY, _BAD = 0, 1, 2
# Image.Resampling appeared in Pillow 9.1; the project allows Pillow 9.0.
_LANCZOS = getattr(Image, "Resampling", Image).LANCZOS


@dataclass
class FaceStats:
    """What :func:`load_faces` found, kept and left out.

    Attributes:
        found: image files found (by extension) in the source.
        grayscale_excluded: images left out because R == G == B at every
            pixel of the decoded original, or the file has a single channel.
        unreadable: files that could not be decoded (corrupt, truncated).
        kept: colour images returned; ``found - grayscale_excluded - unreadable``.
        smaller_than_crop: kept images smaller than ``crop``, for which the
            largest centred square was used instead.
        unreadable_examples: up to five ``"relative/path: reason"`` strings.
        folder: the folder the images were read from (an extracted archive
            lives in the cache).
        cache_file: the ``.npy`` holding the returned array.
        from_cache: whether this call read the cache instead of decoding.
        seconds: wall time of this call.
    """

    found: int
    grayscale_excluded: int
    unreadable: int
    kept: int
    smaller_than_crop: int = 0
    unreadable_examples: List[str] = field(default_factory=list)
    folder: Optional[str] = None
    cache_file: Optional[str] = None
    from_cache: bool = False
    seconds: float = 0.0


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
) -> Union[np.ndarray, Tuple[np.ndarray, FaceStats]]:
    """Load colour face images, centre-cropped and resized, as ``uint8`` NCHW.

    Each image is decoded at full resolution; images that are grayscale
    (R == G == B at every pixel of the decoded original, or stored with a
    single channel) are excluded and counted; a centred ``crop`` x ``crop``
    square is cut and resized to ``size`` x ``size`` with Lanczos filtering.
    On LFW deep-funneled this keeps exactly 13,194 of 13,233 images (the count
    the BEGAN write-up trained on).

    Why ``crop=128`` by default: LFW's deep-funneled frames are 250x250 with
    the face roughly in the central 100-150 px. Looking at 64x64 results of
    crops of 100, 128, 150 and 180 px: 100 cuts off chins and foreheads; 128
    shows the whole face filling the frame, with a little hair, ears and
    background; 150 adds neck and shoulders so the face is about half the
    frame; from 180 on, the black margins left by the alignment warp show in
    the corners. (Share of crops with a near-black 4x4 corner, over 1,500
    random images: 4.0% at 100, 4.5% at 128, 5.7% at 150 - dark backgrounds
    - then 11.7% at 180 and 23.5% at 200 as warp margins come in.) 128 -> 64
    is also an exact 2x reduction, which keeps the resampling crisp. For other
    data sets pass the crop that suits them, or ``crop=None``.

    Caching: the result is saved as ``.npy`` (with a ``.json`` of the stats)
    in ``cache_dir``, under a key made of the folder's resolved path, every
    file's relative path, size and mtime, ``size``, ``crop`` and the Pillow
    version, so any change decodes again. Measured on LFW with 2 cores: about
    8 s to decode (2 worker processes; ~11 s with one), 0.6 s from the cache.
    Colour JPEGs are not decoded in Pillow's reduced-size draft mode: the
    grayscale test must see the full-resolution pixels (draft is used only
    for single-channel JPEGs, which are grayscale whatever their pixels).

    Args:
        source: a folder searched recursively for .jpg/.jpeg/.png/.bmp/.webp
            files (hidden files and ``__MACOSX`` folders skipped; files read in
            sorted order of their relative paths, so the order is the same on
            every machine); or a .tgz/.tar.gz/.tar/.zip archive, extracted
            safely into the cache once; or ``None`` for LFW deep-funneled,
            downloaded into the cache (111 MB, md5 checked) and extracted.
        size: side of the returned images in pixels.
        crop: side of the centred square cut from each original, in pixels of
            the original, or ``None`` for the largest centred square. An image
            smaller than ``crop`` uses its largest centred square (counted in
            the stats, with a warning).
        cache_dir: where archives are extracted and arrays cached; default
            ``default_cache_dir() / "faces"``.
        download: with ``source=None``, allow downloading LFW. ``False``
            raises if it is not in the cache yet.
        progress: show tqdm progress bars.
        return_stats: also return a :class:`FaceStats`.
        workers: decoding processes; default ``min(2, cpu_count)``; 1 decodes
            in this process. Folders under 256 files are always decoded here,
            where a pool would cost more to start than it saves.

    Returns:
        ``uint8`` array ``(N, 3, size, size)``, or ``(array, FaceStats)``.

    Warns:
        UserWarning: one line when files were skipped as unreadable
            (``"skipped 3 unreadable files under ..., e.g. a/b.jpg: reason"``),
            and one when images were smaller than ``crop``.

    Raises:
        DataError: the source does not exist or is neither a folder nor an
            archive, holds no image files, or no usable colour image;
            DownloadError when LFW cannot be downloaded.
        ValueError: ``size`` or ``crop`` is not a positive integer.
    """
    start = time.perf_counter()
    _check_positive_int("size", size)
    if crop is not None:
        _check_positive_int("crop", crop)
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir() / "faces"

    folder = _resolve_source(source, cache_dir, download, progress)
    entries = _list_images(folder)
    if not entries:
        raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found under {folder}")

    cache_file = cache_dir / _cache_name(folder, entries, size, crop)
    stats_file = cache_file.with_suffix(".json")
    cached = _read_cache(cache_file, stats_file, size)
    if cached is not None:
        images, stats = cached
        stats.from_cache = True
        stats.folder, stats.cache_file = str(folder), str(cache_file)
    else:
        images, stats = _decode_all(folder, entries, size, crop, progress, workers)
        stats.folder = str(folder)
        stats.cache_file = str(cache_file)
        if stats.kept == 0:
            raise DataError(
                f"no usable colour images under {folder}: found {stats.found} image files, "
                f"{stats.grayscale_excluded} grayscale (excluded), {stats.unreadable} unreadable"
                + (f", e.g. {stats.unreadable_examples[0]}" if stats.unreadable_examples else ""))
        _write_cache(cache_file, stats_file, images, stats)
    stats.seconds = time.perf_counter() - start

    _warn_about(stats, crop)
    logger.info("faces from %s: found %d, grayscale excluded %d, unreadable %d, kept %d "
                "(%s, %.1f s)", folder, stats.found, stats.grayscale_excluded, stats.unreadable,
                stats.kept, "cached" if stats.from_cache else "decoded", stats.seconds)
    return (images, stats) if return_stats else images


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer number of pixels, got {value!r}")


# ----------------------------------------------------------------------------
# Where the images are
# ----------------------------------------------------------------------------

def _resolve_source(source, cache_dir: Path, download: bool, progress: bool) -> Path:
    """The folder to read: the source itself, an extracted archive, or LFW."""
    if source is None:
        archive = cache_dir / "lfw-deepfunneled.tgz"
        if not archive.is_file():
            if not download:
                raise DataError(f"LFW deep-funneled is not in the cache ({archive}); pass "
                                "download=True, or source= a folder or archive of images")
            _download_file(LFW_URL, archive, md5=LFW_MD5, progress=progress)
        return _extracted(archive, cache_dir)

    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.is_file():
        return _extracted(path, cache_dir)
    raise DataError(f"face source not found: {path} (expected a folder of images or a "
                    ".tgz/.tar.gz/.tar/.zip archive)")


def _extracted(archive: Path, cache_dir: Path) -> Path:
    """Extract ``archive`` into the cache unless an earlier call already did."""
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
    if not dest.is_dir():
        logger.info("extracting %s into %s (once)", archive, dest)
        try:
            safe_extract(archive, dest)
        except OSError:
            if not dest.is_dir():  # another process may have finished first
                raise
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
# Decoding
# ----------------------------------------------------------------------------

def _decode_one(path: str, size: int, crop: Optional[int]):
    """Decode one file: ``(_OK, uint8 (3, size, size), clipped)``, ``(_GRAY, None,
    False)`` or ``(_BAD, reason, False)``. Runs in worker processes."""
    try:
        # Pillow warns about harmless oddities (odd EXIF, large images); over
        # thousands of files that would flood the terminal. Real damage raises.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                if im.mode in _SINGLE_CHANNEL_MODES:
                    # Grayscale whatever the pixels, but still decode so that
                    # a truncated file counts as unreadable. JPEG's draft mode
                    # decodes at 1/8 scale, which finds truncation just as well.
                    if im.format == "JPEG":
                        im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
                    im.load()
                    return _GRAY, None, False
                # Phone photos are often stored sideways with a rotation tag.
                upright = im
                if im.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                    upright = ImageOps.exif_transpose(im)
                # No draft for colour images: the grayscale test must see the
                # full-resolution decode (under a millisecond per LFW image).
                rgb = upright.convert("RGB")
        pixels = np.asarray(rgb)
        if (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all():
            return _GRAY, None, False
        width, height = rgb.size
        side = min(width, height) if crop is None else crop
        clipped = side > min(width, height)
        side = min(side, width, height)
        left, top = (width - side) // 2, (height - side) // 2
        # Crop first so the filter never reads pixels outside the square;
        # reducing_gap makes a large downscale start with a fast box reduce.
        tile = rgb.crop((left, top, left + side, top + side)).resize(
            (size, size), _LANCZOS, reducing_gap=3.0)
        return _OK, np.ascontiguousarray(np.asarray(tile).transpose(2, 0, 1)), clipped
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - Pillow signals damage with many types
        return _BAD, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__, False


def _decode_all(folder: Path, entries, size: int, crop: Optional[int], progress: bool,
                workers: Optional[int]) -> Tuple[np.ndarray, FaceStats]:
    paths = [os.path.join(folder, rel) for rel, _, _ in entries]
    work = functools.partial(_decode_one, size=size, crop=crop)
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    # Filled in place: stacking a list of 13k tiles would need twice the memory.
    images = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    stats = FaceStats(found=len(paths), grayscale_excluded=0, unreadable=0, kept=0)

    def consume(results):
        bar = tqdm(results, total=len(paths), desc=f"decoding {folder.name}", unit="img",
                   disable=not progress)
        for (rel, _, _), (status, payload, clipped) in zip(entries, bar):
            if status == _OK:
                images[stats.kept] = payload
                stats.kept += 1
                stats.smaller_than_crop += clipped
            elif status == _GRAY:
                stats.grayscale_excluded += 1
            else:
                stats.unreadable += 1
                if len(stats.unreadable_examples) < 5:
                    stats.unreadable_examples.append(f"{rel}: {payload}")

    if workers > 1 and len(paths) >= _POOL_MIN_FILES:
        with multiprocessing.get_context().Pool(workers) as pool:
            # imap keeps the input order, so the result is deterministic.
            consume(pool.imap(work, paths, chunksize=64))
    else:
        consume(map(work, paths))
    return images[: stats.kept], stats


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
        stats = FaceStats(**json.loads(stats_file.read_text()))
        images = np.load(cache_file, allow_pickle=False)
    except (OSError, ValueError, TypeError) as e:
        logger.warning("ignoring damaged face cache %s (%s); decoding again", cache_file, e)
        return None
    if images.dtype != np.uint8 or images.shape != (stats.kept, 3, size, size):
        logger.warning("ignoring face cache %s: holds %s %s, expected uint8 %s; decoding again",
                       cache_file, images.dtype, images.shape, (stats.kept, 3, size, size))
        return None
    return images, stats


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file and rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_cache(cache_file: Path, stats_file: Path, images: np.ndarray, stats: FaceStats) -> None:
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    saved = asdict(stats)
    # The stats sidecar goes first: the .npy is the commit point read by _read_cache.
    _atomic_write(stats_file, lambda f: f.write(json.dumps(saved, indent=1).encode()))
    _atomic_write(cache_file, lambda f: np.save(f, images, allow_pickle=False))


def _warn_about(stats: FaceStats, crop: Optional[int]) -> None:
    """Report skipped and clipped images, each in one line (also on cache hits)."""
    if stats.unreadable:
        plural = "s" if stats.unreadable != 1 else ""
        warnings.warn(f"skipped {stats.unreadable} unreadable file{plural} under {stats.folder}, "
                      f"e.g. {stats.unreadable_examples[0]}", stacklevel=3)
    if stats.smaller_than_crop:
        warnings.warn(f"{stats.smaller_than_crop} images under {stats.folder} are smaller than "
                      f"crop={crop} px; their largest centred square was used instead",
                      stacklevel=3)
