"""Tests of the host-side metrics in tinygan.eval.metrics (and tinygan.eval.swd) on constructed data with known answers."""
import math

import numpy as np
import pytest

from tinygan.eval import swd
from tinygan.eval.metrics import frechet_distance, mode_metrics, sliced_wasserstein

GRID = np.array([(i, j) for i in (-4, -2, 0, 2, 4) for j in (-4, -2, 0, 2, 4)], dtype=float)
RING = np.array([(math.cos(2 * math.pi * i / 8), math.sin(2 * math.pi * i / 8)) for i in range(8)])


# --------------------------------------------------------------------------
# mode_metrics
# --------------------------------------------------------------------------

def test_mode_metrics_twenty_of_twenty_five_modes_ninety_percent_hq():
    rng = np.random.default_rng(0)
    sigma = 0.05
    covered = rng.permutation(25)[:20]
    # 90 high-quality samples on each of 20 modes, at most 2.9 sigma away ...
    offsets = rng.standard_normal((20 * 90, 2))
    offsets *= (rng.uniform(0, 2.9, 20 * 90) * sigma / np.linalg.norm(offsets, axis=1))[:, None]
    good = np.repeat(GRID[covered], 90, axis=0) + offsets
    # ... and 200 far from every mode (cell centres are sqrt(2) = 28 sigma away).
    bad = np.array([(1.0, 1.0), (-1.0, 3.0)])[rng.integers(0, 2, 200)]
    samples = rng.permutation(np.concatenate([good, bad]))

    m = mode_metrics(samples, GRID, sigma)
    assert m["modes_captured"] == 20
    assert m["high_quality_fraction"] == pytest.approx(0.9)
    expected_counts = np.zeros(25, np.int64)
    expected_counts[covered] = 90
    np.testing.assert_array_equal(m["counts"], expected_counts)
    # q is uniform over 20 of 25 modes: KL(q || u) = log(25 / 20).
    assert m["reverse_kl"] == pytest.approx(math.log(25 / 20))


def test_mode_metrics_collapse_and_empty_histogram():
    collapsed = np.tile(RING[3], (100, 1))
    m = mode_metrics(collapsed, RING, 0.01)
    assert m["modes_captured"] == 1 and m["high_quality_fraction"] == 1.0
    assert m["reverse_kl"] == pytest.approx(math.log(8))   # the maximum, log K

    nowhere = np.zeros((50, 2))                             # centre of the ring: 100 sigma away
    m = mode_metrics(nowhere, RING, 0.01)
    assert m["modes_captured"] == 0 and m["high_quality_fraction"] == 0.0
    assert math.isnan(m["reverse_kl"]) and m["counts"].sum() == 0


def test_mode_metrics_three_sigma_boundary_and_nan_samples():
    sigma = 0.05
    samples = np.array([[2.99 * sigma, 0.0], [3.01 * sigma, 0.0], [np.nan, 0.0], [0.0, np.inf]])
    m = mode_metrics(samples, GRID, sigma)
    assert m["high_quality_fraction"] == 0.25
    assert m["counts"][12] == 1 and m["counts"].sum() == 1   # GRID[12] is (0, 0)
    assert m["reverse_kl"] == pytest.approx(math.log(25))


def test_mode_metrics_errors():
    with pytest.raises(ValueError, match=r"samples have 3 coordinates but means have 2"):
        mode_metrics(np.zeros((4, 3)), GRID, 0.05)
    with pytest.raises(ValueError, match="sigma must be a positive"):
        mode_metrics(np.zeros((4, 2)), GRID, 0.0)
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        mode_metrics(np.zeros(4), GRID, 0.05)


# --------------------------------------------------------------------------
# frechet_distance
# --------------------------------------------------------------------------

def _exact_moments(n, mean, cov, rng):
    """n points whose sample mean and (N-1)-normalised covariance are exactly mean and cov."""
    z = rng.standard_normal((n, len(mean)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(z.T @ z / (n - 1))).T   # whiten exactly
    return mean + z @ np.linalg.cholesky(cov).T


def test_frechet_identical_sets_is_zero():
    x = np.random.default_rng(0).standard_normal((200, 6))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)


