"""Winograd's minimal filtering F(m x m, 3 x 3): 3x3 convolutions at stride 1, forward and backward.

See :func:`_conv2d_winograd` for the algorithm (Lavin & Gray 2016). Its
temporaries live in work buffers reused from call to call (only this path
needs them), kept per array module and device.
"""
from __future__ import annotations

import math
import threading

from .. import backend
from ..tensor import Tensor, is_grad_enabled
from .core import _gemm, _wants, _xp, profiled

# Work buffers reused from call to call, one per (array module and device, tag, dtype, thread: the
# replicas of a data-parallel step run at once), so the conv's big temporaries skip the allocator (see
# also tinygan/_malloc.py). Contents are undefined when handed out and valid until the next request for
# the same tag; nothing that leaves an op lives in one. Kept between steps (BEGAN 64x64, n = 64: about
# 250 MB) until release_work_buffers().
_SCRATCH = {}
_TILES_ZEROED = {}  # scratch key -> (the "tiles" buffer, the layout whose border it last zeroed)


def _scratch_key(xp, tag, dtype):
    return backend.cache_key(xp), tag, dtype, threading.get_ident()


def _scratch(xp, tag, shape, dtype):
    size = math.prod(shape)
    key = _scratch_key(xp, tag, dtype)
    buf = _SCRATCH.get(key)
    if buf is None or buf.size < size:
        _SCRATCH.pop(key, None)  # drop the old one before allocating the larger one
        buf = _SCRATCH[key] = xp.empty((size,), dtype=dtype)
    return buf[:size].reshape(shape)


def release_work_buffers():
    """Free the reusable work buffers (the next Winograd convs allocate them again)."""
    _SCRATCH.clear()
    _TILES_ZEROED.clear()


# Lavin & Gray 2016 (arXiv 1509.09308), section 4: interpolation points 0, -1, 1 (and infinity)
# for F(2x2, 3x3); 0, +-1, +-2 (and infinity) for F(4x4, 3x3). (B^T, G, A^T) per output tile size m.
_WINOGRAD = {
    2: ([[1, 0, -1, 0],
         [0, 1, 1, 0],
         [0, -1, 1, 0],
         [0, 1, 0, -1]],
        [[1, 0, 0],
         [1 / 2, 1 / 2, 1 / 2],
         [1 / 2, -1 / 2, 1 / 2],
         [0, 0, 1]],
        [[1, 1, 1, 0],
         [0, 1, -1, -1]]),
    4: ([[4, 0, -5, 0, 1, 0],
         [0, -4, -4, 1, 1, 0],
         [0, 4, -4, -1, 1, 0],
         [0, -2, -1, 2, 1, 0],
         [0, 2, -1, -2, 1, 0],
         [0, 4, 0, -5, 0, 1]],
        [[1 / 4, 0, 0],
         [-1 / 6, -1 / 6, -1 / 6],
         [-1 / 6, 1 / 6, -1 / 6],
         [1 / 24, 1 / 12, 1 / 6],
         [1 / 24, -1 / 12, 1 / 6],
         [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0],
         [0, 1, -1, 2, -2, 0],
         [0, 1, 1, 4, 4, 0],
         [0, 1, -1, 8, -8, 1]]),
}


# Output tile size of the Winograd path: F(4x4) needs 4x fewer multiplications than im2col,
# F(2x2) 2.25x. Measured forward + backward of one layer, batch 16, 1 BLAS thread (a shared machine):
# 64x64, 64 -> 64 channels: F(4x4) 234 ms, F(2x2) 340 ms, im2col 420 ms; 32x32, 128 -> 128:
# 110, 215 and 327 ms. F(4x4) rounds worse (WINOGRAD_RTOL), well inside float32 training noise.
WINOGRAD_TILE = 4


