"""Convolution by im2col and one GEMM, its adjoint col2im, the transposed conv, average pooling.

im2col is a strided view (``lib.stride_tricks.as_strided``) copied into one
(Ho*Wo*N, kh*kw*C) matrix; its adjoint, col2im, is a sum over the kh*kw
kernel positions of strided slices: no scatter-add, no loop over pixels.
3x3 convs at stride 1 (nearly all of BEGAN's work) take Winograd's F(4x4, 3x3)
instead (:mod:`tinygan.functional.winograd`). Names, argument orders and
layouts follow PyTorch: NCHW, conv weight (out, in, kh, kw), transposed-conv
weight (in, out, kh, kw).
"""
from __future__ import annotations

from .. import backend
from ..tensor import Tensor
from .core import _check_nchw, _gemm, pair, _require, _same_backend, _wants, _xp, profiled
from .winograd import _conv2d_winograd, _to_tiles

__all__ = ["conv2d", "conv_transpose2d", "avg_pool2d"]


# The direct path works channels-last: rows x columns x batch x channels, the layout the Winograd
# path's tiles use and its outputs come in (an NCHW view of (H, W, N, C) memory). An input of that
# memory order is padded without transposing, a GEMM's (H*W*N, C) result is the output's memory as
# it stands, and the gradient that comes back has the same order as the activations it meets
# (elementwise ops on two different memory orders run several times slower). Measured, BEGAN 64x64
# n=64, 1 BLAS thread: the NCHW form of this path (im2col as (C*kh*kw, N*Ho*Wo)) spent 0.24 s of a
# step in col2im and 0.14 s padding, and the ELU backward behind each stride-2 conv ran on mixed
# memory orders.

def _padded(x, ph, pw, xp):
    """(Hp, Wp, N, C): NCHW ``x`` moved channels-last with ``ph`` and ``pw`` zero rows and columns
    around it. It is the Winograd path's tile buffer (a reused work buffer, valid until the next
    conv asks for it), so every caller here consumes it at once (im2col copies it)."""
    h, w = x.shape[2:]
    return _to_tiles(x, ph, pw, h + 2 * ph, w + 2 * pw, xp)


@profiled("transform")
def _im2col(xt, kh, kw, sh, sw, ho, wo, xp):
    """Columns (Ho*Wo*N, kh*kw*C) of a padded (Hp, Wp, N, C) array: row (h, w, n) holds its window.

    One strided view (``lib.stride_tricks.as_strided``) copied once; a GEMM with the
    (kh*kw*C, O) weight gives the conv's (Ho, Wo, N, O) output.
    """
    _, _, n, c = xt.shape
    s0, s1, s2, s3 = xt.strides
    win = xp.lib.stride_tricks.as_strided(xt, shape=(ho, wo, n, kh, kw, c),
                                          strides=(s0 * sh, s1 * sw, s2, s0, s1, s3))
    cols = xp.empty(win.shape, dtype=xt.dtype)
    backend.split_run(xp, lambda rows: cols.__setitem__(rows, win[rows]), ho, cols.size)  # a copy: 1 thread in NumPy
    return cols.reshape(ho * wo * n, kh * kw * c)


@profiled("transform")
def _col2im(cols, shape, sh, sw, xp):
    """Adjoint of im2col: (Ho, Wo, N, kh, kw, C) columns summed into a new (Hp, Wp, N, C) array.

    Each kernel position's (Ho, Wo, N, C) slab is added into a strided slice;
    writes to one slice never overlap, so each += is a plain vectorised add:
    no scatter-add, no loop over pixels.
    """
    ho, wo, _, kh, kw, _ = cols.shape
    out = xp.zeros(shape, dtype=cols.dtype)

    def images(part):  # the images are independent: split over the CPU cores (backend.split_run)
        for i in range(kh):
            for j in range(kw):
                dest = out[i:i + sh * ho:sh, j:j + sw * wo:sw, part]
                dest += cols[:, :, part, i, j]  # in place (out[...] += would add, then copy onto itself)
    backend.split_run(xp, images, shape[2], out.size)
    return out


