"""The sliced Wasserstein distance (SWD) between Laplacian-pyramid patches of two image sets.

This module holds :func:`sliced_wasserstein`, the multi-scale image metric of
Karras et al. 2018 (Progressive GAN, appendix D), and the code behind it: the
5-tap binomial blur, the Laplacian pyramid (cv2.pyrDown/pyrUp), the random
neighbourhood sampling, the per-channel normalisation of the descriptors and
the 1-D Wasserstein distance of their random projections. It is the per-epoch
metric of the BEGAN example and the costly one, so unlike the other metrics it
computes on the device of device arrays (CuPy, or the strict emulation) and
copies back only its few numbers, once. It is re-exported by
:mod:`tinygan.eval.metrics`, the usual import path.
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np

from .. import backend
from ._host import host_float64 as _host_float64

__all__ = ["sliced_wasserstein"]


# The binomial 5-tap filter [1, 4, 6, 4, 1] / 16 of Burt & Adelson's pyramid;
# applied along rows then columns it is the 5x5 Gaussian of cv2.pyrDown.
_BINOMIAL5 = np.array([1.0, 4.0, 6.0, 4.0, 1.0], dtype=np.float32) / 16.0


def _blur(x, gain=1.0):
    """Separable 5x5 binomial filter over the last two axes, edges mirrored.

    ``pad(mode="reflect")`` mirrors without repeating the edge pixel
    (d c b | a b c d | c b a), as scipy.ndimage's ``mode="mirror"`` in the
    authors' code. The loop runs over the 5 taps, never over pixels. Computed
    with the array module of ``x`` (NumPy, CuPy or the strict emulation).
    """
    xp = backend.get_array_module(x)
    h, w = x.shape[-2:]
    k = [float(c) for c in _BINOMIAL5 * np.float32(gain)]   # the float32 taps, as Python numbers
    p = xp.pad(x, [(0, 0)] * (x.ndim - 2) + [(2, 2), (0, 0)], mode="reflect")
    y = sum(k[i] * p[..., i:i + h, :] for i in range(5))
    p = xp.pad(y, [(0, 0)] * (x.ndim - 2) + [(0, 0), (2, 2)], mode="reflect")
    return sum(k[i] * p[..., :, i:i + w] for i in range(5))


def _pyr_down(x):
    """Blur then keep every second row and column (cv2.pyrDown)."""
    return _blur(x)[..., ::2, ::2]


def _pyr_up(x, shape):
    """Insert zeros between pixels, blur with 4x the filter (cv2.pyrUp), crop to ``shape``.

    The gain of 4 (2 per axis) makes up for the three zeros in every 2x2 block.
    Cropping handles odd sizes, where downsampling rounded up.
    """
    n, c, h, w = x.shape
    up = backend.get_array_module(x).zeros((n, c, 2 * h, 2 * w), dtype=x.dtype)
    up[:, :, ::2, ::2] = x
    return _blur(up, gain=2.0)[:, :, :shape[0], :shape[1]]


def _laplacian_pyramid(images, n_levels):
    """Levels of a Laplacian pyramid, finest first.

    Level ``i`` is ``G_i - up(G_{i+1})`` with ``G_0`` the images and
    ``G_{i+1} = down(G_i)``; the last level is the Gaussian level itself
    (the low-pass residual), as in the authors' code.
    """
    gaussian = images
    levels = []
    for _ in range(n_levels - 1):
        smaller = _pyr_down(gaussian)
        levels.append(gaussian - _pyr_up(smaller, gaussian.shape[-2:]))
        gaussian = smaller
    levels.append(gaussian)
    return levels


def _random_patches(level, per_image, size, rng):
    """``per_image`` random ``size x size`` neighbourhoods of every image: (N * per_image, C, size, size).

    A strided view of all windows is indexed once with random (image, row,
    column) triples, so the only memory used is that of the result. The
    positions are drawn on the host from ``rng`` (the same numbers on every
    backend) and moved to the level's device in one small copy each.
    """
    xp = backend.get_array_module(level)
    n, _, h, w = level.shape
    windows = xp.lib.stride_tricks.sliding_window_view(level, (size, size), axis=(2, 3))
    image = np.repeat(np.arange(n), per_image)
    rows = rng.integers(0, h - size + 1, size=n * per_image)
    cols = rng.integers(0, w - size + 1, size=n * per_image)
    if xp is not np:
        image, rows, cols = xp.asarray(image), xp.asarray(rows), xp.asarray(cols)
    return windows[image, :, rows, cols]


def _normalised_descriptors(patches):
    """Zero mean and unit variance per colour channel over the whole set, flattened to rows."""
    xp = backend.get_array_module(patches)
    mean = patches.mean(axis=(0, 2, 3), keepdims=True, dtype=np.float64)
    std = patches.std(axis=(0, 2, 3), keepdims=True, dtype=np.float64)
    # A constant channel (e.g. blank images) has std 0: leave it unscaled.
    std = xp.where(std == 0, 1.0, std)
    out = ((patches - mean) / std).astype(np.float32)
    return out.reshape(len(out), -1)


def _sliced_wasserstein_1(a, b, n_projections, n_repeats, rng):
    """Mean over random unit directions of the 1-D Wasserstein-1 distance of the projections.

    For equal-sized sets the 1-D optimal transport pairs the sorted values, so
    ``W1 = mean_i |sort(a . d)_i - sort(b . d)_i|``. The directions are drawn
    on the host from ``rng``; the result is a 0-d float64 array on the
    descriptors' device (no transfer here).
    """
    xp = backend.get_array_module(a, b)
    n, dim = a.shape
    # Directions are projected in chunks so that the (n, chunk) projection
    # matrices stay near 64 MB however many descriptors there are.
    chunk = max(1, min(n_projections, (1 << 24) // max(n, 1)))
    results = []
    for _ in range(n_repeats):
        dirs = rng.standard_normal((dim, n_projections))
        dirs = (dirs / np.linalg.norm(dirs, axis=0, keepdims=True)).astype(np.float32)
        if xp is not np:
            dirs = xp.asarray(dirs)
        total = 0.0
        for j in range(0, n_projections, chunk):
            proj_a = xp.sort(a @ dirs[:, j:j + chunk], axis=0)
            proj_b = xp.sort(b @ dirs[:, j:j + chunk], axis=0)
            total = total + xp.abs(proj_a - proj_b).sum(dtype=np.float64)
        results.append(total / (n * n_projections))
    return xp.mean(xp.stack(results))


def _check_image_batch(x, name):
    """Shape checks (no data read); the finiteness check is the caller's (it reads every pixel)."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(
            f"{name} must be NCHW images (N, C, H, W) with C in {{1, 3}}, got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} holds no images (shape {x.shape})")


