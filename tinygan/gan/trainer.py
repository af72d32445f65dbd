"""The minimax GAN's training step (Goodfellow et al. 2014, Algorithm 1) and the conditional GAN's.

The value function of the two-player game is

    V(G, D) = E_{x ~ p_data}[log D(x)] + E_{z ~ p_z}[log(1 - D(G(z)))]

and one call of :meth:`GANTrainer.step` is one iteration of Algorithm 1:

    for k steps:
        sample m noise vectors z ~ N(0, I) and take the next m real examples x
        ascend V in D:   L_D = mean softplus(-D_logit(x)) + mean softplus(D_logit(G(z)))   (= -V)
    sample m fresh noise vectors z
    descend in G:    L_G = mean softplus(-D_logit(G(z)))     non-saturating (-E log D(G(z)))
                  or L_G = -mean softplus(D_logit(G(z)))     minimax        (E log(1 - D(G(z))))

with Adam for both networks. The conditional GAN (Mirza & Osindero 2014) is the
same game with D(x | y) and G(z | y): real examples come with their labels, and
the fakes of each step get labels drawn uniformly from the classes.

Where the k real minibatches come from: the shared loop (``fit``) hands the
trainer one batch per step, so a step with ``k`` discriminator updates takes a
batch of ``k * m`` real examples and splits it into k minibatches of m. Each
D update then sees fresh real data, as in the paper, and an epoch is one pass
over the data however large k is. The examples set the loop's batch size to
``k * batch_size`` for that reason.

Everything stays on the device; ``step`` returns 0-d device arrays, copied to
the host by the loop at logging points only:

    loss_d, loss_g      the two losses above (averaged over the k D updates for loss_d)
    d_real, d_fake      mean D(x) and mean D(G(z)) seen by the D updates; both go to 1/2 at the
                        game's equilibrium, where D*(x) = p_data / (p_data + p_g) = 1/2 everywhere
"""
from __future__ import annotations

import contextlib

import numpy as np

from .. import backend, distributed
from .. import functional as F
from ..nn import (BatchNorm1d, BatchNorm2d, MinibatchDiscrimination, check_state_matches, evaluating, frozen,
                  update_bn)
from . import losses
from ..optim import EMA, Adam
from ..tensor import Tensor, no_grad, tensor

LOSSES = ("nonsaturating", "minimax")


#: (batches, batch size) of fresh noise from which the averaged G's batch-norm statistics are
#: recomputed before it draws samples (nn.utils.update_bn). Measured in docs/gan/RESULTS.md
#: ("Batch-norm statistics of the average"): with G's running statistics instead, the cGAN's
#: Frechet distance after 6 epochs was 83.7, with the average's own 37.9 (after 20 epochs,
#: where the average is close to G, the two differ by about 1, either way).
BN_CALIBRATION = (50, 64)
BN_CALIBRATION_SEED = 20140610  # fixed: the average's statistics do not vary with the run's seed or step