# Float32 error of the Winograd path: max |y - y_ref| / max |y_ref|, y_ref the float64 direct
# conv, on ELU activations with PyTorch's default init at BEGAN's sizes (8..64 px, 3..256
# channels), for the output and the input and weight gradients alike. Measured: F(4x4) up to
# 1.4e-5, F(2x2) up to 4e-6, im2col in float32 up to 7e-7. tests/test_conv_fast.py holds
# both tile sizes to this bound.
WINOGRAD_RTOL = 5e-5


# The forward's V (the transformed input tiles, (m + 2)^2 / m^2 = 2.25 times the input) is kept for
# the weight gradient when it takes at most this many bytes; a larger one is recomputed from the
# input in the backward. Measured, 1 BLAS thread, keeping every V against none: BEGAN 32x32 n=32
# 0.360 -> 0.313 s/step (peak 130 -> 176 MB); 64x64 n=64 3.86 -> 3.51 s (1,022 -> 1,406 MB); 64x64
# n=128 10.7 -> 10.3 s for 2,064 -> 2,881 MB. With this limit the 64x64 layers of D (real and fake
# batches together, 72 MB at n=64) recompute: n=64 3.38 s at a peak of 1,076 MB, n=128 2,081 MB.
KEEP_V_BYTES = 64 * 2**20


_WINOGRAD_ARRAYS = {}


def _winograd_matrices(m, xp, dtype):
    """(B^T, G, A^T) of F(m x m, 3 x 3) as arrays of ``dtype`` on ``xp`` (made once, then cached)."""
    key = (m, backend.cache_key(xp), dtype)
    if key not in _WINOGRAD_ARRAYS:
        _WINOGRAD_ARRAYS[key] = tuple(xp.asarray(mat, dtype=dtype) for mat in _WINOGRAD[m])
    return _WINOGRAD_ARRAYS[key]


_KRON = {}


def _kron(mat):
    """M (x) M for a transform matrix M (r x c): (r*r, c*c), row (i, j) and column (k, l) holding
    M[i, k] M[j, l]. One GEMM with it applies M along the rows and the columns of every tile (or
    kernel) at once: the weight transform everywhere, the others in the device forms below. Made
    once per matrix object (the cached B^T, G and A^T)."""
    entry = _KRON.get(id(mat))
    if entry is None or entry[0] is not mat:
        r, c = mat.shape
        entry = _KRON[id(mat)] = (mat, (mat[:, None, :, None] * mat[None, :, None, :]).reshape(r * r, c * c))
    return entry[1]


@profiled("transform")
def _to_tiles(x, top, left, hp, wp, xp):
    """(hp, wp, N, C) work array: NCHW ``x`` moved to rows x columns x batch x channels, zero-padded
    (``top`` rows above, ``left`` columns before). The direct convs pad through it too (conv._padded).

    In this layout a tile row (all columns, images and channels) is one long contiguous vector,
    so each 1-D transform is a few large products. An input that already has this memory order
    (the output of a 3x3 conv, and elementwise ops of it) is copied without transposing.
    """
    n, c, h, w = x.shape
    out = _scratch(xp, "tiles", (hp, wp, n, c), x.dtype)
    key = _scratch_key(xp, "tiles", x.dtype)
    buffer, layout = _SCRATCH[key], (out.shape, top, left, h, w)
    zeroed = _TILES_ZEROED.pop(key, (None, None))  # only this function writes the buffer, inside the border:
    if (hp, wp) != (h, w):                          # while the layout stays, the border stays zero
        if zeroed[0] is not buffer or zeroed[1] != layout:  # (BEGAN 64x64, device: 45 of 81 fills skipped)
            out.fill(0)  # one pass for the border (four slabs would be four device operations)
        _TILES_ZEROED[key] = (buffer, layout)
    inner, xt = out[top:top + h, left:left + w], x.transpose(2, 3, 0, 1)
    backend.split_run(xp, lambda s: inner.__setitem__(s, xt[s]), h, x.size)  # a copy: NumPy's is 1 thread
    return out


