"""BEGAN's training step (Berthelot, Schumm, Metz 2017, arXiv 1703.10717).

One call of :meth:`BEGANTrainer.step` is one iteration of the paper:

    x ~ data;  z_D, z_G ~ U[-1, 1]^h  (separate noise for the two updates)
    L_D = L(x) - k_t L(G(z_D))            -> Adam step on D
    L_G = L(G(z_G))                       -> Adam step on G
    k_{t+1} = clip(k_t + lambda_k (gamma L(x) - L(G(z_G))), 0, 1)
    M_global = L(x) + |gamma L(x) - L(G(z_G))|

with L(v) = mean |v - D(v)|. Every quantity, k_t included, stays on the
device; the step returns 0-d device arrays.

Learning rate: halved when M stalls, never below ``lr_min``
(:class:`tinygan.optim.ReduceLROnStall`): every ``lr_window`` steps, on the
host, if the window's mean M is not at least ``lr_tolerance`` (relative)
below the best window mean seen so far, the learning rate of both networks is
halved. The decision is taken at multiples of ``lr_window`` only, so it does
not depend on the logging interval and a resumed run takes the same decisions.
"""
from __future__ import annotations

import numpy as np

from .. import backend, distributed
from .. import functional as F
from . import losses
from ..nn import evaluating, frozen
from ..optim import EMA, Adam, ReduceLROnStall, averaged
from ..tensor import no_grad, tensor


