"""The library's one image-grid writer: a batch of NCHW images -> one PNG.

:func:`make_grid` lays a batch out like ``torchvision.utils.make_grid`` (tiles
in row-major order, ``nrow`` tiles per row, ``padding`` pixels between tiles
and around the border) and converts to 8-bit; :func:`save_grid` writes it as
a PNG with Pillow, optionally enlarged so that 28x28 or 32x32 samples are
visible on a screen.

Both work on host NumPy arrays: copy device arrays over first (e.g. with
``tinygan.backend.to_host``). Generators ending in ``tanh`` produce values in
[-1, 1]: pass ``value_range=(-1, 1)``.
"""
from __future__ import annotations

import math
import numbers
import os

import numpy as np
from PIL import Image

from ..files import atomic_write

__all__ = ["make_grid", "save_grid", "save_timeline"]


def _check_int(value, name, minimum):
    # bool is an int subclass, but `padding=True` is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_images(images):
    try:
        x = np.asarray(images)
    except Exception as exc:  # CuPy refuses implicit device -> host copies
        raise TypeError(
            f"images must be a host NumPy array, got {type(images).__module__}."
            f"{type(images).__name__} ({exc}); copy it with tinygan.backend.to_host first") from exc
    if x.ndim != 4:
        hint = ""
        if x.ndim == 3:
            hint = " (for a batch of grayscale (N, H, W) images pass images[:, None])"
        raise ValueError(
            f"images must be a 4-d NCHW array (N, C, H, W) with C in {{1, 3}}, "
            f"got {x.ndim}-d shape {x.shape}{hint}")
    if x.shape[1] not in (1, 3):
        hint = ""
        if x.shape[-1] in (1, 3):
            hint = " (it looks like NHWC: pass images.transpose(0, 3, 1, 2))"
        raise ValueError(
            f"images must be NCHW with C = 1 or 3 channels, got shape {x.shape} "
            f"with C = {x.shape[1]}{hint}")
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"images must hold at least one non-empty image, got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)
            or x.dtype == np.bool_):
        raise ValueError(f"images must be a real numeric array, got dtype {x.dtype}")
    x = x.astype(np.float64, copy=False)
    bad = ~np.isfinite(x)
    if bad.any():
        first = int(np.argmax(bad.reshape(x.shape[0], -1).any(axis=1)))
        raise ValueError(
            f"images contain {int(bad.sum())} non-finite values (NaN or inf), the first in "
            f"image {first}; a diverged generator? expected finite values")
    return x


def _check_range(value_range):
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"value_range must be a pair (low, high), got {value_range!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"value_range must be finite with low < high, got {value_range!r}")
    return lo, hi


def make_grid(images, nrow=None, padding=2, pad_value=1.0, value_range=(0.0, 1.0)):
    """Tile a batch of images into one 8-bit picture.

    Parameters
    ----------
    images : array of shape (N, C, H, W), C in {1, 3}
        Float (or integer) images on the host.
    nrow : int, optional
        Images per row (as in ``torchvision.utils.make_grid``); default
        ``ceil(sqrt(N))``, a near-square grid. Rows are filled left to right,
        top to bottom; unused cells of the last row keep the padding colour.
    padding : int
        Pixels of ``pad_value`` between tiles and around the border.
    pad_value : float
        Colour of the padding, in the same units as the images (``1.0`` is
        white for the default ``value_range``).
    value_range : (low, high)
        Values are clipped to this range, then mapped linearly to 0..255:
        ``round_half_up(255 * (clip(x, low, high) - low) / (high - low))``.

    Returns
    -------
    numpy.ndarray of uint8, shape (rows * (H + padding) + padding,
    cols * (W + padding) + padding, C), where ``cols = min(nrow, N)`` and
    ``rows = ceil(N / cols)``. Image ``i`` sits at grid cell
    ``(i // cols, i % cols)``, its top-left pixel at
    ``(padding + r * (H + padding), padding + c * (W + padding))``.

    Raises
    ------
    ValueError
        For a shape that is not NCHW with 1 or 3 channels, non-finite values,
        or invalid ``nrow``, ``padding`` or ``value_range``.
    """
    x = _check_images(images)
    lo, hi = _check_range(value_range)
    padding = _check_int(padding, "padding", 0)
    n, c, h, w = x.shape
    nrow = math.ceil(math.sqrt(n)) if nrow is None else _check_int(nrow, "nrow", 1)
    try:
        pad_value = float(pad_value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"pad_value must be a number, got {pad_value!r}") from exc

    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    # Fill the unused cells with padding-coloured images, then place every tile
    # with one reshape/transpose instead of a Python loop over images.
    cells = np.full((rows * cols, c, h + padding, w + padding), pad_value, dtype=np.float64)
    cells[:n, :, :h, :w] = x
    grid = (cells.reshape(rows, cols, c, h + padding, w + padding)
                 .transpose(0, 3, 1, 4, 2)                       # rows, H, cols, W, C
                 .reshape(rows * (h + padding), cols * (w + padding), c))
    # Each cell carries its padding on the bottom/right; the top/left border
    # is added here.
    grid = np.pad(grid, ((padding, 0), (padding, 0), (0, 0)), constant_values=pad_value)

    scaled = (np.clip(grid, lo, hi) - lo) * (255.0 / (hi - lo))
    return np.floor(scaled + 0.5).astype(np.uint8)


