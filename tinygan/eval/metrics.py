"""Sample-quality metrics computed on the host with NumPy.

Losses of a GAN say little about the samples (the BEGAN paper's complaint), so
these functions judge samples directly, without a pretrained network:

* :func:`mode_metrics`: for the toy 2-D mixtures (8 Gaussians on a ring, 25 on
  a grid): how many modes the generator covers, how many samples land close
  to a mode, and how evenly they spread over the modes (the protocol of the
  VEEGAN and PacGAN papers).
* :func:`frechet_distance`: the Fréchet (2-Wasserstein) distance between
  Gaussians fitted to two sets of feature vectors, the formula behind FID.
* :func:`sliced_wasserstein`: the sliced Wasserstein distance between
  Laplacian-pyramid patches of real and generated images (Karras et al. 2018),
  a multi-scale comparison of image statistics.

Inputs are host NumPy arrays; copy device arrays over first (e.g. with
``tinygan.backend.to_host``). The exception is :func:`sliced_wasserstein`,
the per-epoch metric of the BEGAN example and the costly one: given device
arrays it computes on their device (CuPy, or the strict emulation) and copies
back only its few numbers, once. Results are Python floats, ints and NumPy
arrays, ready to log.

Metrics that need a classifier trained on MNIST (label entropy and class
histogram of samples, Fréchet distance in the classifier's feature space,
accuracy of a conditional GAN's labels) are added at the end of this file, in
the section marked for them.
"""
from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

from .. import backend

__all__ = ["mode_metrics", "frechet_distance", "sliced_wasserstein"]


def _host_float64(x, name):
    try:
        return np.asarray(x, dtype=np.float64)
    except TypeError as exc:  # CuPy refuses implicit device -> host copies
        raise TypeError(
            f"{name} must be a host NumPy array, got {type(x).__module__}.{type(x).__name__} "
            f"({exc}); copy it with tinygan.backend.to_host first") from exc


# ==========================================================================
# Mode coverage on 2-D mixtures of Gaussians
# ==========================================================================

def mode_metrics(samples, means, sigma):
    """Mode coverage, sample quality and mode balance for a mixture of isotropic Gaussians.

    Parameters
    ----------
    samples : array (N, D)
        Generated points (D = 2 for the ring and grid mixtures).
    means : array (K, D)
        Centres of the K modes of the real distribution.
    sigma : float
        Their common standard deviation (0.01 for the ring, 0.05 for the grid).

    Returns
    -------
    dict with

    ``high_quality_fraction`` : float
        Fraction of samples whose standardised distance to the nearest mean is
        below 3, ``min_k ||x - mu_k|| / sigma < 3``. Non-finite samples (a
        diverged generator) count as low quality.
    ``counts`` : int64 array (K,)
        Number of high-quality samples nearest to each mode.
    ``modes_captured`` : int
        Number of modes with ``counts > 0``: at least one high-quality sample.
    ``reverse_kl`` : float
        ``KL(q || u) = sum_k q_k log(q_k / u_k) = log K - H(q)`` in nats, where
        ``q = counts / counts.sum()`` is the distribution of high-quality
        samples over modes and ``u_k = 1/K`` is the uniform distribution of the
        real data over its modes (terms with ``q_k = 0`` contribute 0). "Reverse"
        because the model's distribution comes first. It is 0 for perfectly
        balanced modes and ``log K`` when every high-quality sample sits on a
        single mode. Low-quality samples are ignored. With no high-quality
        sample at all, ``q`` is undefined and the value is NaN (a gap in a
        plotted curve, not a misleading number).

    Notes
    -----
    This is the evaluation of Srivastava et al. 2017 (VEEGAN) and Lin et al.
    2018 (PacGAN) on 2500 samples: e.g. a vanilla GAN on the 5x5 grid covers
    about 17.3 of 25 modes with 94.8% high-quality samples in PacGAN's table.
    """
    x = _host_float64(samples, "samples")
    mu = _host_float64(means, "means")
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"samples must have shape (N, D) with N >= 1, got shape {x.shape}")
    if mu.ndim != 2 or mu.shape[0] == 0:
        raise ValueError(f"means must have shape (K, D) with K >= 1, got shape {mu.shape}")
    if mu.shape[1] != x.shape[1]:
        raise ValueError(
            f"samples have {x.shape[1]} coordinates but means have {mu.shape[1]}; expected the "
            f"same D (samples {x.shape}, means {mu.shape})")
    if not np.isfinite(mu).all():
        raise ValueError("means contain NaN or inf; expected finite mode centres")
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) \
            or not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")

    k = mu.shape[0]
    sq_dist = ((x[:, None, :] - mu[None, :, :]) ** 2).sum(axis=2)   # (N, K)
    finite = np.isfinite(sq_dist).all(axis=1)
    sq_dist[~finite] = np.inf   # argmin would otherwise point at a NaN column
    nearest = np.argmin(sq_dist, axis=1)
    nearest_sq = sq_dist[np.arange(len(x)), nearest]
    # Compare squared distances with (3 sigma)^2: no square root needed.
    high_quality = finite & (nearest_sq < (3.0 * sigma) ** 2)

    counts = np.bincount(nearest[high_quality], minlength=k).astype(np.int64)
    total = int(counts.sum())
    if total == 0:
        reverse_kl = math.nan
    else:
        q = counts[counts > 0] / total
        reverse_kl = float(np.sum(q * np.log(q * k)))
    return {
        "modes_captured": int(np.count_nonzero(counts)),
        "high_quality_fraction": float(high_quality.mean()),
        "reverse_kl": reverse_kl,
        "counts": counts,
    }