class BEGANTrainer:
    """Owns G (a BEGANDecoder), D (a BEGANDiscriminator), their Adams, k_t and the lr schedule.

    ``ema``: decay of an exponential moving average of G's parameters (:class:`tinygan.optim.EMA`);
    samples, grids and metrics then come from the averaged G, unless ``raw_samples`` is set.
    """

    name = "BEGAN"
    headline = ("M", "k", "loss_real", "loss_fake")
    curve_panels = [
        ("reconstruction L1", ["gamma_loss_real", "loss_fake"]),
        ("convergence M", ["M"]),
        ("k_t", ["k"]),
        ("learning rate", ["lr"]),
    ]

    def __init__(self, generator, discriminator, gamma=0.5, lambda_k=0.001, lr=1e-4, betas=(0.5, 0.999),
                 lr_window=3000, lr_tolerance=0.02, lr_min=2e-5, num_fixed=64, ema=None):
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        self.G, self.D = generator, discriminator
        self.hidden = generator.hidden
        self.gamma, self.lambda_k = gamma, lambda_k
        self.opt_g = Adam(self.G.parameters(), lr=lr, betas=betas)
        self.opt_d = Adam(self.D.parameters(), lr=lr, betas=betas)
        self.schedule = ReduceLROnStall([self.opt_g, self.opt_d], lr_window, lr_tolerance, min_lr=lr_min)
        self.k = backend.xp().zeros((), dtype=backend.DEFAULT_DTYPE)  # k_0 = 0
        self.fixed_noise = self.noise(num_fixed)
        self.ema = None if ema is None else EMA(self.opt_g, ema)
        self.raw_samples = False  # True: sample from G as trained even where there is an average

    def noise(self, n):
        """z ~ U[-1, 1]^h on the device, as in the paper."""
        return backend.uniform(-1.0, 1.0, (n, self.hidden))

    def step(self, batch):
        """One BEGAN iteration on a batch of real images in [-1, 1]; returns device metrics."""
        (x,) = batch
        x = tensor(x)
        b = x.shape[0]  # this rank's share of the global batch (all of it in one process)
        world = distributed.world_size()
        z_d, z_g = distributed.shard(self.noise(b * world)), distributed.shard(self.noise(b * world))

        # discriminator: real and fake go through D in one batch (one set of larger GEMMs)
        with no_grad():
            fake_d = self.G(tensor(z_d))
        both = F.concat([x, fake_d], axis=0)
        recon = self.D(both)
        loss_real = losses.reconstruction_loss(x, recon[:b])
        loss_fake_d = losses.reconstruction_loss(fake_d, recon[b:])
        loss_d = loss_real - loss_fake_d * self.k
        self.opt_d.zero_grad()
        loss_d.backward()
        # many processes: the gradients' mean over the ranks, and L(x) and L_D's global means with them
        l_real, l_d = distributed.all_reduce_gradients(self.opt_d, loss_real.data, loss_d.data)
        self.opt_d.step()

        # generator: D's weights are constants here, so their gradients are not even computed
        with frozen(self.D):
            fake_g = self.G(tensor(z_g))
            loss_g = losses.reconstruction_loss(fake_g, self.D(fake_g))
            self.opt_g.zero_grad()
            loss_g.backward()
            (l_fake,) = distributed.all_reduce_gradients(self.opt_g, loss_g.data)  # L(G(z_G)), global
            self.opt_g.step()
        if self.ema is not None:
            self.ema.update()

        # k_t and M_global from the global L(x) and L(G(z_G)): the same on every rank
        k_used = self.k
        self.k = losses.began_k_update(self.k, l_real, l_fake, self.gamma, self.lambda_k)
        return {
            "loss_real": l_real, "loss_fake": l_fake, "gamma_loss_real": self.gamma * l_real,
            "loss_d": l_d, "loss_g": l_fake, "k": k_used,
            "M": losses.began_convergence(l_real, l_fake, self.gamma), "lr": self.schedule.lr,
        }

    def needs_host(self, step):
        return step % self.schedule.window == 0

    def on_host_metrics(self, rows):
        for row in rows:
            self.schedule.observe(row["step"], row["M"])  # halves both optimisers' rate on a stall

    # ---- sampling ------------------------------------------------------------
    def sample(self, z, to_host=True):
        """G(z) as float32 images in [0, 1]: on the host, or left on the device with ``to_host=False``."""
        with averaged(None if self.raw_samples else self.ema), evaluating(self.G), no_grad():
            out = self.G(tensor(z)).data
        if not to_host:
            return backend.get_array_module(out).clip((out + 1) / 2, 0, 1)
        return np.clip((backend.to_host(out) + 1) / 2, 0, 1).astype(np.float32)

    def sample_fixed(self):
        return self.sample(self.fixed_noise)

    def reconstruct(self, x):
        """D's reconstruction of real images (device, [-1, 1]) as host [0, 1] images."""
        with no_grad():
            out = self.D(tensor(x)).data
        return np.clip((backend.to_host(out) + 1) / 2, 0, 1).astype(np.float32)

    def generate(self, n, chunk=256, to_host=True):
        """``n`` samples from fresh noise: {"samples": (n, 3, H, W) float32 in [0, 1]}, on the host
        (or on the device with ``to_host=False``, for metrics computed there)."""
        parts = [self.sample(self.noise(min(chunk, n - i)), to_host) for i in range(0, n, chunk)]
        xp = np if to_host else backend.get_array_module(parts[0])
        return {"samples": xp.concatenate(parts)}

    # ---- state ---------------------------------------------------------------
    def state_dict(self):
        state = {"G": dict(self.G.state_dict()), "D": dict(self.D.state_dict()),
                 "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                 "k": self.k, "schedule": self.schedule.state_dict(), "fixed_noise": self.fixed_noise}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, s):
        self.G.load_state_dict(s["G"])
        self.D.load_state_dict(s["D"])
        self.opt_g.load_state_dict(s["opt_g"])
        self.opt_d.load_state_dict(s["opt_d"])
        self.k = backend.to_device(s["k"], backend.DEFAULT_DTYPE)
        self.schedule.load_state_dict(s["schedule"])  # and the optimisers' rate with it
        self.fixed_noise = backend.to_device(s["fixed_noise"], backend.DEFAULT_DTYPE)
        if self.ema is not None:
            self.ema.resume(s.get("ema"))