def _gathered(xp):
    """Which form the 1-D transforms take on this backend: the one place the choice is made.

    On a GPU (CuPy, and the strict backend that stands in for it) every array operation is a
    kernel launch, and CuPy runs a small matrix broadcast against a stack as a pointer-array
    batched GEMM (three extra kernels) and copies strided operands and outputs: there each
    transform is one strided copy and one 2-D GEMM with the Kronecker product of the 1-D
    transforms (the *_gathered forms; BEGAN 64x64 device operations per step: 4,947 with the
    batched products, 2,835 with separable 2-D GEMMs, 2,1xx Kronecker). On the CPU, NumPy's
    batched matmul reads the strided tile views in place, and the gathered forms' copies (and
    the Kronecker GEMM's 3x the arithmetic) cost more than they save (1 BLAS thread: BEGAN 32x32
    n=32 0.63 s/step batched, 0.81 gathered; 64x64 n=64 8.2 and 11.1): there the *_batched forms.
    """
    return not backend.is_numpy(xp)


TILE_ROWS = 2  # tile rows the CPU input transform takes at a time (measured: 1 or 2 best, whole passes worst)


def _batched_matmul(xp, small, stack, out, axis):
    """out[...] = small @ stack, split along ``axis`` over the CPU cores (backend.split_run)."""
    def part(s):
        idx = (slice(None),) * axis + (s,)
        xp.matmul(small, stack[idx], out=out[idx])
    backend.split_run(xp, part, stack.shape[axis], stack.size)
    return out


@profiled("transform")
def _winograd_input(xt, bt, th, tw, xp, keep=False):
    """V = B^T d B for every a x a input tile d: (hp, wp, N, C) -> (a, a, th, tw, N, C), in a work
    array, or with ``keep`` in a new one (the forward's V, kept for the backward)."""
    a, (n, c) = bt.shape[0], xt.shape[2:]
    shape = (a, a, th, tw, n, c)
    v = xp.empty(shape, dtype=xt.dtype) if keep else _scratch(xp, "v", shape, xt.dtype)
    (_winograd_input_gathered if _gathered(xp) else _winograd_input_batched)(xt, bt, th, tw, xp, v)
    return v


def _winograd_input_gathered(xt, bt, th, tw, xp, v):
    """V = B^T d B for every a x a input tile d: (hp, wp, N, C) into v, (a, a, th, tw, N, C).

    Tile (t, u) starts at row t*m, column u*m; neighbouring tiles overlap by 2. One strided copy
    gathers every tile's a*a values, position (k, l) first, and one 2-D GEMM with B^T (x) B^T
    (a*a x a*a) transforms rows and columns at once: two device operations, where the separable
    form takes four and a batched product with a broadcast matrix more."""
    hp, wp, n, c = xt.shape
    a = bt.shape[0]
    m = a - 2
    s0, s1 = xt.strides[:2]
    gathered = _scratch(xp, "gather", (a, a, th, tw, n * c), xt.dtype)    # [k, l, t, u] = x[t*m + k, u*m + l]
    gathered[...] = xp.lib.stride_tricks.as_strided(xt, gathered.shape, (s0, s1, m * s0, m * s1, xt.itemsize))
    xp.matmul(_kron(bt), gathered.reshape(a * a, -1), out=v.reshape(a * a, -1))


