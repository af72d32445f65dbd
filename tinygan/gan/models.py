"""Networks of the minimax GAN (Goodfellow et al. 2014) and the conditional GAN (Mirza & Osindero 2014).

Every discriminator returns *logits* of shape (N,): D(x) = sigmoid(logit), and
the losses in :mod:`tinygan.gan.losses` work on the logits so that they stay finite.
Generators map z ~ N(0, I) of shape (N, latent_dim) to samples; image
generators end in tanh, i.e. images in [-1, 1] (NCHW).

* :class:`MLPGenerator` / :class:`MLPDiscriminator`: fully connected, as in
  the GAN paper's MNIST model (the paper's D used maxout and dropout; here
  LeakyReLU(0.2) and optional dropout, the common modern substitute).
* :class:`DCGANGenerator` / :class:`DCGANDiscriminator`: the DCGAN recipe
  (Radford et al. 2016) sized for 28x28: transposed convolutions, batch norm,
  ReLU in G and LeakyReLU(0.2) in D, no pooling, ``nn.init.dcgan_``; with one
  fully connected hidden layer at G's input and D's output, as InfoGAN's MNIST networks.
* Conditional variants (``num_classes`` set, or the ``Conditional*`` classes):
  G(z | y) and D(x | y). As in Mirza & Osindero's MNIST model, z (or x) and
  the one-hot y are each mapped by their own hidden layer and the two hidden
  layers are joined (concatenated) before the rest of the network. The
  DCGAN variants join the one-hot y to z and, in D, to the
  image as ``num_classes`` constant planes.
* :class:`ToyGenerator` / :class:`ToyDiscriminator`: small MLPs for the 2-D
  mixtures (ring, grid).
"""
from __future__ import annotations

import math

from .. import backend
from .. import functional as F
from .. import nn
from ..tensor import Tensor

__all__ = ["MLPGenerator", "MLPDiscriminator", "DCGANGenerator", "DCGANDiscriminator",
           "ConditionalMLPGenerator", "ConditionalMLPDiscriminator",
           "ConditionalDCGANGenerator", "ConditionalDCGANDiscriminator",
           "ToyGenerator", "ToyDiscriminator"]


def _check_labels(module, labels, n):
    """The label argument of a forward pass: required and well-formed iff the module is conditional."""
    name = type(module).__name__
    if module.num_classes is None:
        if labels is not None:
            raise ValueError(f"{name} is unconditional but got labels; build it with num_classes=... "
                             "for a conditional GAN")
        return None
    if labels is None:
        raise ValueError(f"{name} is conditional (num_classes={module.num_classes}) and needs labels "
                         f"of shape ({n},)")
    lab = labels.data if isinstance(labels, Tensor) else labels
    if tuple(lab.shape) != (n,):
        raise ValueError(f"{name}: labels must have shape ({n},) to match the batch, got {tuple(lab.shape)}")
    if lab.dtype.kind not in "iu":
        raise ValueError(f"{name}: labels must be integers in [0, {module.num_classes}), got dtype {lab.dtype}")
    # Values outside [0, num_classes) are not checked: that would need a device-to-host
    # transfer in every step. They would give an all-zero one-hot row.
    return F.one_hot(lab, module.num_classes)


def _as_tuple(hidden, name):
    hidden = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    if not hidden or any((not isinstance(h, int)) or h < 1 for h in hidden):
        raise ValueError(f"{name}: hidden must be one or more positive layer widths, got {hidden!r}")
    return hidden


def _check_num_classes(num_classes, name):
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 2):
        raise ValueError(f"{name}: num_classes must be an int >= 2 (or None for an unconditional model), "
                         f"got {num_classes!r}")


