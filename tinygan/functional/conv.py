"""Convolution by im2col and one GEMM, its adjoint col2im, the transposed conv, average pooling.

im2col is a strided view (``lib.stride_tricks.as_strided``) copied into one
(C*kh*kw, N*Ho*Wo) matrix; its adjoint, col2im, is a sum over the kh*kw
kernel positions of strided slices: no scatter-add, no loop over pixels.
3x3 convs at stride 1 (nearly all of BEGAN's work) take Winograd's F(4x4, 3x3)
instead (:mod:`tinygan.functional.winograd`). Names, argument orders and
layouts follow PyTorch: NCHW, conv weight (out, in, kh, kw), transposed-conv
weight (in, out, kh, kw).
"""
from __future__ import annotations

from ..tensor import Tensor
from .core import _check_nchw, _gemm, _pad, pair, _require, _same_backend, _wants, _xp, profiled
from .winograd import _conv2d_winograd

__all__ = ["conv2d", "conv_transpose2d", "avg_pool2d"]


def _windows(xpad, kh, kw, sh, sw, ho, wo, xp):
    """View (N, C, kh, kw, Ho, Wo) of a padded NCHW array: window (i, j) at output (h, w)."""
    n, c = xpad.shape[:2]
    s0, s1, s2, s3 = xpad.strides
    return xp.lib.stride_tricks.as_strided(
        xpad, shape=(n, c, kh, kw, ho, wo), strides=(s0, s1, s2, s3, s2 * sh, s3 * sw))


@profiled("transform")
def _im2col(xpad, kh, kw, sh, sw, ho, wo, xp):
    """Columns (C*kh*kw, N*Ho*Wo): one GEMM with the (O, C*kh*kw) weight makes the conv."""
    n, c = xpad.shape[:2]
    win = _windows(xpad, kh, kw, sh, sw, ho, wo, xp)
    return win.transpose(1, 2, 3, 0, 4, 5).reshape(c * kh * kw, n * ho * wo)


@profiled("transform")
def _col2im(cols6, shape, sh, sw, xp, dtype):
    """Adjoint of im2col: add each kernel position's (C, N, Ho, Wo) slab into a strided slice.

    ``cols6`` has shape (C, kh, kw, N, Ho, Wo); the result has ``shape`` (N, C, Hp, Wp).
    Writes to one slice never overlap, so each += is a plain vectorised add.
    """
    _, kh, kw, _, ho, wo = cols6.shape
    out = xp.zeros(shape, dtype=dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i:i + sh * ho:sh, j:j + sw * wo:sw] += cols6[:, i, j].transpose(1, 0, 2, 3)
    return out


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
    """conv2d by im2col and one GEMM (arguments already checked by conv2d).

    The backward recomputes the columns from the padded input instead of
    keeping them: they are kh*kw times the size of the output map, and the
    strided copy costs far less than the GEMMs around it.
    """
    xp = _xp(x, weight, bias)
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    xpad = _pad(x.data, ph, pw, xp)
    w2 = weight.data.reshape(o, -1)
    out = xp.ascontiguousarray(_gemm(w2, _im2col(xpad, kh, kw, sh, sw, ho, wo, xp))
                               .reshape(o, n, ho, wo).transpose(1, 0, 2, 3))
    if bias is not None:
        out += bias.data.reshape(1, o, 1, 1)

    def backward(g):
        g2 = g.transpose(1, 0, 2, 3).reshape(o, n * ho * wo)
        gw = _gemm(g2, _im2col(xpad, kh, kw, sh, sw, ho, wo, xp).T).reshape(weight.shape) if _wants(weight) else None
        gb = g.sum(axis=(0, 2, 3)) if _wants(bias) else None
        gx = None
        if _wants(x):
            gcols = _gemm(w2.T, g2).reshape(c, kh, kw, n, ho, wo)
            gx = _col2im(gcols, xpad.shape, sh, sw, xp, g.dtype)[:, :, ph:ph + h, pw:pw + w]
        return gx, gw, gb
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

    x2 = x.data.transpose(1, 0, 2, 3).reshape(cin, n * h * w)
    w2 = weight.data.reshape(cin, cout * kh * kw)
    cols = _gemm(w2.T, x2).reshape(cout, kh, kw, n, h, w)
    out = _col2im(cols, (n, cout, hf, wf), sh, sw, xp, x.dtype)[:, :, ph:ph + ho, pw:pw + wo]
    out = xp.ascontiguousarray(out)
    if bias is not None:
        out += bias.data.reshape(1, cout, 1, 1)

    def backward(g):
        gpad = xp.zeros((n, cout, hf, wf), dtype=g.dtype)
        gpad[:, :, ph:ph + ho, pw:pw + wo] = g
        gcols = _im2col(gpad, kh, kw, sh, sw, h, w, xp)  # (cout*kh*kw, n*h*w)
        gx = _gemm(w2, gcols).reshape(cin, n, h, w).transpose(1, 0, 2, 3) if _wants(x) else None
        gw = _gemm(x2, gcols.T).reshape(weight.shape) if _wants(weight) else None
        gb = g.sum(axis=(0, 2, 3)) if _wants(bias) else None
        return gx, gw, gb
    return Tensor.from_op(out, (x, weight, bias) if bias is not None else (x, weight), backward)


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
    # channels become batch entries so one window view (with C = 1) serves every channel
    xpad = _pad(x.data.reshape(n * c, 1, h, w), ph, pw, xp)
    out = _windows(xpad, kh, kw, sh, sw, ho, wo, xp).mean(axis=(2, 3)).reshape(n, c, ho, wo)

    def backward(g):
        share = (g / (kh * kw)).reshape(1, 1, 1, n * c, ho, wo)
        gpad = _col2im(xp.broadcast_to(share, (1, kh, kw, n * c, ho, wo)), xpad.shape, sh, sw, xp, g.dtype)
        return (gpad[:, :, ph:ph + h, pw:pw + w].reshape(n, c, h, w),)
    return Tensor.from_op(out, (x,), backward)
