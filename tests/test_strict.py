"""The strict emulation behaves like CuPy where a difference could change a result or hide a cost.

Each test here failed on the strict backend before it learned the behaviour (issue 10, part 3):
the names and keywords are CuPy's (read from the installed package), elementwise results are
C-contiguous, reductions and scalar indexing give 0-d arrays, out-of-range integer indices are
refused instead of wrapped, and a matmul into a non-contiguous ``out=`` is counted.
"""
import numpy as np
import pytest

from tinygan import _strict

pytestmark = pytest.mark.backend_agnostic  # builds StrictArrays itself, whatever --backend says

xp = _strict.module
S = _strict.StrictArray


@pytest.fixture
def cupy_api():
    api = _strict.cupy_api()
    if api is None:
        pytest.skip("cupy is not installed: the strict backend cannot read CuPy's API")
    return api


def _host(a):
    return a._a


# ---- names and keywords ----------------------------------------------------------------

def test_the_api_table_comes_from_the_installed_cupy(cupy_api):
    assert {"exp", "matmul", "where", "zeros", "lib"} <= cupy_api.names
    assert "vecdot" not in cupy_api.names and "insert" not in cupy_api.names  # NumPy 2 has them
    assert cupy_api.keywords("exp") >= {"out", "dtype", "casting"}  # a CuPy ufunc (Cython docstring)
    assert "where" not in cupy_api.keywords("exp")
    assert cupy_api.keywords("zeros") == {"shape", "dtype", "order"}  # a Python function (signature)


@pytest.mark.parametrize("name", ["insert", "vecdot", "geomspace"])
def test_a_module_function_cupy_lacks_is_refused(cupy_api, name):
    with pytest.raises(_strict.CupyAPIError, match=f"cupy.{name} does not exist in cupy"):
        getattr(xp, name)


def test_a_keyword_cupy_lacks_is_refused(cupy_api):
    a = S(np.ones(3))
    with pytest.raises(_strict.CupyAPIError, match="takes no keyword 'where'"):
        xp.exp(a, where=S(np.ones(3, bool)))
    with pytest.raises(_strict.CupyAPIError, match="takes no keyword 'like'"):
        xp.zeros((2,), like=np.ones(1))
    np.testing.assert_array_equal(_host(xp.exp(a, out=S(np.empty(3)))), np.exp(np.ones(3)))


def test_an_array_method_or_method_keyword_cupy_lacks_is_refused(cupy_api):
    a = S(np.ones((2, 3)))
    with pytest.raises(_strict.CupyAPIError, match="cupy.ndarray has no attribute 'resize'"):
        a.resize((3, 2))
    with pytest.raises(_strict.CupyAPIError, match="sum\\(\\) in cupy takes no keyword 'initial'"):
        a.sum(initial=1.0)
    with pytest.raises(_strict.CupyAPIError, match="takes no keyword 'where'"):
        a.mean(where=S(np.ones((2, 3), bool)))
    assert a.sum(axis=0, keepdims=True).shape == (1, 3)


def test_a_numpy_function_cupy_lacks_is_not_forwarded(cupy_api):
    a = S(np.arange(6.0))
    with pytest.raises(_strict.CupyAPIError, match=r"numpy.insert\(\) was called on a device array"):
        np.insert(a, 1, 5.0)
    with pytest.raises(_strict.CupyAPIError, match="takes no keyword 'initial'"):
        np.sum(a, initial=0.0)
    total = np.sum(a)  # CuPy has sum: forwarded, and the result stays a 0-d device array
    assert isinstance(total, S) and total.shape == ()


def test_a_numpy_ufunc_on_a_strict_array_is_checked_against_cupy(cupy_api):
    a = S(np.ones(3))
    with pytest.raises(_strict.CupyAPIError, match="takes no keyword 'where'"):
        np.exp(a, where=S(np.ones(3, bool)))


