"""The losses of the three papers, written from logits or reconstructions.

GAN (Goodfellow et al. 2014, arXiv 1406.2661). The value function is

    V(G, D) = E_x[log D(x)] + E_z[log(1 - D(G(z)))],   D = sigmoid(logit).

With log sigmoid(l) = -softplus(-l) and log(1 - sigmoid(l)) = -softplus(l),
every term is a softplus of a logit, finite for any logit value:

    L_D             = -V = mean softplus(-l_real) + mean softplus(l_fake)
    L_G saturating  = E log(1 - D(G(z))) = -mean softplus(l_fake)   (the game as written)
    L_G non-sat.    = -E log D(G(z))     =  mean softplus(-l_fake)  (the paper's practical choice)

The conditional GAN (Mirza & Osindero 2014) uses the same losses with D(x|y), G(z|y).

BEGAN (Berthelot et al. 2017, arXiv 1703.10717). D is an autoencoder and

    L(v)   = mean |v - D(v)|
    L_D    = L(x) - k_t L(G(z_D))          L_G = L(G(z_G))
    k_t+1  = clip(k_t + lambda_k (gamma L(x) - L(G(z_G))), 0, 1)
    M      = L(x) + |gamma L(x) - L(G(z_G))|

R1 (Mescheder et al. 2018, arXiv 1801.04406, "Which training methods for GANs do actually
converge?") penalises D's gradient on the data, so that D stays flat where the real samples are
and the game settles there instead of circling it:

    L_D + (gamma / 2) E_x ||grad_x logit(x)||^2
"""
from __future__ import annotations

from .. import backend
from .. import functional as F

__all__ = ["discriminator_loss", "generator_loss_saturating", "generator_loss_nonsaturating",
           "generator_loss", "r1_penalty", "reconstruction_loss", "began_k_update", "began_convergence"]


def discriminator_loss(real_logits, fake_logits):
    """-V(G, D) from D's logits: mean softplus(-l_real) + mean softplus(l_fake)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss_saturating(fake_logits):
    """The minimax generator loss E log(1 - D(G(z))) = -mean softplus(l_fake) (G minimises it).

    Its gradient vanishes when D confidently rejects the fakes, which is why
    the paper trains G with the non-saturating loss in practice.
    """
    return -F.softplus(fake_logits).mean()


def generator_loss_nonsaturating(fake_logits):
    """-E log D(G(z)) = mean softplus(-l_fake): same fixed point, strong gradients early on."""
    return F.softplus(-fake_logits).mean()


def generator_loss(fake_logits, kind="nonsaturating"):
    """The generator loss by name: 'nonsaturating' (default) or 'minimax' (saturating)."""
    if kind == "nonsaturating":
        return generator_loss_nonsaturating(fake_logits)
    if kind in ("minimax", "saturating"):
        return generator_loss_saturating(fake_logits)
    raise ValueError(f"unknown generator loss {kind!r}; expected 'nonsaturating' or 'minimax'")


def r1_penalty(discriminator, real):
    """E_x ||grad_x logit(x)||^2 over the real batch, differentiable in D's weights.

    The gradient comes from ``discriminator.input_gradient(x)`` (MLP discriminators build it as a
    graph of their weights, so no second-order backward is needed); the trainer adds gamma / 2 of it
    to D's loss."""
    g = discriminator.input_gradient(real)
    return (g * g).reshape(g.shape[0], -1).sum(axis=1).mean()


def reconstruction_loss(v, reconstruction):
    """BEGAN's L(v) = mean |v - D(v)| (pixel-wise L1, eta = 1), per image averaged over the batch."""
    return F.l1_loss(reconstruction, v)


def began_k_update(k, loss_real, loss_fake, gamma, lambda_k):
    """k_{t+1} = clip(k_t + lambda_k (gamma L(x) - L(G(z_G))), 0, 1), on the device.

    ``k``, ``loss_real`` and ``loss_fake`` are backend arrays (0-d); the result
    is one too, so the balance term never leaves the device during training.
    """
    xp = backend.get_array_module(k, loss_real, loss_fake)
    return xp.clip(k + lambda_k * (gamma * loss_real - loss_fake), 0.0, 1.0)


def began_convergence(loss_real, loss_fake, gamma):
    """M_global = L(x) + |gamma L(x) - L(G(z_G))|: falls as the samples improve."""
    xp = backend.get_array_module(loss_real, loss_fake)
    return loss_real + xp.abs(gamma * loss_real - loss_fake)