def test_frechet_diagonal_gaussians_closed_form():
    rng = np.random.default_rng(1)
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.0])
    a = _exact_moments(100, mu_a, np.diag(var_a), rng)
    b = _exact_moments(150, mu_b, np.diag(var_b), rng)
    # Commuting covariances: Tr(Sa + Sb - 2 sqrt(Sa Sb)) = sum (sqrt(va) - sqrt(vb))^2.
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert expected == pytest.approx(5.0 + 4.0 + 1.0)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    # Rotating both sets alike leaves the distance unchanged (non-diagonal covariances).
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    assert frechet_distance(a @ q, b @ q) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-9)


def test_frechet_general_covariances_against_eigenvalues_of_product():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((80, 4)) @ rng.standard_normal((4, 4))
    b = rng.standard_normal((60, 4)) @ rng.standard_normal((4, 4)) + 0.5
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr sqrt(Sa Sb) from the (real, non-negative) eigenvalues of the non-symmetric product.
    tr_sqrt = np.sqrt(np.linalg.eigvals(sa @ sb).real.clip(0)).sum()
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(sa) + np.trace(sb) - 2 * tr_sqrt
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


def test_frechet_singular_covariance_and_errors():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((5, 10)), rng.standard_normal((5, 10))   # fewer samples than D
    d = frechet_distance(a, b)
    assert np.isfinite(d) and d > 0
    with pytest.raises(ValueError, match="feat_a has 10 features per row but feat_b has 3"):
        frechet_distance(a, b[:, :3])
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(a[:1], b)
    with pytest.raises(ValueError, match="feat_b contains NaN"):
        frechet_distance(a, np.full((5, 10), np.nan))


# --------------------------------------------------------------------------
# sliced_wasserstein
# --------------------------------------------------------------------------

def _smooth_images(n, size, channels, seed):
    """Random images with spatial structure (blurred noise stretched to [0, 1])."""
    z = np.random.default_rng(seed).random((n, channels, size, size)).astype(np.float32)
    for _ in range(3):
        z = swd._blur(z)
    return (z - z.min()) / (z.max() - z.min())


FAST = dict(nhoods_per_image=32, n_projections=64, n_repeats=2)


def test_laplacian_pyramid_reconstructs_images():
    x = np.random.default_rng(0).random((2, 3, 35, 32)).astype(np.float32)   # odd height too
    levels = swd._laplacian_pyramid(x, 3)
    assert [lv.shape[2:] for lv in levels] == [(35, 32), (18, 16), (9, 8)]
    recon = levels[-1]
    for fine in reversed(levels[:-1]):
        recon = fine + swd._pyr_up(recon, fine.shape[2:])
    np.testing.assert_allclose(recon, x, atol=1e-5)


def test_swd_levels_and_determinism():
    real = _smooth_images(4, 64, 3, 0)
    fake = _smooth_images(4, 64, 3, 1)
    out = sliced_wasserstein(real, fake, nhoods_per_image=8, n_projections=16, n_repeats=1)
    assert out["levels"] == [64, 32, 16] and len(out["swd"]) == 3
    assert out["mean"] == pytest.approx(np.mean(out["swd"])) and out["n_images"] == 4
    again = sliced_wasserstein(real, fake, nhoods_per_image=8, n_projections=16, n_repeats=1)
    assert again == out
    assert sliced_wasserstein(real[:, :1, :28, :28], fake[:, :1, :28, :28], **FAST)["levels"] == [28]


def test_swd_grows_with_noise_and_blur():
    # Identical sets do not give exactly 0: the two sets' random neighbourhoods
    # differ. That noise floor shrinks with the number of descriptors, hence
    # the paper's 128 per image here.
    opts = dict(nhoods_per_image=128, n_projections=64, n_repeats=2)
    real = _smooth_images(16, 32, 1, 0)
    noise = np.random.default_rng(9).standard_normal(real.shape)
    same = sliced_wasserstein(real, real, **opts)
    noisy = [sliced_wasserstein(real, real + s * noise, **opts) for s in (0.02, 0.05, 0.2)]
    means = [same["mean"]] + [r["mean"] for r in noisy]
    assert means == sorted(means) and len(set(means)) == 4
    # White noise lives mostly in the finest level (32x32).
    assert noisy[2]["swd"][0] > 3 * same["swd"][0]
    # Blurring removes fine detail: the finest level tells it too.
    blurred = sliced_wasserstein(real, swd._blur(swd._blur(real)), **opts)
    assert blurred["swd"][0] > 2 * same["swd"][0]