class GANTrainer:
    """Owns G, D, their Adam optimisers and the fixed noise of the sample grids.

    Parameters
    ----------
    generator, discriminator
        Modules with ``G(z[, labels])`` and ``D(x[, labels]) -> logits (N,)``
        (see :mod:`tinygan.gan.models`); ``generator.latent_dim`` is the size of z.
    loss : "nonsaturating" | "minimax"
        The generator's loss (module docstring). The discriminator's is always -V.
    k : int
        Discriminator updates per generator update (Algorithm 1; the paper uses 1).
        Each step's batch must hold k minibatches.
    lr, betas : float, (float, float)
        Adam's settings for both networks (DCGAN's 2e-4, (0.5, 0.999) by default).
    lr_d : float or None
        Overrides the discriminator's learning rate.
    lr_decay_steps : int or None
        If set, both learning rates fall linearly to 0 over this many steps:
        ``lr_t = lr * max(0, 1 - t / lr_decay_steps)`` before step t (counted from 0).
        The step counter is part of the state, so a resumed run follows the same schedule.
    conditional, num_classes : bool, int
        A conditional GAN of ``num_classes`` classes; batches are then ``(x, labels)``.
    image_range : (low, high) or None
        Range of G's outputs when they are images: samples are mapped from it
        to [0, 1] (the range of saved samples and grids). None: samples are
        returned as G makes them (the 2-D toy).
    num_fixed : int
        Fixed noise vectors for the per-epoch grid. For a conditional GAN the
        grid has one row per class and ``num_fixed // num_classes`` columns
        (at least one), the same z in every row, so a column shows one "style"
        across the classes.
    pack : int
        PacGAN's packing (Lin et al. 2018, arXiv 1712.04086): D judges ``pack`` samples at once,
        concatenated along the feature (channel) axis, all real or all fake, so a generator that
        draws the same few samples is easy to tell from the data. D must take ``pack`` times the
        data's channels (``ToyDiscriminator(pack=...)``); each minibatch must divide by ``pack``.
        1: the plain GAN.
    ema : float or None
        Decay of an exponential moving average of G's parameters (:class:`tinygan.optim.EMA`,
        generator averaging); samples, grids and metrics then come from the averaged G, unless
        ``raw_samples`` is set. None: no average, samples from G as trained.
    r1 : float
        gamma of R1's penalty (Mescheder et al. 2018): D's loss gets (gamma / 2) E ||grad_x logit(x)||^2
        over the real minibatch (as D sees it: packed), which keeps D flat on the data; D must have
        ``input_gradient`` (the MLP discriminators). 0: none.
    r1_every : int
        Lazy R1 (Karras et al. 2020, StyleGAN2): the penalty joins every ``r1_every``-th D update only,
        weighted by ``r1_every`` to keep its mean strength, so that it costs 1/r1_every of its price.
    reuse_fakes : bool
        False (Algorithm 1): G's update draws fresh noise. True: it reuses the fakes of the
        step's last D update, whose G forward then keeps its graph (as PyTorch's DCGAN example
        does): one forward of G fewer per step, a tenth of the DCGAN's arithmetic.
    """

    name = "GAN"
    headline = ("loss_d", "loss_g", "d_real", "d_fake")
    curve_panels = [
        ("losses", ["loss_d", "loss_g"]),
        ("mean D output", ["d_real", "d_fake"]),
    ]

    def __init__(self, generator, discriminator, loss="nonsaturating", k=1, lr=2e-4, betas=(0.5, 0.999),
                 lr_d=None, conditional=False, num_classes=10, image_range=(-1.0, 1.0), num_fixed=64,
                 lr_decay_steps=None, ema=None, pack=1, reuse_fakes=False, r1=0.0, r1_every=1):
        if loss not in LOSSES:
            raise ValueError(f"unknown generator loss {loss!r}; expected one of {', '.join(LOSSES)}")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k (discriminator steps per generator step) must be an int >= 1, got {k!r}")
        if not hasattr(generator, "latent_dim"):
            raise TypeError(f"the generator ({type(generator).__name__}) must have a latent_dim attribute: "
                            "the size of the noise z it takes")
        if conditional:
            for what, net in (("generator", generator), ("discriminator", discriminator)):
                if getattr(net, "num_classes", None) != num_classes:
                    raise ValueError(f"a conditional GAN with num_classes={num_classes} needs a conditional "
                                     f"{what} with the same num_classes, got {type(net).__name__} with "
                                     f"num_classes={getattr(net, 'num_classes', None)}")
        if lr_decay_steps is not None and (not isinstance(lr_decay_steps, int) or lr_decay_steps < 1):
            raise ValueError(f"lr_decay_steps must be a positive int or None, got {lr_decay_steps!r}")
        if not isinstance(pack, int) or isinstance(pack, bool) or pack < 1:
            raise ValueError(f"pack (samples D judges at once) must be an int >= 1, got {pack!r}")
        if pack > 1 and conditional:
            raise ValueError("packing (pack > 1) is PacGAN's, for an unconditional GAN; a conditional D "
                             "judges each sample against its own label")
        if image_range is not None and not image_range[0] < image_range[1]:
            raise ValueError(f"image_range must be (low, high) with low < high, or None; got {image_range!r}")
        if isinstance(r1, bool) or not (isinstance(r1, (int, float)) and r1 >= 0):
            raise ValueError(f"r1 (gamma of R1's gradient penalty) must be a number >= 0, got {r1!r}")
        if r1 and not hasattr(discriminator, "input_gradient"):
            raise ValueError(f"R1's penalty needs the discriminator's input gradient; {type(discriminator).__name__} "
                             "has no input_gradient (the MLP and DCGAN discriminators have)")
        if not isinstance(r1_every, int) or isinstance(r1_every, bool) or r1_every < 1:
            raise ValueError(f"r1_every (D updates between R1's penalties) must be an int >= 1, got {r1_every!r}")
        self.G, self.D = generator, discriminator
        self.r1, self.r1_every = float(r1), r1_every
        self.latent_dim = generator.latent_dim
        self.loss, self.k, self.pack, self.reuse_fakes = loss, k, pack, bool(reuse_fakes)
        self.conditional, self.num_classes = conditional, num_classes
        self.image_range = image_range
        self.opt_g = Adam(self.G.parameters(), lr=lr, betas=betas)
        self.opt_d = Adam(self.D.parameters(), lr=lr if lr_d is None else lr_d, betas=betas)
        self.base_lr = (lr, lr if lr_d is None else lr_d)
        self.lr_decay_steps = lr_decay_steps
        self.steps = 0  # generator updates so far: the clock of the learning-rate schedule
        self.ema = None if ema is None else EMA(self.opt_g, ema)
        self.raw_samples = False  # True: sample from G as trained even where there is an average
        self._g_norms = [mod for mod in self.G.modules() if isinstance(mod, (BatchNorm1d, BatchNorm2d))]
        self._averaged_norms = None  # (the average's update count, its batch-norm statistics)
        # layers whose output for a sample depends on the rest of its batch
        self._d_mixes_batch = any(isinstance(mod, (BatchNorm1d, BatchNorm2d, MinibatchDiscrimination))
                                  for mod in self.D.modules())
        if conditional:
            self.fixed_nrow = max(1, num_fixed // num_classes)
            z = self.noise(self.fixed_nrow)
            xp = backend.get_array_module(z)
            self.fixed_noise = xp.concatenate([z] * num_classes, axis=0)  # the same z in every row
            self.fixed_labels = backend.to_device(np.repeat(np.arange(num_classes), self.fixed_nrow))
        else:
            self.fixed_nrow = None  # the grid writer's near-square default
            self.fixed_noise = self.noise(num_fixed)
            self.fixed_labels = None

    @property
    def batch_parts(self):
        """Minibatches in one step's batch (k): with many processes, each rank takes its share of each."""
        return self.k

    # ---- randomness: all from tinygan's generator, so a seed (and a checkpoint) fixes it ----
    def _shared_noise(self, m):
        """Noise and fake labels for ``m`` local examples: the global batch's, drawn the same on every
        rank, and this rank's slice of them (the whole of them in one process)."""
        world = distributed.world_size()
        z, labels = self.noise(m * world), self.random_labels(m * world)
        return distributed.shard(z), None if labels is None else distributed.shard(labels)

    def noise(self, n):
        """z ~ N(0, I) of shape (n, latent_dim) on the device."""
        return backend.randn(n, self.latent_dim)

    def random_labels(self, n):
        """Labels drawn uniformly from the classes, on the device (None for an unconditional GAN)."""
        if not self.conditional:
            return None
        return backend.to_device(backend.rng().integers(0, self.num_classes, size=n))

    # ---- one iteration of Algorithm 1 ------------------------------------------
    def step(self, batch):
        """k discriminator updates and one generator update; returns 0-d device metrics.

        ``batch`` is ``(x,)`` or, conditional, ``(x, labels)``: device arrays or
        tensors holding ``k * m`` examples, split into k minibatches of m.
        """
        x = batch[0] if isinstance(batch[0], Tensor) else tensor(batch[0])
        labels = None
        if self.conditional:
            if len(batch) < 2:
                raise ValueError("a conditional GAN's batch is (images, labels); got no labels")
            labels = batch[1].data if isinstance(batch[1], Tensor) else batch[1]
        n = x.shape[0]
        if n % self.k:
            raise ValueError(f"a step with k={self.k} discriminator updates needs a batch of k * m examples; "
                             f"got {n}, not a multiple of {self.k} (set the loop's batch size to k * m)")
        m = n // self.k
        if m % self.pack:
            raise ValueError(f"with pack={self.pack} (samples D judges at once) each minibatch must be a multiple "
                             f"of {self.pack}; got {m} (set the batch size to a multiple of {self.pack})")
        if self.lr_decay_steps is not None:
            factor = max(0.0, 1.0 - self.steps / self.lr_decay_steps)
            self.opt_g.lr, self.opt_d.lr = self.base_lr[0] * factor, self.base_lr[1] * factor

        sums = None
        for i in range(self.k):
            xi = x if self.k == 1 else x[i * m:(i + 1) * m]
            yi = None if labels is None else (labels if self.k == 1 else labels[i * m:(i + 1) * m])
            penalise = self.r1 > 0 and (self.steps * self.k + i) % self.r1_every == 0
            values, fakes = self._discriminator_step(xi, yi, m, keep_graph=self.reuse_fakes and i == self.k - 1,
                                                     r1=penalise)
            sums = values if sums is None else [a + b for a, b in zip(sums, values)]
        loss_d, d_real, d_fake = (s / self.k if self.k > 1 else s for s in sums)
        loss_g = self._generator_step(m, fakes)
        self.steps += 1
        metrics = {"loss_d": loss_d, "loss_g": loss_g, "d_real": d_real, "d_fake": d_fake}
        if self.lr_decay_steps is not None:
            metrics["lr"] = self.opt_g.lr  # a Python float: no transfer
        return metrics

    def _discriminator_step(self, x, labels, m, keep_graph=False, r1=False):
        """One D update (with R1's penalty if ``r1``); returns its metrics and, with ``keep_graph``, the
        fakes (with G's graph) and their labels for the G update, else None."""
        z, fake_labels = self._shared_noise(m)
        if keep_graph:  # reuse_fakes: the G update backpropagates through this forward of G
            generated = self.G(tensor(z), fake_labels)
            fake = generated.detach()  # D's update still treats G's weights as constants
        else:
            generated = None
            with no_grad():  # G's weights are constants in D's update: no graph through G
                fake = self.G(tensor(z), fake_labels)
        if self._d_mixes_batch:
            # With batch norm in D, real and fake go through D separately: a mixed batch would
            # normalise each half with the other's statistics (DCGAN's reference code keeps them apart);
            # minibatch discrimination would measure real samples' closeness to fake ones.
            real_logits = self.D(self._packed(x), labels)
            fake_logits = self.D(self._packed(fake), fake_labels)
        else:
            # Without it, one pass over both is the same function at half the per-op overhead.
            both = None if labels is None else backend.get_array_module(labels).concatenate([labels, fake_labels])
            logits = self.D(F.concat([self._packed(x), self._packed(fake)], axis=0), both)
            groups = m // self.pack
            real_logits, fake_logits = logits[:groups], logits[groups:]
        loss_d = losses.discriminator_loss(real_logits, fake_logits)
        objective = loss_d
        if r1:
            objective = loss_d + (self.r1 * self.r1_every / 2) * losses.r1_penalty(self.D, self._packed(x))
        self.opt_d.zero_grad()
        objective.backward()
        with no_grad():
            d_real = F.sigmoid(real_logits).data.mean()
            d_fake = F.sigmoid(fake_logits).data.mean()
        # many processes: the gradients' mean over the ranks, and the metrics' global means with them
        values = distributed.all_reduce_gradients(self.opt_d, loss_d.data, d_real, d_fake)
        self.opt_d.step()
        return values, None if generated is None else (generated, fake_labels)

    def _generator_step(self, m, fakes=None):
        """One G update, on fresh noise or on ``fakes`` = (G's output with its graph, their labels)."""
        if fakes is None:
            z, fake_labels = self._shared_noise(m)
            fakes = (self.G(tensor(z), fake_labels), fake_labels)
        generated, fake_labels = fakes
        with frozen(self.D):  # D's weights are constants here: their gradients are not even computed
            logits = self.D(self._packed(generated), fake_labels)
            loss_g = losses.generator_loss(logits, self.loss)
            self.opt_g.zero_grad()
            loss_g.backward()
            (value,) = distributed.all_reduce_gradients(self.opt_g, loss_g.data)
            self.opt_g.step()
        if self.ema is not None:
            self.ema.update()
        return value

    def _packed(self, x):
        """PacGAN: each run of ``pack`` consecutive samples as one input of pack times the channels."""
        if self.pack == 1:
            return x
        return x.reshape(x.shape[0] // self.pack, self.pack * x.shape[1], *x.shape[2:])

    # ---- sampling (host arrays: for grids, metrics and samples.npy) -------------
    def sample(self, z, labels=None):
        """G(z | labels) in evaluation mode as a host float32 array in the data's range.

        Images (``image_range`` set) are mapped to [0, 1]; otherwise G's output is returned as is.
        """
        with self._sampling_generator(), no_grad():
            out = self.G(tensor(z), labels).data
        out = backend.to_host(out).astype(np.float32)
        if self.image_range is not None:
            lo, hi = self.image_range
            out = np.clip((out - lo) / (hi - lo), 0.0, 1.0)
        return out

    @contextlib.contextmanager
    def _sampling_generator(self):
        """G as it draws samples, in evaluation mode: the average of G (if any, and unless
        ``raw_samples``), with batch-norm statistics of its own; G as trained after the block."""
        if self.ema is None or self.raw_samples:
            with evaluating(self.G):
                yield
            return
        with self.ema.swapped():
            trained = self._norm_statistics()
            self._set_norm_statistics(self._averaged_norm_statistics())
            try:
                with evaluating(self.G):
                    yield
            finally:
                self._set_norm_statistics(trained)

    def _norm_statistics(self):
        return [(m.running_mean.copy(), m.running_var.copy()) for m in self._g_norms]

    def _set_norm_statistics(self, stats):
        for m, (mean, var) in zip(self._g_norms, stats):
            m.running_mean[...] = mean
            m.running_var[...] = var

    def _averaged_norm_statistics(self):
        """Batch-norm statistics of the averaged G (call it with the average swapped in): the running
        statistics G kept in training belong to G as trained, not to the average, whose layers see
        inputs of another scale. They are recomputed from BN_CALIBRATION's fresh noise (a fixed seed:
        the same every time, training's random stream untouched) once per update of the average."""
        if self._averaged_norms is None or self._averaged_norms[0] != self.ema.updates:
            batches, size = BN_CALIBRATION
            labels = None
            if self.conditional:
                labels = backend.to_device(np.arange(size) % self.num_classes)
            with backend.rng_fork(BN_CALIBRATION_SEED):
                update_bn(((tensor(self.noise(size)), labels) for _ in range(batches)), self.G)
            self._averaged_norms = (self.ema.updates, self._norm_statistics())
        return self._averaged_norms[1]

    def sample_fixed(self):
        """Samples from the fixed noise (one row per class for a conditional GAN), for grid_hook."""
        return self.sample(self.fixed_noise, self.fixed_labels)

    def generate(self, n, chunk=500, seed=None):
        """``n`` samples from fresh noise: {"samples": ...}, and {"labels": int64 (n,)} when conditional.

        A conditional GAN's labels cycle through the classes (0, 1, ..., 9, 0, ...), so every
        class gets the same number of samples (within one). With ``seed`` the noise comes from
        that seed and tinygan's random generator is put back afterwards: evaluations between
        epochs then neither change the training's noise (a resumed run would otherwise differ
        from a straight one) nor vary from one epoch to the next.
        """
        parts, labels = [], np.arange(n) % self.num_classes if self.conditional else None
        with backend.rng_fork(seed) if seed is not None else contextlib.nullcontext():
            for i in range(0, n, chunk):
                size = min(chunk, n - i)
                y = None if labels is None else backend.to_device(labels[i:i + size])
                parts.append(self.sample(self.noise(size), y))
        out = {"samples": np.concatenate(parts)}
        if labels is not None:
            out["labels"] = labels.astype(np.int64)
        return out

    # ---- state -------------------------------------------------------------------
    def state_dict(self):
        state = {"G": dict(self.G.state_dict()), "D": dict(self.D.state_dict()),
                 "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                 "fixed_noise": self.fixed_noise, "steps": self.steps}
        if self.fixed_labels is not None:
            state["fixed_labels"] = self.fixed_labels
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, s):
        """Restore a state; a state from another architecture raises nn.StateDictError naming
        the first parameter that does not match."""
        hint = "was it saved with another --arch, --hidden, --filters or --latent-dim, or without --conditional?"
        check_state_matches({k: v.shape for k, v in self.G.state_dict().items()}, s["G"], "generator", hint)
        check_state_matches({k: v.shape for k, v in self.D.state_dict().items()}, s["D"], "discriminator", hint)
        self.G.load_state_dict(s["G"])
        self.D.load_state_dict(s["D"])
        self.opt_g.load_state_dict(s["opt_g"])
        self.opt_d.load_state_dict(s["opt_d"])
        self.fixed_noise = backend.to_device(s["fixed_noise"], backend.DEFAULT_DTYPE)
        self.steps = int(s.get("steps", 0))
        if self.ema is not None:
            self.ema.resume(s.get("ema"))
        self._averaged_norms = None
        if self.fixed_labels is not None:
            self.fixed_labels = backend.to_device(s["fixed_labels"])