# ==========================================================================
# Fréchet distance between Gaussians fitted to feature sets
# ==========================================================================

def _sqrt_psd(matrix):
    """Symmetric square root of a positive semi-definite matrix by eigendecomposition."""
    eigvals, eigvecs = np.linalg.eigh(matrix)
    # Rounding makes zero eigenvalues come out as tiny negatives (-1e-17);
    # a covariance matrix has none, so clip before the square root.
    eigvals = np.clip(eigvals, 0.0, None)
    return (eigvecs * np.sqrt(eigvals)) @ eigvecs.T


def frechet_distance(feat_a, feat_b):
    """Fréchet distance between Gaussians fitted to two sets of feature vectors.

    With ``mu_a, S_a`` the mean and covariance of ``feat_a`` (and likewise for
    ``feat_b``), the Fréchet (2-Wasserstein) distance between
    ``N(mu_a, S_a)`` and ``N(mu_b, S_b)`` is (Dowson & Landau 1982; used as FID
    by Heusel et al. 2017, arXiv 1706.08500)::

        d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a^{1/2} S_b S_a^{1/2})^{1/2})

    It is returned as is (the squared distance, as FID reports it).

    Parameters
    ----------
    feat_a : array (N, D)
    feat_b : array (M, D)
        Feature vectors, one per row; N, M >= 2. Covariances use the unbiased
        ``1 / (N - 1)`` normalisation, like ``np.cov`` and common FID code.

    Returns
    -------
    float, >= 0.

    Notes
    -----
    Computed in float64 with symmetric eigendecompositions only (no SciPy):
    ``S_a^{1/2}`` from the eigendecomposition of ``S_a``, then
    ``Tr (S_a^{1/2} S_b S_a^{1/2})^{1/2} = sum_i sqrt(lambda_i)`` over the
    eigenvalues of that symmetric PSD matrix. Tiny negative eigenvalues from
    rounding are clipped to 0, so singular covariances (fewer samples than
    dimensions) are handled. The estimate is biased upwards for small sets:
    compare values computed with the same N and M.
    """
    a = _host_float64(feat_a, "feat_a")
    b = _host_float64(feat_b, "feat_b")
    for name, f in (("feat_a", a), ("feat_b", b)):
        if f.ndim != 2 or f.shape[0] < 2 or f.shape[1] < 1:
            raise ValueError(
                f"{name} must have shape (N, D) with N >= 2 samples (for a covariance) and "
                f"D >= 1, got shape {f.shape}")
        if not np.isfinite(f).all():
            raise ValueError(f"{name} contains NaN or inf; expected finite features")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"feat_a has {a.shape[1]} features per row but feat_b has {b.shape[1]}; "
            "expected the same D")

    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    ca, cb = a - mu_a, b - mu_b
    cov_a = ca.T @ ca / (len(a) - 1)
    cov_b = cb.T @ cb / (len(b) - 1)

    root_a = _sqrt_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    middle = (middle + middle.T) / 2  # exactly symmetric for eigvalsh
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh(middle), 0.0, None)).sum()

    diff = mu_a - mu_b
    d2 = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root
    # Equal sets give 0 up to rounding (about -1e-15); the distance is never negative.
    return float(max(d2, 0.0))


# ==========================================================================
# Sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al. 2018)
# ==========================================================================

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