def _winograd_input_batched(xt, bt, th, tw, xp, v):
    """V = B^T d B for every a x a input tile d: (hp, wp, N, C) into v, (a, a, th, tw, N, C).

    Tile (t, u) starts at row t*m, column u*m; neighbouring tiles overlap by 2. Rows first (one
    product per tile row over every column, image and channel), then columns, TILE_ROWS tile rows
    at a time: the rows' product is read back while still in cache (1 thread, against two whole
    passes: 64x64/64 channels, batch 32, 19.3 -> 13.9 ms; the BEGAN 64x64 n=64 step 4.36 -> 4.03 s).
    Runs of tile rows are split over the CPU cores, each with its own small buffer."""
    hp, wp, n, c = xt.shape
    a = bt.shape[0]
    m, nc, item = a - 2, n * c, xt.itemsize
    out = v.reshape(a, a, th, tw, nc).transpose(0, 2, 3, 1, 4)          # (a_i, th, tw, a_j, nc)

    def part(s):
        half = xp.empty((a, TILE_ROWS, wp, nc), dtype=xt.dtype)
        for t in range(s.start, s.stop, TILE_ROWS):
            r = min(TILE_ROWS, s.stop - t)
            rows = xp.lib.stride_tricks.as_strided(xt[t * m:], (r, a, wp * nc), (m * xt.strides[0], xt.strides[0], item))
            h = half[:, :r]
            xp.matmul(bt, rows, out=h.reshape(a, r, wp * nc).transpose(1, 0, 2))
            cols = xp.lib.stride_tricks.as_strided(h, (a, r, tw, a, nc), (h.strides[0], h.strides[1], m * h.strides[2], h.strides[2], item))
            xp.matmul(bt, cols, out=out[:, t:t + r])
    backend.split_run(xp, part, th, xt.size)


@profiled("transform")
def _winograd_input_adjoint(dv, bt, hp, wp, xp):
    """Adjoint of _winograd_input: B dV B^T per tile, summed where tiles overlap -> (hp, wp, N, C)."""
    return (_winograd_input_adjoint_gathered if _gathered(xp) else _winograd_input_adjoint_batched)(dv, bt, hp, wp, xp)


def _winograd_input_adjoint_gathered(dv, bt, hp, wp, xp):
    """Adjoint of _winograd_input: B dV B^T per tile, summed where tiles overlap -> (hp, wp, N, C).

    One GEMM with (B^T (x) B^T)^T gives every tile's a x a contribution; four strided additions
    put them in place: of a tile's a rows (columns) the first m tile the image without overlap,
    the last a - m = 2 fall on the next tile's first two, so each of the four (rows, columns)
    blocks is one addition that never writes an element twice (no scatter)."""
    a, _, th, tw, n, c = dv.shape
    m = a - 2
    nc = n * c
    kt = _kron(bt).T
    w = _scratch(xp, "spill", (a, a, th, tw, nc), dv.dtype)             # w[k, l, t, u]: tile (t, u)'s d[k, l]
    xp.matmul(kt, dv.reshape(a * a, -1), out=w.reshape(a * a, -1))
    dx = xp.empty((hp, wp, n, c), dtype=dv.dtype)
    dx.fill(0)
    flat = dx.reshape(hp, wp, nc)
    f0, f1 = flat.strides[:2]
    for k0, nk in ((0, m), (m, a - m)):
        for l0, nl in ((0, m), (m, a - m)):
            dest = xp.lib.stride_tricks.as_strided(flat[k0:, l0:], (th, nk, tw, nl, nc),
                                                   (m * f0, f0, m * f1, f1, dx.itemsize))
            dest += w[k0:k0 + nk, l0:l0 + nl].transpose(2, 0, 3, 1, 4)
    return dx


