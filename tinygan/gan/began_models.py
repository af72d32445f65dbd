"""BEGAN's networks (Berthelot et al. 2017, section 3.5 and figure 1).

Everything is 3x3 convolutions with ELU, two per scale; no batch norm, no
dropout, no transposed convolutions.

* Decoder (the generator, and D's decoder, with separate weights):
  h -> Linear -> 8x8xn -> [conv, conv, upsample x2] ... -> conv to 3 channels.
* Encoder: conv to n, then per scale [conv, conv] with n, 2n, 3n, ...
  filters, a stride-2 conv growing the filters at each downsampling, and a
  Linear (no nonlinearity) from the 8x8 map to h.
* Discriminator: decoder(encoder(x)), an autoencoder whose reconstruction
  error is the BEGAN loss.

Optional skip connections (the paper's "vanishing residuals"): the decoder's
8x8xn starting map, upsampled by nearest neighbour, is concatenated to the
feature map after every upsampling, so each scale sees the global layout.
Images are NCHW in [-1, 1]; the decoder's last conv has no activation, as in
the paper.
"""
from __future__ import annotations

from .. import functional as F
from .. import nn

SIZES = (32, 64, 128)


def began_scales(size):
    """Number of resolutions from 8x8 up to ``size`` (3 for 32, 4 for 64, 5 for 128)."""
    if size not in SIZES:
        raise ValueError(f"BEGAN image size must be one of {SIZES}, got {size}")
    return {32: 3, 64: 4, 128: 5}[size]


def _conv(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


class BEGANDecoder(nn.Module):
    """h-dimensional code -> (N, channels, size, size) image. Used as G and as D's decoder."""

    def __init__(self, size=64, filters=64, hidden=64, channels=3, skip=False):
        super().__init__()
        self.size, self.filters, self.hidden, self.skip = size, filters, hidden, skip
        self.scales = began_scales(size)
        n = filters
        self.fc = nn.Linear(hidden, 8 * 8 * n)
        blocks = []
        for i in range(self.scales):
            cin = 2 * n if (skip and i > 0) else n  # after an upsampling, skip adds n channels
            blocks.append(nn.Sequential(_conv(cin, n), nn.ELU(), _conv(n, n), nn.ELU()))
        self.blocks = nn.Sequential(*blocks)
        self.to_rgb = _conv(n, channels)

    def forward(self, h):
        n = self.filters
        x0 = self.fc(h).reshape(h.shape[0], n, 8, 8)
        x = x0
        for i, block in enumerate(self.blocks):
            if i > 0:
                x = F.upsample_nearest(x, 2)
                if self.skip:
                    x = F.concat([x, F.upsample_nearest(x0, 2 ** i)], axis=1)
            x = block(x)
        return self.to_rgb(x)


class BEGANEncoder(nn.Module):
    """(N, channels, size, size) image -> h-dimensional code."""

    def __init__(self, size=64, filters=64, hidden=64, channels=3):
        super().__init__()
        self.size, self.filters, self.hidden = size, filters, hidden
        self.scales = began_scales(size)
        n = filters
        layers = [_conv(channels, n), nn.ELU()]
        for i in range(self.scales):
            c = n * (i + 1)
            layers += [_conv(c, c), nn.ELU(), _conv(c, c), nn.ELU()]
            if i < self.scales - 1:  # downsample by a strided conv, growing the filters linearly
                layers += [_conv(c, n * (i + 2), stride=2), nn.ELU()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(8 * 8 * n * self.scales, hidden)

    def forward(self, x):
        if x.ndim != 4 or x.shape[2:] != (self.size, self.size):
            raise ValueError(f"BEGANEncoder: expected images of shape (N, C, {self.size}, {self.size}), got {x.shape}")
        return self.fc(self.features(x).flatten(1))


class BEGANDiscriminator(nn.Module):
    """BEGAN's autoencoder discriminator: D(x) = decoder(encoder(x)), a reconstruction of x."""

    def __init__(self, size=64, filters=64, hidden=64, channels=3, skip=False):
        super().__init__()
        self.encoder = BEGANEncoder(size, filters, hidden, channels)
        self.decoder = BEGANDecoder(size, filters, hidden, channels, skip)

    def forward(self, x):
        return self.decoder(self.encoder(x))