# ==========================================================================
# Classifier-based MNIST metrics
# ==========================================================================
# Reserved for the metrics that judge MNIST samples with a classifier trained
# on real digits: label entropy and class histogram (mode coverage), Fréchet
# distance in the classifier's feature space (reuse frechet_distance above),
# and for a conditional GAN the fraction of samples of label y classified as y.
# They are added here by their own author; keep this section last.

def class_distribution(predicted, num_classes=10):
    """Fraction of samples assigned to each class: ``p_c = #{i : predicted_i = c} / N``, shape (num_classes,).

    ``predicted`` are integer class indices in [0, num_classes) (e.g. a
    classifier's argmax). The histogram of a generator that covers every digit
    equally is uniform, 1/num_classes each; a missing mode shows up as a zero.
    """
    pred = np.asarray(predicted)
    if pred.ndim != 1 or pred.size == 0:
        raise ValueError(f"predicted must be a non-empty 1-d array of class indices, got shape {pred.shape}")
    if pred.dtype.kind not in "iu":
        raise ValueError(f"predicted must hold integer class indices, got dtype {pred.dtype}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if pred.min() < 0 or pred.max() >= num_classes:
        raise ValueError(f"predicted class indices must be in [0, {num_classes}), got values from "
                         f"{int(pred.min())} to {int(pred.max())}")
    return np.bincount(pred, minlength=num_classes).astype(np.float64) / pred.size


def label_entropy(distribution):
    """Entropy ``H(p) = -sum_c p_c log p_c`` in nats (0 log 0 = 0) of a class distribution.

    ``log(num_classes)`` (2.303 for ten digits) for a uniform histogram, 0 when
    every sample is the same class: the mode-coverage score of unconditional
    MNIST samples.
    """
    p = _host_float64(distribution, "distribution")
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"distribution must be a non-empty 1-d array, got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any() or not math.isclose(p.sum(), 1.0, rel_tol=1e-6):
        raise ValueError(f"distribution must be non-negative and sum to 1, got sum {p.sum()!r}")
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())


def label_accuracy(predicted, labels, num_classes=10):
    """How often a conditional GAN's sample of label y is classified as y.

    Returns ``(accuracy, per_class)``: the fraction of all samples with
    ``predicted == labels``, and that fraction within each label (NaN for a
    label with no samples), shape (num_classes,).
    """
    pred = np.asarray(predicted)
    lab = np.asarray(labels)
    if pred.shape != lab.shape or pred.ndim != 1 or pred.size == 0:
        raise ValueError(f"predicted and labels must be non-empty 1-d arrays of the same length, got shapes "
                         f"{pred.shape} and {lab.shape}")
    if lab.dtype.kind not in "iu" or pred.dtype.kind not in "iu":
        raise ValueError(f"predicted and labels must be integer class indices, got dtypes {pred.dtype} and {lab.dtype}")
    if lab.min() < 0 or lab.max() >= num_classes:
        raise ValueError(f"labels must be in [0, {num_classes}), got values from {int(lab.min())} to {int(lab.max())}")
    correct = (pred == lab).astype(np.float64)
    counts = np.bincount(lab, minlength=num_classes)
    hits = np.bincount(lab, weights=correct, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)
    return float(correct.mean()), per_class


def classifier_metrics(predicted, features, real_features, labels=None, num_classes=10):
    """The MNIST metrics of a GAN's samples, from a classifier's outputs on them.

    Parameters
    ----------
    predicted : int array (N,)
        The classifier's class for each sample.
    features : array (N, D)
        Its penultimate-layer features of the samples.
    real_features : array (M, D)
        The same features of real digits (e.g. the test set).
    labels : int array (N,), optional
        The labels a conditional GAN was asked for.

    Returns
    -------
    dict with ``histogram`` (:func:`class_distribution`), ``entropy``
    (:func:`label_entropy`, nats; at most ``log num_classes``), ``fd`` (the
    :func:`frechet_distance` between real and sample features) and, with
    ``labels``, ``accuracy`` and ``per_class_accuracy`` (:func:`label_accuracy`).
    """
    feats = _host_float64(features, "features")
    if feats.ndim != 2 or len(feats) != len(np.asarray(predicted)):
        raise ValueError(f"features must have one row per prediction: got shape {feats.shape} for "
                         f"{len(np.asarray(predicted))} predictions")
    hist = class_distribution(predicted, num_classes)
    out = {"histogram": hist, "entropy": label_entropy(hist), "fd": frechet_distance(real_features, feats)}
    if labels is not None:
        out["accuracy"], out["per_class_accuracy"] = label_accuracy(predicted, labels, num_classes)
    return out


__all__ += ["class_distribution", "label_entropy", "label_accuracy", "classifier_metrics"]
