"""The GAN losses of tinygan.gan.losses: values and gradients against hand-computed cases, and finiteness.

With D = sigmoid(l):  L_D = mean softplus(-l_real) + mean softplus(l_fake)  (= -V(G, D)),
non-saturating L_G = mean softplus(-l_fake),  minimax L_G = -mean softplus(l_fake).
d softplus(l)/dl = sigmoid(l), so each gradient below is a sigmoid divided by the batch size.
"""
import math

import numpy as np
import pytest

from tinygan import backend, functional as F, gradcheck, tensor
from tinygan.gan import losses


def sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def log1pexp(v):
    """log(1 + e^v) computed by hand, as a reference independent of the library's softplus."""
    return v + math.log1p(math.exp(-v)) if v > 0 else math.log1p(math.exp(v))


REAL = [0.0, 2.0, -1.5]
FAKE = [-1.0, 3.0]


def leaves(values):
    return tensor(np.array(values, dtype=np.float64), requires_grad=True)


def test_discriminator_loss_value_and_gradient():
    real, fake = leaves(REAL), leaves(FAKE)
    loss = losses.discriminator_loss(real, fake)
    # -log D(x) = log(1 + e^{-l}) for the real logits, -log(1 - D(G(z))) = log(1 + e^{l}) for the fake
    expected = (sum(log1pexp(-v) for v in REAL) / len(REAL)
                + sum(log1pexp(v) for v in FAKE) / len(FAKE))
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    # hand-evaluated for the first pair: log 2 (l=0) appears in the real term
    assert log1pexp(0.0) == pytest.approx(math.log(2))
    loss.backward()
    np.testing.assert_allclose(real.grad, [-sigmoid(-v) / len(REAL) for v in REAL], rtol=1e-12)
    np.testing.assert_allclose(fake.grad, [sigmoid(v) / len(FAKE) for v in FAKE], rtol=1e-12)


def test_discriminator_loss_is_binary_cross_entropy_with_targets_one_and_zero():
    real, fake = leaves(REAL), leaves(FAKE)
    bce = (F.binary_cross_entropy_with_logits(real, backend.to_device(np.ones(3))) +
           F.binary_cross_entropy_with_logits(fake, backend.to_device(np.zeros(2))))
    assert losses.discriminator_loss(real, fake).item() == pytest.approx(bce.item(), rel=1e-12)


def test_discriminator_loss_at_d_equal_half_is_log_four():
    # D outputs 1/2 everywhere (logit 0) at the game's equilibrium: V = -log 4
    zeros = tensor(np.zeros(5))
    assert losses.discriminator_loss(zeros, zeros).item() == pytest.approx(math.log(4), rel=1e-12)


@pytest.mark.parametrize("kind", ["nonsaturating", "minimax"])
def test_generator_losses_value_and_gradient(kind):
    fake = leaves(FAKE)
    loss = losses.generator_loss(fake, kind)
    if kind == "nonsaturating":   # -E log D(G(z)) = E log(1 + e^{-l})
        expected = sum(log1pexp(-v) for v in FAKE) / 2
        grad = [-sigmoid(-v) / 2 for v in FAKE]
    else:                          # E log(1 - D(G(z))) = -E log(1 + e^{l})
        expected = -sum(log1pexp(v) for v in FAKE) / 2
        grad = [-sigmoid(v) / 2 for v in FAKE]
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    np.testing.assert_allclose(fake.grad, grad, rtol=1e-12)


def test_generator_loss_names_and_unknown_kind():
    fake = leaves(FAKE)
    assert losses.generator_loss(fake).item() == losses.generator_loss_nonsaturating(fake).item()
    assert losses.generator_loss(fake, "saturating").item() == losses.generator_loss_saturating(fake).item()
    with pytest.raises(ValueError, match="unknown generator loss 'wasserstein'"):
        losses.generator_loss(fake, "wasserstein")


def test_minimax_gradient_saturates_where_nonsaturating_does_not():
    # Early in training D rejects the fakes confidently (logit -10): the minimax loss then
    # gives G almost no gradient, the non-saturating one nearly the full 1/m (the paper's remark).
    fake = leaves([-10.0])
    losses.generator_loss(fake, "minimax").backward()
    assert abs(backend.to_host(fake.grad)[0]) < 1e-4
    fake = leaves([-10.0])
    losses.generator_loss(fake, "nonsaturating").backward()
    assert backend.to_host(fake.grad)[0] == pytest.approx(-1.0, abs=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_losses_finite_for_huge_logits(dtype):
    big = np.array([1e4, -1e4], dtype=dtype)
    for fn in (lambda r, f: losses.discriminator_loss(r, f),
               lambda r, f: losses.generator_loss(f, "nonsaturating"),
               lambda r, f: losses.generator_loss(f, "minimax")):
        real = tensor(big.copy(), requires_grad=True)
        fake = tensor(big.copy(), requires_grad=True)
        loss = fn(real, fake)
        loss.backward()
        assert np.isfinite(loss.item())
        for t in (real, fake):
            if t.grad is not None:
                assert np.isfinite(backend.to_host(t.grad)).all()
    # the exact values: softplus(1e4) = 1e4, softplus(-1e4) = 0 (to float precision)
    real = tensor(big.copy())
    assert losses.discriminator_loss(real, tensor(big.copy())).item() == pytest.approx((1e4 / 2) + (1e4 / 2))
    assert losses.generator_loss(tensor(big.copy()), "minimax").item() == pytest.approx(-1e4 / 2)
    # a perfect D (real +1e4, fake -1e4) has zero loss and zero gradient
    real = tensor(np.array([1e4], dtype=dtype), requires_grad=True)
    fake = tensor(np.array([-1e4], dtype=dtype), requires_grad=True)
    loss = losses.discriminator_loss(real, fake)
    loss.backward()
    assert loss.item() == 0.0 and backend.to_host(real.grad)[0] == 0.0 and backend.to_host(fake.grad)[0] == 0.0


def test_losses_against_finite_differences():
    rng = np.random.default_rng(0)
    real = tensor(rng.standard_normal(6) * 3, requires_grad=True)
    fake = tensor(rng.standard_normal(4) * 3, requires_grad=True)
    assert gradcheck(losses.discriminator_loss, (real, fake))
    assert gradcheck(losses.generator_loss_nonsaturating, (fake,))
    assert gradcheck(losses.generator_loss_saturating, (fake,))


def test_losses_keep_the_backend_and_return_device_scalars():
    backend.use("strict")
    try:
        real = tensor(backend.randn(4), requires_grad=True)
        fake = tensor(backend.randn(4), requires_grad=True)
        loss = losses.discriminator_loss(real, fake)
        assert loss.shape == () and not backend.is_host(loss.data)
        loss.backward()
        assert not backend.is_host(real.grad)
    finally:
        backend.use("numpy")