def test_swd_seeds_give_close_values_and_affine_invariance():
    real = _smooth_images(16, 32, 3, 0)
    fake = _smooth_images(16, 32, 3, 1)
    values = [sliced_wasserstein(real, fake, rng=seed, **FAST)["mean"] for seed in (0, 1, 2)]
    assert max(values) - min(values) < 0.25 * np.mean(values)
    # Per-set normalisation: a brightness/contrast change of the whole fake set is invisible.
    base = sliced_wasserstein(real, fake, rng=5, **FAST)
    shifted = sliced_wasserstein(real, 0.5 * fake + 0.2, rng=5, **FAST)
    np.testing.assert_allclose(shifted["swd"], base["swd"], rtol=1e-4)


def test_swd_unequal_counts_and_errors():
    real = _smooth_images(6, 16, 1, 0)
    with pytest.warns(RuntimeWarning, match="using the first 4 of each"):
        out = sliced_wasserstein(real, real[:4], **FAST)
    assert out["n_images"] == 4 and out["levels"] == [16]
    with pytest.raises(ValueError, match=r"C in \{1, 3\}"):
        sliced_wasserstein(np.zeros((2, 2, 16, 16)), np.zeros((2, 2, 16, 16)))
    with pytest.raises(ValueError, match="at least 16 pixels.*got 12x12"):
        sliced_wasserstein(np.zeros((2, 1, 12, 12)), np.zeros((2, 1, 12, 12)))
    with pytest.raises(ValueError, match="same"):
        sliced_wasserstein(np.zeros((2, 1, 16, 16)), np.zeros((2, 3, 16, 16)))
    with pytest.raises(ValueError, match="fake contains NaN"):
        sliced_wasserstein(np.zeros((2, 1, 16, 16)), np.full((2, 1, 16, 16), np.nan))


# --------------------------------------------------------------------------
# sliced_wasserstein on a device backend (the strict emulation stands in for CuPy)
# --------------------------------------------------------------------------

def test_swd_on_a_device_gives_the_host_values_with_one_transfer():
    from tinygan import _strict, backend
    real = _smooth_images(6, 32, 3, 0)
    fake = _smooth_images(6, 32, 3, 1)
    host = sliced_wasserstein(real, fake, rng=4, **FAST)
    backend.use("strict")
    d_real, d_fake = backend.to_device(real), backend.to_device(fake)
    _strict.reset_transfers()
    dev = sliced_wasserstein(d_real, d_fake, rng=4, **FAST)
    assert _strict.transfers == 1
    assert dev["levels"] == host["levels"] and dev["n_images"] == host["n_images"]
    np.testing.assert_allclose(dev["swd"], host["swd"], rtol=1e-6)
    assert isinstance(dev["mean"], float) and all(isinstance(v, float) for v in dev["swd"])
    # a host set with a device set: the host one follows to the device
    _strict.reset_transfers()
    mixed = sliced_wasserstein(real, d_fake, rng=4, **FAST)
    assert _strict.transfers == 1
    np.testing.assert_allclose(mixed["swd"], host["swd"], rtol=1e-6)


def test_swd_on_a_device_still_refuses_nan_images():
    from tinygan import backend
    backend.use("strict")
    ok = backend.to_device(_smooth_images(2, 16, 1, 0))
    bad = backend.to_device(np.full((2, 1, 16, 16), np.nan, np.float32))
    with pytest.raises(ValueError, match="fake contains NaN"):
        sliced_wasserstein(ok, bad, **FAST)
    with pytest.raises(ValueError, match=r"C in \{1, 3\}"):
        sliced_wasserstein(backend.to_device(np.zeros((2, 2, 16, 16))), backend.to_device(np.zeros((2, 2, 16, 16))))