def _winograd_input_adjoint_batched(dv, bt, hp, wp, xp):
    """Adjoint of _winograd_input: B dV B^T per tile, summed where tiles overlap -> (hp, wp, N, C).

    Of each tile's a output columns (rows), the first m tile the image without
    overlap and are written in place; the last a - m = 2 fall on the next
    tile's first two and are added as two strided slices (no scatter).
    """
    a, _, th, tw, n, c = dv.shape
    m = a - 2
    b = bt.T
    nc = n * c
    per_tile = dv.reshape(a, a, th, tw, nc).transpose(0, 2, 3, 1, 4)   # (a_i, th, tw, a_j, nc)
    half = _scratch(xp, "half", (a, th, wp, nc), dv.dtype)
    _batched_matmul(xp, b[:m], per_tile, half[:, :, :tw * m].reshape(a, th, tw, m, nc), axis=1)
    half[:, :, tw * m:] = 0
    spill = _batched_matmul(xp, b[m:], per_tile, _scratch(xp, "spill", (a, th, tw, a - m, nc), dv.dtype), axis=1)
    for k in range(a - m):
        half[:, :, m + k:m + k + tw * m:m] += spill[:, :, :, k]
    rows = half.reshape(a, th, wp * nc).transpose(1, 0, 2)             # (th, a_i, wp*nc)
    dx = xp.empty((hp, wp, n, c), dtype=dv.dtype)
    _batched_matmul(xp, b[:m], rows, dx[:th * m].reshape(th, m, wp * nc), axis=0)
    dx[th * m:] = 0
    spill = _batched_matmul(xp, b[m:], rows, _scratch(xp, "spill", (th, a - m, wp * nc), dv.dtype), axis=0)
    for k in range(a - m):
        dx[m + k:m + k + th * m:m] += spill[:, k].reshape(th, wp, n, c)
    return dx


@profiled("transform")
def _winograd_output(mm, at, xp):
    """Y = A^T M A for every tile: (a, a, th, tw, N, O) -> (th*m, tw*m, N, O), a new array."""
    return (_winograd_output_gathered if _gathered(xp) else _winograd_output_batched)(mm, at, xp)


def _winograd_output_gathered(mm, at, xp):
    """Y = A^T M A for every tile: (a, a, th, tw, N, O) -> (th*m, tw*m, N, O), a new array.

    One 2-D GEMM with A^T (x) A^T (m*m x a*a) and one copy into the (rows, columns, N, O) layout.
    """
    a, _, th, tw, n, o = mm.shape
    m = at.shape[0]
    z = _scratch(xp, "z", (m, m, th, tw, n, o), mm.dtype)                # z[p, q, t, u] = Y[t*m + p, u*m + q]
    xp.matmul(_kron(at), mm.reshape(a * a, -1), out=z.reshape(m * m, -1))
    y = xp.empty((th, m, tw, m, n, o), dtype=mm.dtype)
    y[...] = z.transpose(2, 0, 3, 1, 4, 5)
    return y.reshape(th * m, tw * m, n, o)


def _winograd_output_batched(mm, at, xp):
    """Y = A^T M A for every tile: (a, a, th, tw, N, O) -> (th*m, tw*m, N, O), a new array."""
    a, _, th, tw, n, o = mm.shape
    m = at.shape[0]
    half = _scratch(xp, "half", (m, a, th, tw, n * o), mm.dtype)
    xp.matmul(at, mm.reshape(a, a * th * tw * n * o), out=half.reshape(m, -1))
    y = xp.empty((th, m, tw, m, n, o), dtype=mm.dtype)
    _batched_matmul(xp, at, half.transpose(0, 2, 3, 1, 4), y.reshape(th, m, tw, m, n * o).transpose(1, 0, 2, 3, 4), axis=1)
    return y.reshape(th * m, tw * m, n, o)


@profiled("transform")
def _winograd_output_adjoint(gy, at, th, tw, xp):
    """Adjoint of _winograd_output: dM = A dY A^T per tile, (th*m, tw*m, N, O) -> (a*a, P, O) work array."""
    return (_winograd_output_adjoint_gathered if _gathered(xp) else _winograd_output_adjoint_batched)(gy, at, th, tw, xp)


