"""The GAN paper's Proposition 1 and Theorem 1, checked numerically on 1-D Gaussians.

For a fixed generator distribution p_g the optimal discriminator is

    D*(x) = p_data(x) / (p_data(x) + p_g(x))                           (Proposition 1)

and at D* the value function is

    V(G, D*) = E_pdata[log D*(x)] + E_pg[log(1 - D*(x))] = -log 4 + 2 JSD(p_data || p_g).   (Theorem 1)

p_data = N(0, 1) and p_g = N(mu, s^2). Then log D*/(1 - D*) = log p_data - log p_g is a
quadratic in x, so a logistic discriminator on the features [x, x^2] (one nn.Linear)
can represent D* exactly, and whatever error remains comes from the data and the
optimiser, not from the model. It is trained by tinygan (Adam on
losses.discriminator_loss) on samples of both distributions.

The samples are stratified: x_i = mu + s * Phi^{-1}((i + 1/2) / n), the midpoints of n
equal-probability cells. A mean over them is a quadrature of the expectation with
error O(log n / n) (about 2e-3 for n = 4096; the log from the Gaussian tails),
where i.i.d. samples would leave an error of order 1/sqrt(n) = 0.016 that changes
with the seed. The minimiser of the sampled loss is then within a few 1e-3 of D*'s
logit, and |dD/dlogit| <= 1/4, so |D - D*| is expected below about 1e-3. The test
allows 0.01: still ten times smaller than the distance between D* and the nearest
wrong answers (1/2 everywhere, or p_g / (p_data + p_g)), which the test checks too,
so it cannot pass by accident.
"""
import math

import numpy as np
import pytest

from tinygan import backend, nn, tensor
from tinygan.gan import losses
from tinygan.optim import Adam

N = 4096
GRID = np.linspace(-2.5, 3.5, 241)   # the bulk of both distributions' mass (checked below)
TOL_D = 0.01
LOG4 = math.log(4.0)


def gauss_pdf(x, mu, s):
    return np.exp(-0.5 * ((x - mu) / s) ** 2) / (s * math.sqrt(2 * math.pi))


def std_normal_quantiles(n):
    """Phi^{-1}((i + 1/2) / n) by Newton's method on math.erf (no SciPy)."""
    u = (np.arange(n) + 0.5) / n
    erf = np.vectorize(math.erf)
    x = np.zeros(n)
    for _ in range(60):
        cdf = 0.5 * (1 + erf(x / math.sqrt(2)))
        step = (cdf - u) / np.maximum(gauss_pdf(x, 0.0, 1.0), 1e-300)
        x -= np.clip(step, -2, 2)
        if np.abs(step).max() < 1e-13:
            break
    return x


def features(x):
    return tensor(np.stack([x, x * x], axis=1))


def train_discriminator(x_data, x_g, steps=800):
    """Logistic D(x) = sigmoid(w1 x + w2 x^2 + b), trained full-batch by Adam on L_D = -V."""
    backend.seed(0)
    D = nn.Linear(2, 1)
    for p in D.parameters():
        p.data = p.data.astype(np.float64)
    opt = Adam(D.parameters(), lr=0.05)
    f_data, f_g = features(x_data), features(x_g)
    for _ in range(steps):
        loss = losses.discriminator_loss(D(f_data), D(f_g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return D, losses.discriminator_loss(D(f_data), D(f_g)).item()


def d_of(D, x):
    logit = D(features(x)).numpy().reshape(-1)
    return 1 / (1 + np.exp(-logit))


def integrate(y, x):
    return float(np.trapz(y, x)) if hasattr(np, "trapz") else float(np.trapezoid(y, x))


def value(d, p_data, p_g, x):
    """V(G, D) = int p_data log D + int p_g log(1 - D) by the trapezoid rule."""
    return integrate(p_data * np.log(d), x) + integrate(p_g * np.log1p(-d), x)


def jsd_by_entropies(p_data, p_g, x, s):
    """JSD = H(m) - (H(p_data) + H(p_g)) / 2, m = (p_data + p_g) / 2, with the Gaussians'
    closed-form entropies 1/2 log(2 pi e sigma^2): a route independent of D*."""
    m = 0.5 * (p_data + p_g)
    h_m = -integrate(np.where(m > 0, m * np.log(np.where(m > 0, m, 1.0)), 0.0), x)
    h = lambda sigma: 0.5 * math.log(2 * math.pi * math.e * sigma ** 2)  # noqa: E731
    return h_m - 0.5 * (h(1.0) + h(s))


@pytest.mark.parametrize("mu, s", [(1.0, 1.5), (0.0, 1.0)], ids=["p_g=N(1,1.5^2)", "p_g=p_data"])
def test_trained_discriminator_approaches_d_star_and_value_is_jsd(mu, s):
    z = std_normal_quantiles(N)
    D, final_loss = train_discriminator(z, mu + s * z)

    # the grid covers the bulk of the mass of both distributions
    fine = np.linspace(-12, 14, 260001)
    pd_f, pg_f = gauss_pdf(fine, 0, 1), gauss_pdf(fine, mu, s)
    inside = (fine >= GRID[0]) & (fine <= GRID[-1])
    assert integrate(np.where(inside, pd_f, 0), fine) > 0.98
    assert integrate(np.where(inside, pg_f, 0), fine) > 0.90

    pd, pg = gauss_pdf(GRID, 0, 1), gauss_pdf(GRID, mu, s)
    d_star = pd / (pd + pg)
    d = d_of(D, GRID)
    assert np.max(np.abs(d - d_star)) < TOL_D
    if (mu, s) == (0.0, 1.0):
        np.testing.assert_allclose(d_star, 0.5)   # equilibrium: D* = 1/2 everywhere
    else:
        # the check can fail: wrong optimal discriminators are far beyond the tolerance
        assert np.max(np.abs(0.5 - d_star)) > 10 * TOL_D
        assert np.max(np.abs(pg / (pd + pg) - d_star)) > 10 * TOL_D

    # Theorem 1: V(G, D*) = -log 4 + 2 JSD, the JSD computed without D*
    d_star_f = pd_f / (pd_f + pg_f)
    v_star = value(d_star_f, pd_f, pg_f, fine)
    jsd = jsd_by_entropies(pd_f, pg_f, fine, s)
    assert v_star == pytest.approx(-LOG4 + 2 * jsd, abs=1e-7)
    assert 0 <= jsd <= math.log(2)
    if (mu, s) == (0.0, 1.0):
        assert v_star == pytest.approx(-LOG4, abs=1e-9) and jsd == pytest.approx(0, abs=1e-9)
    else:
        assert jsd > 0.01   # distinct distributions: V(G, D*) above its global minimum -log 4

    # V at the trained D: never above the maximum V(G, D*), and close to it (second order in D - D*)
    v_trained = value(d_of(D, fine), pd_f, pg_f, fine)
    assert v_trained <= v_star + 1e-9
    assert v_star - v_trained < 1e-4
    # and the training objective itself, -L_D on the stratified samples, estimates the same value
    assert -final_loss == pytest.approx(v_star, abs=5e-3)