class MLPGenerator(nn.Module):
    """z -> fully connected layers with LeakyReLU(0.2) -> prod(out_shape) -> reshape.

    Conditional (``num_classes`` set), as Mirza & Osindero: z and the one-hot y
    are mapped by separate first layers (widths ``hidden[0]`` and
    ``label_dim``, by default also ``hidden[0]``: the paper's G gives the label
    the larger layer, 1000 units against z's 200) whose outputs are concatenated:

        h_1 = [lrelu(W_z z + b_z), lrelu(W_y onehot(y) + b_y)],   h_{i+1} = lrelu(W_i h_i + b_i)

    ``output``: "tanh" for images in [-1, 1], None for unbounded outputs (the toy).
    ``batch_norm`` adds BatchNorm1d after each hidden layer but the first.
    """

    def __init__(self, latent_dim=100, hidden=(256, 512, 1024), out_shape=(1, 28, 28), output="tanh",
                 num_classes=None, label_dim=None, batch_norm=False, negative_slope=0.2):
        super().__init__()
        name = type(self).__name__
        hidden = _as_tuple(hidden, name)
        _check_num_classes(num_classes, name)
        if output not in ("tanh", None):
            raise ValueError(f"{name}: output must be 'tanh' or None, got {output!r}")
        self.latent_dim, self.hidden, self.out_shape = latent_dim, hidden, tuple(out_shape)
        self.output, self.num_classes, self.negative_slope = output, num_classes, negative_slope
        self.label_dim = (label_dim or hidden[0]) if num_classes else 0
        self.fc_in = nn.Linear(latent_dim, hidden[0])
        if num_classes:
            self.fc_label = nn.Linear(num_classes, self.label_dim)
        layers = []
        width = hidden[0] + self.label_dim
        for h in hidden[1:]:
            layers.append(nn.Linear(width, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.LeakyReLU(negative_slope))
            width = h
        layers.append(nn.Linear(width, math.prod(self.out_shape)))
        self.body = nn.Sequential(*layers)

    def forward(self, z, labels=None):
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"{type(self).__name__}: expected noise of shape (N, {self.latent_dim}), got {z.shape}")
        onehot = _check_labels(self, labels, z.shape[0])
        h = F.leaky_relu(self.fc_in(z), self.negative_slope)
        if onehot is not None:
            h = F.concat([h, F.leaky_relu(self.fc_label(onehot), self.negative_slope)], axis=1)
        out = self.body(h)
        if self.output == "tanh":
            out = F.tanh(out)
        return out.reshape((z.shape[0],) + self.out_shape)


