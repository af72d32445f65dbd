"""Shared test setup: every test starts on the NumPy backend with the library's generator seeded,
and whatever backend a test switches to (strict, say) is switched back afterwards."""
import pytest

from tinygan import backend


@pytest.fixture(autouse=True)
def _numpy_backend():
    backend.use("numpy")
    backend.seed(0)
    yield
    backend.use("numpy")
