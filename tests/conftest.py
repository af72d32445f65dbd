"""Shared test setup.

``pytest --backend numpy|strict|cupy`` (default numpy) chooses the backend every test starts on,
with the library's generator seeded; whatever backend a test switches to is switched back
afterwards. Tests compare with NumPy references through ``backend.to_host``, so they run
unchanged on any backend.

Tests about one backend's own behaviour carry a marker and are skipped on the others:

* ``numpy_only``: the test checks what the NumPy backend itself does (host arrays, host
  scalars), or exercises code that is host-only by design (data loading, plotting, the CLI).
* ``backend_agnostic``: the test switches backends itself (strict vs numpy comparisons,
  mixing errors), so it runs once, on the default run only.

``--backend cupy`` where no GPU answers stops at once with one line (a usage error).

On a device backend the test assertions of ``numpy.testing`` take device arrays as if
``backend.to_host`` had been called on them (the test's reference side is NumPy); the library
code under test still gets no such help, so a hidden host round trip in it still fails.
"""
import functools

import numpy as np
import pytest

from tinygan import backend
from tinygan.tensor import Tensor

_ASSERTIONS = ("assert_allclose", "assert_array_equal", "assert_equal", "assert_array_less",
               "assert_almost_equal", "assert_array_almost_equal", "assert_array_max_ulp")


def _hosted(v):
    if isinstance(v, Tensor):
        v = v.data
    if not backend.is_host(v):
        return backend.to_host(v)
    if isinstance(v, (list, tuple)) and any(not backend.is_host(e) or isinstance(e, Tensor) for e in v):
        return type(v)(_hosted(e) for e in v)
    return v


def _comparing_on_the_host(assertion):
    @functools.wraps(assertion)
    def compare(*args, **kwargs):
        return assertion(*(_hosted(a) for a in args), **{k: _hosted(v) for k, v in kwargs.items()})
    return compare


def pytest_addoption(parser):
    parser.addoption("--backend", default="numpy", choices=backend.BACKENDS,
                     help="backend every test starts on (default numpy)")


def pytest_configure(config):
    config.addinivalue_line("markers", "numpy_only: about the NumPy backend's own behaviour or "
                                       "host-only code; skipped under --backend strict/cupy")
    config.addinivalue_line("markers", "backend_agnostic: switches backends itself; runs only "
                                       "under the default --backend numpy")
    name = config.getoption("--backend")
    if name != "numpy":
        for assertion in _ASSERTIONS:
            setattr(np.testing, assertion, _comparing_on_the_host(getattr(np.testing, assertion)))
        try:
            backend.use(name)
        except backend.BackendError as e:
            raise pytest.UsageError(f"--backend {name}: {e}") from None
        finally:
            backend.use("numpy")


def pytest_collection_modifyitems(config, items):
    name = config.getoption("--backend")
    if name == "numpy":
        return
    for item in items:
        for marker, why in (("numpy_only", "about the NumPy backend or host-only code"),
                            ("backend_agnostic", "switches backends itself; runs under --backend numpy")):
            if item.get_closest_marker(marker) is not None:
                item.add_marker(pytest.mark.skip(reason=f"{marker}: {why}, not run under --backend {name}"))


@pytest.fixture(scope="session")
def backend_name(request):
    """The backend chosen with --backend."""
    return request.config.getoption("--backend")


@pytest.fixture(autouse=True)
def _chosen_backend(backend_name):
    backend.use(backend_name)
    backend.seed(0)
    yield
    backend.use(backend_name)