# ---- layouts -------------------------------------------------------------------------------

@pytest.mark.parametrize("op", [
    lambda a: a + 1, lambda a: 2 * a, lambda a: -a, lambda a: a > 0, lambda a: a * a,
    lambda a: xp.exp(a), lambda a: np.exp(a), lambda a: xp.maximum(a, 0),
    lambda a: xp.where(a > 0, a, 0), lambda a: xp.clip(a, 0, 1),
], ids=["add", "rmul", "neg", "gt", "mul", "xp.exp", "np.exp", "maximum", "where", "clip"])
def test_elementwise_results_are_c_contiguous_as_on_cupy(op):
    host = np.arange(24.0).reshape(2, 3, 4).transpose(2, 0, 1)  # NumPy would keep this order
    assert not host.flags.c_contiguous
    out = op(S(host))
    assert out.flags.c_contiguous, "CuPy allocates elementwise results C-contiguous"
    np.testing.assert_array_equal(_host(out), op(host) if not isinstance(op(host), S) else _host(op(host)))


# ---- 0-d results ----------------------------------------------------------------------------

@pytest.mark.parametrize("reduce", [
    lambda a: a.sum(), lambda a: a.max(), lambda a: xp.sum(a), lambda a: np.sum(a),
    lambda a: a[1, 2], lambda a: a.mean(axis=None),
], ids=["sum", "max", "xp.sum", "np.sum", "scalar index", "mean"])
def test_reductions_and_scalar_indexing_give_0d_device_arrays(reduce):
    r = reduce(S(np.arange(12.0).reshape(3, 4)))
    assert isinstance(r, S) and r.shape == ()


# ---- out-of-range indices ---------------------------------------------------------------

@pytest.mark.parametrize("index", [
    np.array([0, 3]), np.array([-4]), (slice(None), np.array([[1, 7]])), (Ellipsis, np.array([5])),
], ids=["too large", "too negative", "second axis", "after ellipsis"])
def test_out_of_range_integer_indices_are_refused_naming_the_range(index):
    a = S(np.zeros((3, 4)))
    with pytest.raises(IndexError, match=r"out of range for axis \d of size \d .*CuPy would wrap"):
        a[index]
    with pytest.raises(IndexError, match="CuPy would wrap"):
        a[index] = 1.0


def test_take_with_out_of_range_indices_is_refused():
    a = S(np.arange(5.0))
    with pytest.raises(IndexError, match=r"index 5 is out of range for axis 0 of size 5"):
        a.take(S(np.array([1, 5])))
    with pytest.raises(IndexError, match="CuPy would wrap"):
        xp.take(a, S(np.array([-6])))
    np.testing.assert_array_equal(_host(a.take(S(np.array([4, -5])))), [4.0, 0.0])


def test_in_range_integer_indices_still_work():
    a = S(np.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(_host(a[S(np.array([2, -3]))]), np.arange(12.0).reshape(3, 4)[[2, -3]])


# ---- matmul into a non-contiguous out= -----------------------------------------------------

def test_matmul_into_a_non_contiguous_out_is_counted_as_a_temporary_and_a_copy():
    a, b = S(np.arange(6.0).reshape(2, 3)), S(np.arange(12.0).reshape(3, 4))
    _strict.reset_transfers()
    out = S(np.empty((4, 2)))
    xp.matmul(a, b, out=out.T)  # a transposed view: not C-contiguous
    np.testing.assert_array_equal(_host(out).T, np.arange(6.0).reshape(2, 3) @ np.arange(12.0).reshape(3, 4))
    assert _strict.matmul_out_copies == 1 and _strict.matmul_out_copy_bytes == 8 * 8
    xp.matmul(a, b, out=S(np.empty((2, 4))))  # a contiguous out costs nothing extra
    assert _strict.matmul_out_copies == 1
    _strict.reset_transfers()
    assert _strict.matmul_out_copies == 0
