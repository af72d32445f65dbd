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
  a multi-scale comparison of image statistics; it and its pyramid code live
  in :mod:`tinygan.eval.swd` and are re-exported here.

Inputs are host NumPy arrays; copy device arrays over first (e.g. with
``tinygan.backend.to_host``). The exception is :func:`sliced_wasserstein`,
the per-epoch metric of the BEGAN example and the costly one: given device
arrays it computes on their device (CuPy, or the strict emulation) and copies
back only its few numbers, once. Results are Python floats, ints and NumPy
arrays, ready to log.

The last section holds the metrics that read a classifier's outputs on MNIST
samples (class histogram and label entropy, Fréchet distance in the
classifier's feature space, accuracy of a conditional GAN's labels); the
classifier itself is :mod:`tinygan.eval.mnist_judge`.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ._host import host_float64 as _host_float64
from .swd import sliced_wasserstein

__all__ = ["mode_metrics", "frechet_distance", "sliced_wasserstein"]


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
# Classifier-based MNIST metrics
# ==========================================================================
# The metrics that judge MNIST samples with a classifier trained on real
# digits: class histogram and label entropy (mode coverage), the Fréchet
# distance in the classifier's feature space (frechet_distance above), and for
# a conditional GAN the fraction of samples of label y classified as y.

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
    num_classes : int
        Number of classes (10 digits).

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