class MLPDiscriminator(nn.Module):
    """x (any shape, flattened) -> fully connected layers with LeakyReLU(0.2) -> one logit per sample.

    Conditional: x and onehot(y) are mapped by separate first layers and joined,
    as in :class:`MLPGenerator`; the label's layer is by default a quarter as wide
    as x's (the paper's D: 50 maxout units for y, 240 for x). ``dropout`` (after
    each hidden layer) is the GAN paper's regulariser of D. In a conditional D the
    first dropout drops x's features only, before they are joined with the label's:
    the label is given, not evidence D should learn to do without (measured in
    docs/gan/RESULTS.md: label accuracy 97.7% -> 98.2%, Frechet distance 6.34 -> 5.83).
    ``minibatch_kernels`` > 0 puts :class:`nn.MinibatchDiscrimination` with that many kernels
    before the output layer, so that D sees how alike the samples of a batch are.
    """

    def __init__(self, in_shape=(1, 28, 28), hidden=(512, 256), num_classes=None, label_dim=None,
                 dropout=0.0, negative_slope=0.2, minibatch_kernels=0):
        super().__init__()
        name = type(self).__name__
        hidden = _as_tuple(hidden, name)
        _check_num_classes(num_classes, name)
        self.in_shape, self.hidden, self.num_classes = tuple(in_shape), hidden, num_classes
        self.negative_slope, self.dropout, self.minibatch_kernels = negative_slope, dropout, minibatch_kernels
        self.label_dim = (label_dim or max(hidden[0] // 4, 16)) if num_classes else 0
        self.fc_in = nn.Linear(math.prod(self.in_shape), hidden[0])
        if num_classes:
            self.fc_label = nn.Linear(num_classes, self.label_dim)
        layers = []
        width = hidden[0] + self.label_dim
        for h in hidden[1:]:
            if dropout:
                layers.append(nn.Dropout(dropout))
            layers += [nn.Linear(width, h), nn.LeakyReLU(negative_slope)]
            width = h
        if dropout:
            layers.append(nn.Dropout(dropout))
        if minibatch_kernels:
            layers.append(nn.MinibatchDiscrimination(width, minibatch_kernels))
            width += minibatch_kernels
        layers.append(nn.Linear(width, 1))
        if dropout and num_classes:
            layers[0] = nn.Identity()   # forward drops x's features before the join instead
        self.body = nn.Sequential(*layers)

    def forward(self, x, labels=None):
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"{type(self).__name__}: expected inputs of shape (N, {', '.join(map(str, self.in_shape))}), "
                             f"got {x.shape}")
        n = x.shape[0]
        onehot = _check_labels(self, labels, n)
        h = F.leaky_relu(self.fc_in(x.reshape(n, -1)), self.negative_slope)
        if onehot is not None:
            if self.dropout:
                h = F.dropout(h, self.dropout, self.training)
            h = F.concat([h, F.leaky_relu(self.fc_label(onehot), self.negative_slope)], axis=1)
        return self.body(h).reshape(n)

    def input_gradient(self, x):
        """d logit(x_i) / d x_i for each sample, as a graph in D's weights (for R1's penalty): the
        product of D's weight matrices and its LeakyReLU slopes (and dropout masks) at x, from
        :func:`nn.input_gradient`, so no second-order backward is needed. Unconditional D without
        minibatch discrimination only (that layer is not piecewise linear)."""
        if self.num_classes or self.minibatch_kernels:
            raise ValueError(f"{type(self).__name__}.input_gradient: only for an unconditional D without "
                             "minibatch discrimination")
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"{type(self).__name__}: expected inputs of shape (N, {', '.join(map(str, self.in_shape))}), "
                             f"got {x.shape}")
        n = x.shape[0]
        layers = [self.fc_in, nn.LeakyReLU(self.negative_slope), *self.body]  # forward's own order
        grad = nn.input_gradient(layers, x.data.reshape(n, -1), owner=f"{type(self).__name__}.input_gradient")
        return grad.reshape(n, *self.in_shape)