def _channels_last(a):
    """(H*W*N, C) rows of an NCHW array: free for (H, W, N, C) memory, one copy otherwise."""
    n, c, h, w = a.shape
    return a.transpose(2, 3, 0, 1).reshape(h * w * n, c)


def _check_conv(x, weight, bias, stride, padding, op, in_axis, layout):
    """The checks conv2d and conv_transpose2d share; returns (stride pair, padding pair).

    ``in_axis`` is the weight axis that must match the input's channels (1 for conv2d's
    (out, in, kh, kw), 0 for the transposed conv's (in, out, kh, kw)).
    """
    _check_nchw(x, op)
    _require(weight.ndim == 4, op, f"weight must be {layout}, got shape {weight.shape}")
    _require(x.shape[1] == weight.shape[in_axis], op,
             f"input has {x.shape[1]} channels (shape {x.shape}) but weight expects "
             f"{weight.shape[in_axis]} (weight shape {weight.shape}, layout {layout})")
    _same_backend(x, weight, bias)
    return pair(stride, "stride", op, 1), pair(padding, "padding", op, 0)


@profiled("conv2d")
def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-D cross-correlation, as torch.nn.functional.conv2d (no dilation or groups).

    out[n, o, h, w] = bias[o] + sum_{c,i,j} weight[o, c, i, j] * xpad[n, c, h*s + i, w*s + j]

    3x3 kernels at stride 1 (any padding) take Winograd's minimal filtering
    algorithm (:func:`_conv2d_winograd`); every other shape takes im2col and
    one GEMM (:func:`_conv2d_direct`), which is also the reference the
    Winograd path is tested against.
    """
    op = "conv2d"
    (sh, sw), (ph, pw) = _check_conv(x, weight, bias, stride, padding, op, in_axis=1, layout="(out, in, kh, kw)")
    _, _, h, w = x.shape
    o, _, kh, kw = weight.shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    _require(ho > 0 and wo > 0, op, f"kernel {kh}x{kw} is larger than the padded input "
             f"{h + 2 * ph}x{w + 2 * pw} (input shape {x.shape}, padding {padding})")
    if bias is not None:
        _require(bias.shape == (o,), op, f"bias shape {bias.shape} does not match {o} output channels")
    if (kh, kw, sh, sw) == (3, 3, 1, 1):
        return _conv2d_winograd(x, weight, bias, ph, pw)
    return _conv2d_direct(x, weight, bias, sh, sw, ph, pw)


def _conv2d_direct(x, weight, bias, sh, sw, ph, pw):
    """conv2d by im2col and one GEMM (arguments already checked by conv2d), channels-last.

    out[(h, w, n), o] = sum_{(i, j, c)} cols[(h, w, n), (i, j, c)] * W[(i, j, c), o]

    The backward recomputes the columns from the input instead of keeping
    them: they are kh*kw times the size of the output map, and the strided
    copy costs far less than the GEMMs around it.
    """
    xp = _xp(x, weight, bias)
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    w2 = weight.data.transpose(2, 3, 1, 0).reshape(kh * kw * c, o)
    out = _gemm(_im2col(_padded(x.data, ph, pw, xp), kh, kw, sh, sw, ho, wo, xp), w2)
    if bias is not None:
        out += bias.data

    def backward(g):
        g2 = _channels_last(g)                                        # (Ho*Wo*N, O)
        gw = gb = gx = None
        if _wants(weight):
            cols = _im2col(_padded(x.data, ph, pw, xp), kh, kw, sh, sw, ho, wo, xp)
            gw = _gemm(cols.T, g2).reshape(kh, kw, c, o).transpose(3, 2, 0, 1)
        if _wants(bias):
            gb = g2.sum(axis=0)
        if _wants(x):
            gcols = _gemm(g2, w2.T).reshape(ho, wo, n, kh, kw, c)
            dx = _col2im(gcols, (h + 2 * ph, w + 2 * pw, n, c), sh, sw, xp)
            gx = dx[ph:ph + h, pw:pw + w].transpose(2, 3, 0, 1)
        return gx, gw, gb
    out = out.reshape(ho, wo, n, o).transpose(2, 3, 0, 1)
    return Tensor.from_op(out, (x, weight, bias) if bias is not None else (x, weight), backward)


@profiled("conv_transpose2d")
def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0):
    """Transposed convolution, the adjoint of conv2d, as torch.nn.functional.conv_transpose2d.

    weight has PyTorch's layout (in, out, kh, kw). Output size per axis:
    (H - 1) * stride - 2 * padding + kh + output_padding.
    """
    op = "conv_transpose2d"
    (sh, sw), (ph, pw) = _check_conv(x, weight, bias, stride, padding, op, in_axis=0, layout="(in, out, kh, kw)")
    xp = _xp(x, weight, bias)
    oph, opw = pair(output_padding, "output_padding", op, 0)
    _require(oph < sh and opw < sw, op, f"output_padding {output_padding} must be smaller than stride {stride}")
    n, cin, h, w = x.shape
    _, cout, kh, kw = weight.shape
    hf, wf = (h - 1) * sh + kh + oph, (w - 1) * sw + kw + opw  # before cropping the padding
    ho, wo = hf - 2 * ph, wf - 2 * pw
    _require(ho > 0 and wo > 0, op, f"padding {padding} leaves no output for input shape {x.shape}")
    if bias is not None:
        _require(bias.shape == (cout,), op, f"bias shape {bias.shape} does not match {cout} output channels")

    x2 = _channels_last(x.data)                                        # (H*W*N, Cin)
    w2 = weight.data.transpose(0, 2, 3, 1).reshape(cin, kh * kw * cout)
    cols = _gemm(x2, w2).reshape(h, w, n, kh, kw, cout)
    out = _col2im(cols, (hf, wf, n, cout), sh, sw, xp)[ph:ph + ho, pw:pw + wo]
    if bias is not None:
        out += bias.data

    def backward(g):
        gcols = _im2col(_padded(g, ph, pw, xp), kh, kw, sh, sw, h, w, xp)  # (H*W*N, kh*kw*Cout)
        gx = _gemm(gcols, w2.T).reshape(h, w, n, cin).transpose(2, 3, 0, 1) if _wants(x) else None
        gw = _gemm(x2.T, gcols).reshape(cin, kh, kw, cout).transpose(0, 3, 1, 2) if _wants(weight) else None
        gb = g.sum(axis=(0, 2, 3)) if _wants(bias) else None
        return gx, gw, gb
    return Tensor.from_op(out.transpose(2, 3, 0, 1), (x, weight, bias) if bias is not None else (x, weight), backward)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Average pooling as torch.nn.functional.avg_pool2d (count_include_pad=True)."""
    op = "avg_pool2d"
    _check_nchw(x, op)
    xp = _xp(x)
    kh, kw = pair(kernel_size, "kernel_size", op, 1)
    sh, sw = pair(stride if stride is not None else kernel_size, "stride", op, 1)
    ph, pw = pair(padding, "padding", op, 0)
    _require(ph <= kh // 2 and pw <= kw // 2, op,  # PyTorch's rule: a window must hold an input pixel
             f"padding {padding!r} must be at most half the kernel size {kernel_size!r}")
    n, c, h, w = x.shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    _require(ho > 0 and wo > 0, op, f"kernel {kh}x{kw} is larger than the padded input (shape {x.shape})")
    xt = _padded(x.data, ph, pw, xp)
    s0, s1, s2, s3 = xt.strides
    windows = xp.lib.stride_tricks.as_strided(xt, shape=(ho, wo, n, kh, kw, c),
                                              strides=(s0 * sh, s1 * sw, s2, s0, s1, s3))
    out = windows.mean(axis=(3, 4)).transpose(2, 3, 0, 1)

    def backward(g):
        share = (g / (kh * kw)).transpose(2, 3, 0, 1).reshape(ho, wo, n, 1, 1, c)
        dx = _col2im(xp.broadcast_to(share, (ho, wo, n, kh, kw, c)), xt.shape, sh, sw, xp)
        return (dx[ph:ph + h, pw:pw + w].transpose(2, 3, 0, 1),)
    return Tensor.from_op(out, (x,), backward)