def _winograd_output_adjoint_gathered(gy, at, th, tw, xp):
    """Adjoint of _winograd_output: dM = A dY A^T per tile, (th*m, tw*m, N, O) -> (a*a, P, O) work array.

    As the forward: one copy that gathers each tile's m x m values, then one GEMM with (A^T (x) A^T)^T.
    """
    _, _, n, o = gy.shape
    m, a = at.shape
    gathered = _scratch(xp, "gather", (m, m, th, tw, n * o), gy.dtype)   # [p, q, t, u] = dY[t*m + p, u*m + q]
    gathered[...] = gy.reshape(th, m, tw, m, n * o).transpose(1, 3, 0, 2, 4)
    dm = _scratch(xp, "m", (a * a, th * tw * n, o), gy.dtype)
    xp.matmul(_kron(at).T, gathered.reshape(m * m, -1), out=dm.reshape(a * a, -1))
    return dm


def _winograd_output_adjoint_batched(gy, at, th, tw, xp):
    """Adjoint of _winograd_output: dM = A dY A^T per tile, (th*m, tw*m, N, O) -> (a*a, P, O) work array."""
    _, _, n, o = gy.shape
    m, a = at.shape
    half = _scratch(xp, "half", (m, a, th, tw, n * o), gy.dtype)
    _batched_matmul(xp, at.T, gy.reshape(th, m, tw, m, n * o).transpose(1, 0, 2, 3, 4), half.transpose(0, 2, 3, 1, 4), axis=1)
    dm = _scratch(xp, "m", (a * a, th * tw * n, o), gy.dtype)
    xp.matmul(at.T, half.reshape(m, -1), out=dm.reshape(a, -1))
    return dm


def _winograd_weight(weight, g):
    """U = G w G^T for every (o, c) kernel: (O, C, 3, 3) -> (a*a, O, C), one product with G (x) G."""
    o, c = weight.shape[:2]
    xp = _xp(weight)
    return xp.matmul(_kron(g), weight.reshape(o * c, 9).T).reshape(g.shape[0] ** 2, o, c)


def _winograd_weight_adjoint(du, g):
    """Adjoint of _winograd_weight: dw = G^T dU G, (a*a, O, C) -> (O, C, 3, 3)."""
    _, o, c = du.shape
    xp = _xp(du)
    return xp.matmul(du.reshape(du.shape[0], o * c).T, _kron(g)).reshape(o, c, 3, 3)