class DCGANGenerator(nn.Module):
    """DCGAN generator for 28x28 (Radford et al. 2016, sized down from 64x64), with a fully
    connected hidden layer of ``hidden`` units (default 8f) before the convolutions, as
    InfoGAN's MNIST generator (Chen et al. 2016) has:

        z (N, latent) -FC-> hidden -BN-ReLU-FC-> 7x7x2f -BN-ReLU-ConvT 4x4/2-> 14x14xf -BN-ReLU
          -ConvT 4x4/2-> 28x28xc -tanh

    Without the hidden layers (G's layout of a digit a linear map of z, D's logit a linear map of
    local features) the digits stayed malformed: Frechet distance 84 after 8 epochs, 20 with them
    (docs/gan/RESULTS.md).
    Conditional: the one-hot label is concatenated to z before the first layer.
    Initialised with ``nn.init.dcgan_`` (weights N(0, 0.02), BN scales N(1, 0.02)).
    """

    def __init__(self, latent_dim=100, filters=32, channels=1, num_classes=None, hidden=None):
        super().__init__()
        _check_num_classes(num_classes, type(self).__name__)
        self.latent_dim, self.filters, self.channels, self.num_classes = latent_dim, filters, channels, num_classes
        f = filters
        self.hidden = h = hidden or 8 * f
        self.net = nn.Sequential(
            nn.Linear(latent_dim + (num_classes or 0), h, bias=False), nn.BatchNorm1d(h), nn.ReLU(),
            nn.Linear(h, 2 * f * 7 * 7, bias=False), nn.BatchNorm1d(2 * f * 7 * 7), nn.ReLU(),
            nn.Unflatten(1, (2 * f, 7, 7)),
            nn.ConvTranspose2d(2 * f, f, 4, 2, 1, bias=False),
            nn.BatchNorm2d(f), nn.ReLU(),
            nn.ConvTranspose2d(f, channels, 4, 2, 1),
            nn.Tanh(),
        )
        nn.init.dcgan_(self)

    def forward(self, z, labels=None):
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"{type(self).__name__}: expected noise of shape (N, {self.latent_dim}), got {z.shape}")
        onehot = _check_labels(self, labels, z.shape[0])
        if onehot is not None:
            z = F.concat([z, onehot], axis=1)
        return self.net(z)


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator for 28x28: strided convs, LeakyReLU(0.2), BN except on the first layer,
    then a fully connected hidden layer of ``hidden`` units (default 8f), as InfoGAN's MNIST
    discriminator has, so that the logit is not a linear function of local features:

        x 28x28xc -Conv 4x4/2-> 14x14xf -LReLU-Conv 4x4/2-> 7x7x2f -BN-LReLU-FC-> hidden -LReLU-FC-> 1 logit

    Conditional: ``num_classes`` constant planes holding onehot(y) are joined to
    the image, so every filter of the first layer sees the label. ``minibatch_kernels`` > 0
    puts :class:`nn.MinibatchDiscrimination` between the hidden layer and the logit.
    ``batch_norm=False`` drops the batch norm (the second conv gets a bias instead), as D's of
    R1's paper (Mescheder et al. 2018) have none.
    """

    def __init__(self, filters=32, channels=1, num_classes=None, hidden=None, minibatch_kernels=0, batch_norm=True):
        super().__init__()
        _check_num_classes(num_classes, type(self).__name__)
        self.filters, self.channels, self.num_classes = filters, channels, num_classes
        f = filters
        self.hidden = h = hidden or 8 * f
        self.minibatch_kernels, self.batch_norm = minibatch_kernels, bool(batch_norm)
        mbd = [nn.MinibatchDiscrimination(h, minibatch_kernels)] if minibatch_kernels else []
        bn = [nn.BatchNorm2d(2 * f)] if batch_norm else []
        self.net = nn.Sequential(
            nn.Conv2d(channels + (num_classes or 0), f, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(f, 2 * f, 4, 2, 1, bias=not batch_norm),
            *bn, nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * f * 7 * 7, h), nn.LeakyReLU(0.2),
            *mbd,
            nn.Linear(h + minibatch_kernels, 1),
        )
        nn.init.dcgan_(self)

    def forward(self, x, labels=None):
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.channels, 28, 28):
            raise ValueError(f"{type(self).__name__}: expected images of shape (N, {self.channels}, 28, 28), got {x.shape}")
        n = x.shape[0]
        onehot = _check_labels(self, labels, n)
        if onehot is not None:
            xp = backend.get_array_module(x.data)
            planes = xp.broadcast_to(onehot.reshape(n, -1, 1, 1), (n, self.num_classes, 28, 28))
            x = F.concat([x, Tensor(xp.ascontiguousarray(planes))], axis=1)
        return self.net(x).reshape(n)

    def input_gradient(self, x):
        """d logit(x_i) / d x_i for each image, as a graph in D's weights (for R1's penalty), from
        :func:`nn.input_gradient`: back through the fully connected layers by their weight matrices,
        through each convolution by the transposed convolution with its weight, through each
        LeakyReLU by its slopes at x. Batch norm (in training mode) enters with the batch's
        statistics held fixed. Unconditional D without minibatch discrimination only."""
        name = type(self).__name__
        if self.num_classes or self.minibatch_kernels:
            raise ValueError(f"{name}.input_gradient: only for an unconditional D without minibatch discrimination")
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.channels, 28, 28):
            raise ValueError(f"{name}: expected images of shape (N, {self.channels}, 28, 28), got {x.shape}")
        return nn.input_gradient(list(self.net), x, owner=f"{name}.input_gradient")


class ConditionalMLPGenerator(MLPGenerator):
    """:class:`MLPGenerator` with ``num_classes=10`` by default: G(z | y)."""

    def __init__(self, latent_dim=100, hidden=(256, 512, 1024), out_shape=(1, 28, 28), num_classes=10, **kwargs):
        super().__init__(latent_dim, hidden, out_shape, num_classes=num_classes, **kwargs)


class ConditionalMLPDiscriminator(MLPDiscriminator):
    """:class:`MLPDiscriminator` with ``num_classes=10`` by default: D(x | y)."""

    def __init__(self, in_shape=(1, 28, 28), hidden=(512, 256), num_classes=10, **kwargs):
        super().__init__(in_shape, hidden, num_classes=num_classes, **kwargs)


class ConditionalDCGANGenerator(DCGANGenerator):
    """:class:`DCGANGenerator` with ``num_classes=10`` by default."""

    def __init__(self, latent_dim=100, filters=32, channels=1, num_classes=10, hidden=None):
        super().__init__(latent_dim, filters, channels, num_classes, hidden)


class ConditionalDCGANDiscriminator(DCGANDiscriminator):
    """:class:`DCGANDiscriminator` with ``num_classes=10`` by default."""

    def __init__(self, filters=32, channels=1, num_classes=10, hidden=None, minibatch_kernels=0, batch_norm=True):
        super().__init__(filters, channels, num_classes, hidden, minibatch_kernels, batch_norm)


class ToyGenerator(MLPGenerator):
    """z (latent_dim) -> ``depth`` hidden layers of ``width`` units, LeakyReLU(negative_slope) -> a 2-D point.

    ``scale`` (a constant, not trained) multiplies the output: the layers work
    in units where the data spans about [-1, 1] (the grid's means reach +-4),
    as default initialisations assume, while G's samples are in the data's own units.
    ``negative_slope`` 0 makes the hidden units ReLUs, which can switch off entirely: a G of a
    2-d z then draws far fewer points on the way between two modes (docs/gan/RESULTS.md).
    """

    def __init__(self, latent_dim=2, width=128, depth=3, scale=1.0, batch_norm=False, negative_slope=0.2):
        super().__init__(latent_dim, (width,) * depth, out_shape=(2,), output=None, batch_norm=batch_norm,
                         negative_slope=negative_slope)
        if not scale > 0:
            raise ValueError(f"ToyGenerator: scale must be positive, got {scale!r}")
        self.scale = float(scale)

    def forward(self, z, labels=None):
        return super().forward(z, labels) * self.scale


class ToyDiscriminator(MLPDiscriminator):
    """A 2-D point / ``scale`` -> ``depth`` hidden layers of ``width`` units, LeakyReLU(0.2) -> one logit.

    ``pack`` > 1: PacGAN's discriminator, which takes ``pack`` points at once (2 * pack inputs,
    as ``GANTrainer(pack=...)`` hands them over) and gives one logit for all of them.
    """

    def __init__(self, width=128, depth=3, scale=1.0, pack=1):
        super().__init__(in_shape=(2 * pack,), hidden=(width,) * depth)
        if not scale > 0:
            raise ValueError(f"ToyDiscriminator: scale must be positive, got {scale!r}")
        self.scale = float(scale)

    def forward(self, x, labels=None):
        return super().forward(x * (1.0 / self.scale), labels)

    def input_gradient(self, x):
        """d logit / d x in the data's units: the layers' gradient times the input's 1 / scale."""
        return super().input_gradient(x * (1.0 / self.scale)) * (1.0 / self.scale)
