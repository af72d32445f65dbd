"""Decoding face photos for :func:`tinygan.data.load_faces`, and the :class:`FaceStats` tally of the result.

This module holds the per-file work and its accounting: ``_decode_one`` opens
one image with Pillow, classifies it (colour, grayscale, too small under
:func:`min_side`, unreadable), turns it upright by its EXIF tag, cuts the
centred crop and resizes it with Lanczos filtering; ``_decode_all`` runs it
over a folder's files, in a pool of worker processes for large folders (in
input order, so the result is deterministic), fills one ``uint8`` NCHW array
in place and counts what was kept and left out in a :class:`FaceStats`.
Finding the files, the LFW download, the cache and the notes stay in
:mod:`tinygan.data.faces`, which re-exports :class:`FaceStats`,
:func:`min_side` and :data:`MIN_SIDE`.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

__all__ = ["FaceStats", "MIN_SIDE", "min_side"]

#: Images whose shorter side is under ``min_side(size)`` pixels are left out
#: (``FaceStats.too_small``): at least this many pixels...
MIN_SIDE = 8

# Below this many files a worker pool costs more to start than it saves.
_POOL_MIN_FILES = 256
# Modes that have one colour channel: grayscale by construction.
_SINGLE_CHANNEL_MODES = {"1", "L", "LA", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
_EXIF_ORIENTATION = 0x0112

_OK, _GRAY, _BAD, _SMALL = 0, 1, 2, 3
# Image.Resampling appeared in Pillow 9.1; the project allows Pillow 9.0.
_LANCZOS = getattr(Image, "Resampling", Image).LANCZOS


def min_side(size: int) -> int:
    """The shortest image side, in pixels, kept for output images of ``size`` pixels.

    ``max(MIN_SIDE, ceil(size / 2))``: an image would otherwise be enlarged
    more than twice (a 1x1 photo would become a flat tile of one colour), and
    nothing under 8 px is a face. 32 px for the default 64x64 output.
    """
    return max(MIN_SIDE, math.ceil(size / 2))


@dataclass
class FaceStats:
    """What :func:`~tinygan.data.load_faces` found, kept and left out.

    Attributes
    ----------
    found : int
        Image files found (by extension) in the source.
    grayscale_excluded : int
        Images left out because R == G == B at every pixel of the decoded
        original, or the file has a single channel.
    unreadable : int
        Files that could not be decoded (corrupt, truncated).
    kept : int
        Colour images returned;
        ``found - grayscale_excluded - unreadable - too_small``.
    smaller_than_crop : int
        Kept images smaller than ``crop``, for which the largest centred
        square was used instead.
    unreadable_examples : list of str
        Up to five ``"relative/path: reason"`` strings.
    folder : str or None
        The folder the images were read from (an extracted archive lives in
        the cache).
    cache_file : str or None
        The ``.npy`` holding the returned array.
    from_cache : bool
        Whether this call read the cache instead of decoding.
    seconds : float
        Wall time of this call.
    too_small : int
        Colour images left out because their shorter side is under
        :func:`min_side` ``(size)`` pixels.
    too_small_examples : list of str
        Up to five ``"relative/path: WxH"`` strings.
    source : str or None
        What the images came from, in words: the folder or archive given, or
        the LFW source used and its address.
    notes : list of str
        One-line notes for the user (files left out, images smaller than the
        crop, a fallback source in use), the same text as the
        :class:`~tinygan.data.DataWarning` warnings.
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
    too_small: int = 0
    too_small_examples: List[str] = field(default_factory=list)
    source: Optional[str] = None
    notes: List[str] = field(default_factory=list)


# A change to what these decode must bump tinygan.data.faces._CACHE_VERSION, so that
# stale caches are not reused.

def _decode_one(path: str, size: int, crop: Optional[int]):
    """Decode one file: ``(_OK, uint8 (3, size, size), clipped)``, ``(_GRAY, None,
    False)``, ``(_SMALL, "WxH", False)`` or ``(_BAD, reason, False)``. Runs in
    worker processes."""
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
        if min(width, height) < min_side(size):
            return _SMALL, f"{width}x{height}", False
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
            elif status == _SMALL:
                stats.too_small += 1
                if len(stats.too_small_examples) < 5:
                    stats.too_small_examples.append(f"{rel}: {payload}")
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