def _conv2d_winograd(x, weight, bias, ph, pw, m=None):
    """conv2d for 3x3 kernels at stride 1 by Winograd's minimal filtering F(m x m, 3 x 3).

    Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural Networks"
    (arXiv 1509.09308). The padded input is cut into a x a tiles d (a = m + 2)
    that overlap by 2 and advance by m; each gives an m x m output tile. With
    g the 3x3 kernel of output channel o and input channel c, and p a tile
    (image, tile row, tile column):

        forward                                   backward, from dY = dL/dY
        U[o,c]   = G g[o,c] G^T                   dM[o,p]  = A dY[o,p] A^T
        V[c,p]   = B^T d[c,p] B                   dV[c,p]  = sum_o U[o,c] (.) dM[o,p]
        M[o,p]   = sum_c U[o,c] (.) V[c,p]        dU[o,c]  = sum_p dM[o,p] (.) V[c,p]
        Y[o,p]   = A^T M[o,p] A                   dd[c,p]  = B dV[c,p] B^T  (summed where tiles overlap)
                                                  dg[o,c]  = G^T dU[o,c] G

    (.) is the elementwise product, so for each of the a*a positions (xi, nu)
    of a tile the sums over c, o and p are ordinary matrix products: a batch of
    a*a GEMMs (P x C)(C x O), (P x O)(O x C) and (C x P)(P x O) through _gemm,
    with P = N * tiles. The backward is the exact adjoint of the forward.
    Column 1 of A^T is all ones, so the bias is added to M[1, 1] (it then
    reaches each output of the tile once) and dbias is the sum of dM[1, 1].

    B^T, G and A^T for m = 2 (interpolation points 0, -1, 1) and m = 4 (0, +-1, +-2)
    are written out in _WINOGRAD above.

    Per output pixel F(m x m, 3 x 3) needs (m + 2)^2 / m^2 multiplications per
    (c, o) pair instead of 9: 4 for m = 2 (2.25x fewer), 2.25 for m = 4 (4x
    fewer). Odd sizes: the output is padded up to whole tiles (the input with
    zeros below and to the right) and cropped.

    Layout: the tiles live as (rows, columns, N, C) so each 1-D transform is a
    few large products with the small matrices (xp.matmul directly: they are
    data movement, timed with the transforms, not GEMMs of the convolution);
    the result is returned as an NCHW view of (H, W, N, O) memory, which
    elementwise ops keep and the next 3x3 conv reads without a transposing copy.

    Memory: the backward needs V for the weight gradient; the forward keeps it
    when it is at most KEEP_V_BYTES and otherwise the backward recomputes it
    from the input. Other temporaries live in reused work buffers.

    Rounding (float32, vs the direct conv; see tests/test_conv_fast.py): the
    transforms' larger coefficients of F(4x4) cost accuracy, so the result
    differs from im2col by more than float32 rounding of a direct sum but
    stays within WINOGRAD_RTOL of the output's scale (measurements there).
    """
    m = WINOGRAD_TILE if m is None else m
    xp = _xp(x, weight, bias)
    n, c, h, w = x.shape
    o = weight.shape[0]
    a = m + 2
    ho, wo = h + 2 * ph - 2, w + 2 * pw - 2
    th, tw = -(-ho // m), -(-wo // m)
    hp, wp = th * m + 2, tw * m + 2
    p = th * tw * n
    dtype = x.dtype
    bt, gm, at = _winograd_matrices(m, xp, dtype)
    u = _winograd_weight(weight.data, gm)
    keep = is_grad_enabled() and _wants(weight) and a * a * p * c * x.dtype.itemsize <= KEEP_V_BYTES
    v = _winograd_input(_to_tiles(x.data, ph, pw, hp, wp, xp), bt, th, tw, xp, keep).reshape(a * a, p, c)
    mm = _gemm(v, u.transpose(0, 2, 1), out=_scratch(xp, "m", (a * a, p, o), dtype))
    if bias is not None:
        row = mm[a + 1]
        row += bias.data  # (not mm[a + 1] += ...: on CuPy that is an add and a copy onto itself)
    out = _winograd_output(mm.reshape(a, a, th, tw, n, o), at, xp)[:ho, :wo].transpose(2, 3, 0, 1)
    kept = v if keep else None  # (not kept, v is a work buffer that the next conv overwrites)

    def backward(g):
        gy = g.transpose(2, 3, 0, 1)
        if (th * m, tw * m) != (ho, wo) or not gy.flags.c_contiguous:
            gy = xp.zeros((th * m, tw * m, n, o), dtype=g.dtype)
            gy[:ho, :wo] = g.transpose(2, 3, 0, 1)
        dm = _winograd_output_adjoint(gy, at, th, tw, xp)               # (a*a, P, O)
        del gy
        gb = dm[a + 1].sum(axis=0) if _wants(bias) else None
        gw = gx = None
        if _wants(weight):
            v = kept if keep else _winograd_input(_to_tiles(x.data, ph, pw, hp, wp, xp), bt, th, tw, xp).reshape(a * a, p, c)
            du = _gemm(dm.transpose(0, 2, 1), v)                       # (a*a, O, C)
            gw = _winograd_weight_adjoint(du, gm)
        if _wants(x):
            dv = _gemm(dm, u, out=_scratch(xp, "v", (a * a, p, c), g.dtype))
            dx = _winograd_input_adjoint(dv.reshape(a, a, th, tw, n, c), bt, hp, wp, xp)
            gx = dx[ph:ph + h, pw:pw + w].transpose(2, 3, 0, 1)
        return gx, gw, gb
    return Tensor.from_op(out, (x, weight, bias) if bias is not None else (x, weight), backward)
