"""Near-duplicates among generated samples: the collapse watch's diversity score for images.

A generator that collapses draws the same few images again and again, and then many of its samples
have another sample very close by, far closer than real images ever are to each other. The score
puts a number on that with the real data as the ruler:

    tau      = the 1% quantile of real images' nearest-neighbour distances (99% of real images
               have no other real image closer than tau)
    score    = the share of generated samples whose nearest other generated sample is closer than tau

Samples as diverse as the data score about 0.01; a generator that draws one image scores 1.
The score saturates for a generator that is far less diverse than the data but not collapsed (BEGAN's
smooth early faces score 1 at every scale down to 8x8), so the collapse watch follows a continuous
companion, the spread: the median nearest-neighbour distance among generated samples over the
median among real ones (about 1 for samples as diverse as the data, 0 for one image; BEGAN 64x64
after one epoch: 0.12).
Distances are Euclidean over all pixels, from one GEMM per set (|a|^2 + |b|^2 - 2 a.b), computed
once per set by :func:`nearest_neighbour_distances`; the scores take those distances. Device arrays
are used where they are (CuPy, or the strict emulation) and only the scores come back.
"""
from __future__ import annotations

from .. import backend

__all__ = ["nearest_neighbour_distances", "near_duplicate_threshold", "near_duplicates", "spread"]


def nearest_neighbour_distances(x):
    """Distance from each of the ``n`` samples in ``x`` (any shape (n, ...)) to its nearest other sample."""
    xp = backend.get_array_module(x)
    if x.shape[0] < 2:
        raise ValueError(f"nearest neighbours need at least 2 samples, got {x.shape[0]}")
    flat = x.reshape(x.shape[0], -1).astype(xp.float32)
    sq = (flat * flat).sum(axis=1)
    d2 = sq[:, None] + sq[None, :] - 2 * (flat @ flat.T)
    xp.fill_diagonal(d2, xp.inf)
    return xp.sqrt(xp.maximum(d2.min(axis=1), 0))


def near_duplicate_threshold(real_distances, quantile=0.01):
    """tau: the ``quantile`` of the real samples' nearest-neighbour distances (a 0-d array on their device)."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    d = backend.get_array_module(real_distances).sort(real_distances)
    return d[min(len(d) - 1, int(quantile * len(d)))]


def near_duplicates(fake_distances, threshold):
    """Share (a host float) of fake samples whose nearest other fake is closer than ``threshold``."""
    return float(backend.to_host((fake_distances < threshold).mean()))


def spread(fake_distances, real_distances):
    """Median nearest-neighbour distance among the fakes over the median among the reals (a host float)."""
    xp = backend.get_array_module(fake_distances, real_distances)
    return float(backend.to_host(xp.median(fake_distances) / xp.median(real_distances)))