def sliced_wasserstein(real, fake, *, nhood_size=7, nhoods_per_image=128, n_projections=512,
                       n_repeats=4, min_resolution=16, rng=0):
    """Sliced Wasserstein distance between Laplacian-pyramid patches of two image sets.

    The "SWD" of Karras et al. 2018 (Progressive GAN, arXiv 1710.10196,
    appendix D), following the authors' code:

    1. Build a Laplacian pyramid of every image: the 5-tap binomial filter
       ``[1, 4, 6, 4, 1] / 16`` along both axes, downsampling by 2, and
       ``L_i = G_i - up(G_{i+1})``, from full resolution down to the last
       level of at least ``min_resolution`` (16) pixels, which is kept as its
       Gaussian (low-pass) level. A 64x64 set gives levels 64, 32, 16; a
       28x28 set only level 28.
    2. From each level, take ``nhoods_per_image`` random ``nhood_size x
       nhood_size`` neighbourhoods per image (128 of 7x7 in the paper): each a
       descriptor of ``C * 49`` numbers.
    3. Normalise each set's descriptors per level and colour channel to zero
       mean and unit standard deviation over the whole set.
    4. For ``n_repeats`` batches of ``n_projections`` random unit directions
       ``d``, project both descriptor sets on each ``d``; the 1-D Wasserstein
       distance of equal-sized sets is ``mean_i |sort(A d)_i - sort(B d)_i|``.
       The level's SWD is the mean over directions and repeats, times 1e3 as
       the paper reports it.

    Parameters
    ----------
    real, fake : arrays (N, C, H, W), C in {1, 3}, H, W >= 16
        Images with values in [0, 1] (any range gives the same result, see
        below); same C, H and W. If the counts differ, the first
        ``min(N_real, N_fake)`` images of each are used (with a warning), since
        the sorted matching needs equal numbers of descriptors.
        Host (NumPy) or device arrays: with a device array (CuPy, or the
        strict emulation) among them, everything is computed on that device,
        the other set is copied there, and the only device-to-host transfer
        is the result's handful of numbers at the end. The random positions
        and directions come from the host generator either way, so a device
        gives the host's values up to float32 rounding.
    nhood_size, nhoods_per_image : int
        Neighbourhood side and number of neighbourhoods per image and level.
    n_projections, n_repeats : int
        Random directions per repeat, and repeats. The defaults (512 x 4) follow
        the paper's "512 projections", repeated 4 times; the authors' released
        code uses 4 x 128. Both estimate the same quantity (the average over
        all directions), more directions with less noise.
    min_resolution : int
        Coarsest pyramid level, 16 in the paper.
    rng : int or numpy.random.Generator
        Seed or generator for the neighbourhood positions and directions; the
        default makes repeated calls return identical values.

    Returns
    -------
    dict with ``"levels"``: the height of each pyramid level, finest first
    (e.g. ``[64, 32, 16]``); ``"swd"``: the SWD of each level x 1e3;
    ``"mean"``: their average (the paper's "avg" column); and
    ``"n_images"``: the number of images used from each set.

    Notes
    -----
    Lower is better. The random neighbourhoods and directions make the value
    noisy, more so with few images (the paper uses 16384): compare runs
    evaluated with the same number of images. Because each set is normalised
    with its own statistics (step 3), a change of brightness or contrast
    applied to a whole set (per channel, ``a * x + b`` with ``a > 0``) does
    not change the SWD at all; differences in the distribution of local
    structure at each scale do. Memory: about ``2 * N * nhoods_per_image *
    C * nhood_size^2 * 4`` bytes per level.
    """
    for name, value in (("nhood_size", nhood_size), ("nhoods_per_image", nhoods_per_image),
                        ("n_projections", n_projections), ("n_repeats", n_repeats),
                        ("min_resolution", min_resolution)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    on_host = backend.is_host(real) and backend.is_host(fake)
    if on_host:
        real = _host_float64(real, "real")
        fake = _host_float64(fake, "fake")
    else:
        # One set on the device is enough to compute there: the other follows it (a host set
        # of real images is copied once per call; keep it on the device to save that copy).
        xp = backend.get_array_module(*(v for v in (real, fake) if not backend.is_host(v)))
        real, fake = (v if not backend.is_host(v) else xp.asarray(np.asarray(v)) for v in (real, fake))
    _check_image_batch(real, "real")
    _check_image_batch(fake, "fake")
    if on_host:
        for name, x in (("real", real), ("fake", fake)):
            if not np.isfinite(x).all():
                raise ValueError(f"{name} contains NaN or inf; expected finite pixel values")
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(
            f"real and fake images must have the same (C, H, W), got {real.shape[1:]} and "
            f"{fake.shape[1:]}")
    c, h, w = real.shape[1:]
    if min(h, w) < max(min_resolution, nhood_size):
        raise ValueError(
            f"images must be at least {max(min_resolution, nhood_size)} pixels on each side "
            f"(min_resolution={min_resolution}, nhood_size={nhood_size}), got {h}x{w}")
    n = min(len(real), len(fake))
    if len(real) != len(fake):
        warnings.warn(
            f"sliced_wasserstein: {len(real)} real and {len(fake)} fake images; using the first "
            f"{n} of each (the sorted matching needs equal counts)", RuntimeWarning, stacklevel=2)
    rng = np.random.default_rng(rng)

    # Level sizes: halve (rounding up, as [::2] does) while the level stays
    # >= min_resolution on both sides.
    sizes = [(h, w)]
    while min(-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2)) >= min_resolution:
        sizes.append((-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2)))

    descriptors = []
    for images in (real[:n], fake[:n]):
        pyramid = _laplacian_pyramid(images.astype(np.float32), len(sizes))
        descriptors.append([
            _normalised_descriptors(_random_patches(level, nhoods_per_image, nhood_size, rng))
            for level in pyramid])

    per_level = [_sliced_wasserstein_1(a, b, n_projections, n_repeats, rng) for a, b in zip(*descriptors)]
    if on_host:
        values = [float(v) for v in per_level]
    else:
        # the one device-to-host transfer: every level's distance and the two finiteness flags
        xp = backend.get_array_module(real, fake)
        flags = [xp.isfinite(x).all().astype(np.float64) for x in (real, fake)]
        values = [float(v) for v in backend.to_host(xp.stack(per_level + flags))]
        for name, flag in zip(("real", "fake"), values[len(per_level):]):
            if not flag:
                raise ValueError(f"{name} contains NaN or inf; expected finite pixel values")
        values = values[:len(per_level)]
    swd = [1e3 * v for v in values]
    return {
        "levels": [s[0] for s in sizes],
        "swd": swd,
        "mean": float(np.mean(swd)),
        "n_images": n,
    }
