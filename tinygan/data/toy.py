"""The 2D Gaussian mixtures used to measure mode collapse without a pretrained net.

Both are the standard benchmarks of the VEEGAN and PacGAN papers:

* ``"ring"``: 8 Gaussians on the unit circle at angles ``2*pi*i/8``,
  ``i = 0..7``, standard deviation 0.01;
* ``"grid"``: 25 Gaussians at ``(i, j)`` for ``i, j`` in ``{-4, -2, 0, 2, 4}``,
  standard deviation 0.05.

Components have equal weight. A generated sample counts as high quality when
it lies within 3 sigma of its nearest mean, and a mode is captured when at
least one high-quality sample falls nearest to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple, Union

import numpy as np

__all__ = ["Mixture", "MIXTURES", "sample_mixture"]


@dataclass(frozen=True, eq=False)
class Mixture:
    """An equal-weight mixture of isotropic 2D Gaussians.

    Attributes
    ----------
    means : numpy.ndarray
        ``(K, 2)`` float64 array of component centres (read-only).
    sigma : float
        Standard deviation shared by every component and both axes.
    """

    means: np.ndarray
    sigma: float

    @property
    def n_modes(self) -> int:
        """Number of components K."""
        return len(self.means)


def _readonly(a: np.ndarray) -> np.ndarray:
    # The table below is shared by the whole process; an accidental in-place
    # edit would silently change every later evaluation.
    a.setflags(write=False)
    return a


def _ring() -> np.ndarray:
    angles = 2 * np.pi * np.arange(8) / 8  # no duplicate endpoint at 2*pi
    return _readonly(np.stack([np.cos(angles), np.sin(angles)], axis=1))


def _grid() -> np.ndarray:
    ticks = np.array([-4.0, -2.0, 0.0, 2.0, 4.0])
    i, j = np.meshgrid(ticks, ticks, indexing="ij")
    return _readonly(np.stack([i.ravel(), j.ravel()], axis=1))


MIXTURES = {
    "ring": Mixture(means=_ring(), sigma=0.01),
    "grid": Mixture(means=_grid(), sigma=0.05),
}


def sample_mixture(
    name: str,
    n: int,
    rng: np.random.Generator,
    *,
    return_components: bool = False,
) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """Draw ``n`` points from the named toy mixture.

    Each point picks a component uniformly at random, then adds Gaussian
    noise: ``x = means[c] + sigma * N(0, I)``.

    Parameters
    ----------
    name : str
        ``"ring"`` or ``"grid"`` (the keys of :data:`MIXTURES`).
    n : int
        Number of samples (>= 0).
    rng : numpy.random.Generator
        E.g. ``np.random.default_rng(0)``; the same seed gives the same
        samples.
    return_components : bool
        Also return the index of each point's component.

    Returns
    -------
    points : numpy.ndarray
        ``float32`` array ``(n, 2)``.
    components : numpy.ndarray
        Only with ``return_components``: ``int64`` array ``(n,)`` of
        component indices.

    Raises
    ------
    ValueError
        Unknown ``name`` (the message lists the valid ones) or a negative
        ``n``.
    TypeError
        ``rng`` is not a ``numpy.random.Generator``.
    """
    if name not in MIXTURES:
        raise ValueError(f"unknown mixture {name!r}; expected one of {sorted(MIXTURES)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    mixture = MIXTURES[name]
    components = rng.integers(0, mixture.n_modes, size=n)
    points = mixture.means[components] + mixture.sigma * rng.standard_normal((n, 2))
    points = points.astype(np.float32)
    return (points, components) if return_components else points