def save_grid(path, images, nrow=None, padding=2, value_range=(0.0, 1.0), scale=1, *,
              pad_value=1.0):
    """Write a batch of NCHW images as one PNG grid (see :func:`make_grid`).

    One-channel images are saved as 8-bit grayscale PNGs, three-channel as RGB.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, ending in ``.png``; its directory must exist. Written
        atomically (temporary file + rename), so a viewer polling the file
        never sees half an image.
    images, nrow, padding, value_range, pad_value
        As for :func:`make_grid`.
    scale : int
        Integer nearest-neighbour enlargement of the whole grid (each pixel
        becomes a ``scale x scale`` block), e.g. 4 for MNIST-sized samples.
        Integer factors keep pixels sharp and equal-sized.
    """
    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(f"save_grid writes PNG files; the path must end in '.png', got {path!r}")
    scale = _check_int(scale, "scale", 1)
    grid = make_grid(images, nrow=nrow, padding=padding, pad_value=pad_value,
                     value_range=value_range)
    if scale > 1:
        grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)

    # Pillow infers the mode from the uint8 array: (H, W) -> "L", (H, W, 3) -> "RGB".
    image = Image.fromarray(np.ascontiguousarray(grid[:, :, 0] if grid.shape[2] == 1 else grid))
    with atomic_write(path) as fh:
        image.save(fh, format="PNG")


#: at most this many frames in a timeline (evenly spaced over the epochs, the last always in)
TIMELINE_FRAMES = 60


def save_timeline(path, frames, duration_ms=400, last_ms=2000, max_frames=TIMELINE_FRAMES):
    """Assemble PNG files ``frames`` (the per-epoch grids, in order) into one looping animated GIF.

    Over ``max_frames`` grids, an even selection of them is used, the first and last included; the
    last frame stays ``last_ms`` on screen. Colours are reduced to GIF's 256 per frame by Pillow
    (adaptive palette). Written atomically, as every other file of a run.
    """
    path = os.fspath(path)
    if not path.lower().endswith(".gif"):
        raise ValueError(f"save_timeline writes GIF files; the path must end in '.gif', got {path!r}")
    frames = [os.fspath(f) for f in frames]
    if not frames:
        raise ValueError("save_timeline needs at least one frame")
    if len(frames) > max_frames:
        keep = np.unique(np.linspace(0, len(frames) - 1, max_frames).round().astype(int))
        frames = [frames[i] for i in keep]
    images = []
    for f in frames:
        with Image.open(f) as im:
            images.append(im.convert("RGB").quantize(256))
    durations = [duration_ms] * (len(images) - 1) + [last_ms]
    with atomic_write(path) as fh:
        images[0].save(fh, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
