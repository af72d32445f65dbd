"""Bad arguments to the engine's public API are one clear error at entry (issue 11, cases 5 and 6).

Each row failed before: a ZeroDivisionError or broadcast error from deep inside an op, or no
error at all (a lambda dropped from Sequential, an integer tensor that "requires grad", a
zero-channel conv, out-of-range labels turned into all-zero one-hot rows).
"""
import numpy as np
import pytest

from tinygan import backend, nn
from tinygan import functional as F
from tinygan.tensor import Tensor


def _x():
    return Tensor(np.ones((1, 3, 8, 8), np.float32))


def _w(*shape):
    return Tensor(np.ones(shape, np.float32))


@pytest.mark.parametrize("call, error, words", [
    (lambda: nn.Conv2d(3, 4, 3, stride=0), ValueError, "Conv2d: stride must be positive, got 0"),
    (lambda: nn.Conv2d(3, 4, 3, padding=-1), ValueError, "Conv2d: padding must be at least 0, got -1"),
    (lambda: nn.Conv2d(3, 4, 0), ValueError, "Conv2d: kernel_size must be positive, got 0"),
    (lambda: F.conv2d(_x(), _w(4, 3, 3, 3), stride=0), ValueError, "conv2d: stride must be positive, got 0"),
    (lambda: F.conv2d(_x(), _w(4, 3, 3, 3), stride=(1, 0)), ValueError, "conv2d: stride must be positive"),
    (lambda: F.conv2d(_x(), _w(4, 3, 3, 3), padding=-1), ValueError, "conv2d: padding must be at least 0, got -1"),
    (lambda: F.conv2d(_x(), _w(4, 3, 3, 3), stride=True), TypeError, "stride must be an int or a pair of ints"),
    (lambda: F.conv_transpose2d(_x(), _w(3, 4, 3, 3), stride=0), ValueError,
     "conv_transpose2d: stride must be positive, got 0"),
    (lambda: F.conv_transpose2d(_x(), _w(3, 4, 3, 3), padding=-2), ValueError,
     "conv_transpose2d: padding must be at least 0, got -2"),
    (lambda: F.conv_transpose2d(_x(), _w(3, 4, 3, 3), stride=2, output_padding=-1), ValueError,
     "output_padding must be at least 0"),
    (lambda: nn.ConvTranspose2d(3, 4, 3, stride=0), ValueError, "ConvTranspose2d: stride must be positive"),
    (lambda: F.avg_pool2d(_x(), 0), ValueError, "avg_pool2d: kernel_size must be positive, got 0"),
    (lambda: F.avg_pool2d(_x(), 2, stride=0), ValueError, "avg_pool2d: stride must be positive, got 0"),
    (lambda: F.avg_pool2d(_x(), 2, padding=-1), ValueError, "avg_pool2d: padding must be at least 0, got -1"),
    (lambda: F.avg_pool2d(_x(), 2, padding=2), ValueError,
     "avg_pool2d: padding 2 must be at most half the kernel size 2"),
    (lambda: nn.Conv2d(3, 0, 3), ValueError, "Conv2d: out_channels must be a positive int, got 0"),
    (lambda: nn.Conv2d(-3, 4, 3), ValueError, "Conv2d: in_channels must be a positive int, got -3"),
    (lambda: nn.Conv2d(3, 4.0, 3), TypeError, "Conv2d: out_channels must be an int, got float 4.0"),
    (lambda: nn.ConvTranspose2d(3, 0, 3), ValueError, "ConvTranspose2d: out_channels must be a positive int"),
    (lambda: nn.Linear(3, 0), ValueError, "Linear: out_features must be a positive int, got 0"),
    (lambda: nn.Linear(-1, 3), ValueError, "Linear: in_features must be a positive int, got -1"),
    (lambda: nn.Embedding(0, 4), ValueError, "Embedding: num_embeddings must be a positive int, got 0"),
    (lambda: nn.BatchNorm2d(0), ValueError, "BatchNorm2d: num_features must be a positive int, got 0"),
    (lambda: nn.Sequential(nn.ReLU(), lambda t: t), TypeError,
     "Sequential: argument 1 is a function"),
    (lambda: nn.Sequential(F.relu), TypeError, "not an nn.Module"),
    (lambda: Tensor(np.arange(3), requires_grad=True), TypeError,
     "only floating point tensors can require gradients; this tensor has dtype int64"),
    (lambda: setattr(Tensor(np.arange(3)), "requires_grad", True), TypeError,
     "only floating point tensors can require gradients"),
    (lambda: nn.Parameter(np.array([1, 2], np.int32)), TypeError, "dtype int32"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_argument_is_one_clear_error(call, error, words):
    with pytest.raises(error) as info:
        call()
    assert words in str(info.value)
    assert len(str(info.value).splitlines()) == 1


def test_valid_edge_arguments_still_work():
    assert F.avg_pool2d(_x(), 3, padding=1).shape == (1, 3, 3, 3)  # padding = kernel // 2 is allowed
    assert nn.Conv2d(3, 1, 1)(_x()).shape == (1, 1, 8, 8)
    assert Tensor(np.ones(2, np.float64), requires_grad=True).requires_grad
    assert not Tensor(np.arange(3)).requires_grad


# ---- labels and indices out of range --------------------------------------------------------

@pytest.mark.numpy_only  # host labels are checked; device labels are checked where they come from
@pytest.mark.parametrize("labels", [np.array([0, 10]), np.array([-1, 3]), [3, 11]], ids=["10", "-1", "list"])
def test_one_hot_and_embedding_refuse_labels_out_of_range_on_the_host(labels):
    with pytest.raises(IndexError, match=r"one_hot: labels: -?1[01]? is out of range for 10 classes \(expected 0..9"):
        F.one_hot(np.asarray(labels), 10)
    weight = nn.Embedding(10, 4).weight
    with pytest.raises(IndexError, match=r"embedding: indices: .* is out of range for 10 classes"):
        F.embedding(np.asarray(labels), weight)


def test_check_indices_is_the_public_host_side_check():
    F.check_indices(np.array([0, 9, 3]), 10)
    F.check_indices([], 10)
    with pytest.raises(IndexError, match=r"MNIST labels: 12 is out of range for 10 classes \(expected 0..9, got values 0..12\)"):
        F.check_indices(np.array([0, 12]), 10, "MNIST labels")
    with pytest.raises(ValueError, match="labels must be integers, got dtype float64"):
        F.check_indices(np.array([0.0, 1.0]), 10)
    with pytest.raises(ValueError, match="num_classes must be a positive int, got 0"):
        F.check_indices(np.array([0]), 0)


@pytest.mark.backend_agnostic
def test_check_indices_on_a_device_array_costs_one_explicit_transfer():
    from tinygan import _strict
    backend.use("strict")
    labels = backend.to_device(np.array([0, 3, 12]))
    _strict.reset_transfers()
    with pytest.raises(IndexError, match="12 is out of range for 10 classes"):
        F.check_indices(labels, 10)
    assert _strict.transfers == 1
    # inside a step, device labels are not synchronised on: one_hot makes no transfer
    _strict.reset_transfers()
    F.one_hot(backend.to_device(np.array([0, 3])), 10)
    assert _strict.transfers == 0
