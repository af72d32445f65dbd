"""The toy 2D mixtures match design.md section 4 and sample what they claim."""

import numpy as np
import pytest

from tinygan.data import MIXTURES, Mixture, sample_mixture


def test_ring_definition():
    ring = MIXTURES["ring"]
    assert isinstance(ring, Mixture)
    assert ring.sigma == 0.01
    assert ring.means.shape == (8, 2)
    # Radius 1, angles 2*pi*i/8 for i = 0..7 (no duplicate endpoint).
    np.testing.assert_allclose(np.hypot(*ring.means.T), 1.0, atol=1e-12)
    angles = np.mod(np.arctan2(ring.means[:, 1], ring.means[:, 0]), 2 * np.pi)
    np.testing.assert_allclose(angles, 2 * np.pi * np.arange(8) / 8, atol=1e-12)


def test_grid_definition():
    grid = MIXTURES["grid"]
    assert grid.sigma == 0.05
    assert grid.means.shape == (25, 2)
    expected = {(i, j) for i in (-4, -2, 0, 2, 4) for j in (-4, -2, 0, 2, 4)}
    assert {tuple(m) for m in grid.means.tolist()} == expected


def test_means_are_read_only():
    with pytest.raises(ValueError):
        MIXTURES["ring"].means[0, 0] = 5.0


@pytest.mark.parametrize("name", ["ring", "grid"])
def test_samples_lie_near_a_mean_and_cover_all_modes(name):
    mixture = MIXTURES[name]
    x, comp = sample_mixture(name, 5000, np.random.default_rng(0), return_components=True)
    assert x.shape == (5000, 2) and x.dtype == np.float32
    assert comp.shape == (5000,)

    dist = np.linalg.norm(x[:, None, :] - mixture.means[None], axis=-1)
    standardised = dist.min(axis=1) / mixture.sigma
    # A 2D standard normal exceeds radius 5 with probability exp(-12.5) ~ 4e-6.
    assert standardised.max() < 5.0
    # About 99% within 3 sigma (1 - exp(-4.5) = 98.9%), the design's "high quality".
    assert 0.98 < np.mean(standardised < 3.0) < 0.995
    # The nearest mean is the component that generated the point.
    np.testing.assert_array_equal(dist.argmin(axis=1), comp)
    # Equal weights: every mode gets close to 5000 / K samples.
    counts = np.bincount(comp, minlength=mixture.n_modes)
    expected = 5000 / mixture.n_modes
    assert counts.min() > 0.6 * expected and counts.max() < 1.4 * expected
    # The noise has the stated standard deviation.
    residual = x - mixture.means[comp]
    np.testing.assert_allclose(residual.std(axis=0), mixture.sigma, rtol=0.05)


def test_same_seed_same_samples():
    a = sample_mixture("grid", 100, np.random.default_rng(42))
    b = sample_mixture("grid", 100, np.random.default_rng(42))
    c = sample_mixture("grid", 100, np.random.default_rng(43))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_zero_samples():
    x = sample_mixture("ring", 0, np.random.default_rng(0))
    assert x.shape == (0, 2) and x.dtype == np.float32


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown mixture 'spiral'.*\['grid', 'ring'\]"):
        sample_mixture("spiral", 10, np.random.default_rng(0))


def test_bad_arguments():
    with pytest.raises(TypeError, match="numpy.random.Generator.*got RandomState"):
        sample_mixture("ring", 10, np.random.RandomState(0))
    with pytest.raises(ValueError, match="non-negative integer, got -1"):
        sample_mixture("ring", -1, np.random.default_rng(0))
