"""Devices (issue 10, part 4): GPU selection, caches keyed by device, dropout masks drawn on the device.

A fake ``cupy`` module stands in for a machine with two GPUs, so the selection logic and the
per-device caches are tested without one.
"""
import sys
import types

import numpy as np
import pytest

from tinygan import _strict, backend
from tinygan import functional as F
from tinygan.functional import winograd
from tinygan.tensor import Tensor

pytestmark = pytest.mark.backend_agnostic  # switches backends (and fakes cupy) itself


def _fake_cupy(count=2):
    current = {"device": 0}

    class Device:
        def __init__(self, i=None):
            self.id = current["device"] if i is None else i

        def use(self):
            current["device"] = self.id

        def synchronize(self):
            pass

    runtime = types.SimpleNamespace(getDeviceCount=lambda: count, getDevice=lambda: current["device"])
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=runtime, Device=Device)
    fake.zeros = np.zeros
    fake.empty = np.empty
    fake.asarray = np.asarray
    return fake, current


@pytest.fixture
def two_gpus(monkeypatch):
    fake, current = _fake_cupy(2)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    yield fake, current
    backend.use("numpy")


def test_use_cupy_selects_the_requested_device(two_gpus):
    fake, current = two_gpus
    assert backend.use("cupy", device=1) is fake
    assert backend.device() == 1 and current["device"] == 1
    backend.use("cupy")
    assert backend.device() == 0 and current["device"] == 0
    backend.use("numpy")
    assert backend.device() is None


def test_a_device_out_of_range_is_one_line_naming_the_visible_count(two_gpus):
    with pytest.raises(backend.BackendError) as info:
        backend.use("cupy", device=2)
    message = str(info.value)
    assert "device 2 does not exist: this process sees 2 GPUs (devices 0..1" in message
    assert "CUDA_VISIBLE_DEVICES" in message and len(message.splitlines()) == 1
    for bad in (-1, "1", True):
        with pytest.raises(backend.BackendError, match="device must be a GPU index"):
            backend.use("cupy", device=bad)


@pytest.mark.parametrize("name", ["numpy", "strict"])
def test_host_backends_refuse_a_device(name):
    with pytest.raises(backend.BackendError, match=f"backend '{name}' runs on the host and has no devices; device=1"):
        backend.use(name, device=1)
    assert backend.use(name, device=None) is not None  # None means "no choice": accepted


def test_cupy_without_a_gpu_is_one_line():
    if backend._cupy_package() is None:
        pytest.skip("cupy is not installed")
    try:
        backend.use("cupy", device=0)
    except backend.BackendError as e:
        assert len(str(e).splitlines()) == 1 and "GPU" in str(e)
    else:  # a machine with a GPU: selection worked
        assert backend.device() == 0
    finally:
        backend.use("numpy")


def test_scratch_buffers_and_winograd_matrices_are_kept_per_device(two_gpus):
    fake, current = two_gpus
    winograd.release_work_buffers()
    on0 = winograd._scratch(fake, "t", (4,), np.float32)
    current["device"] = 1
    on1 = winograd._scratch(fake, "t", (4,), np.float32)
    assert on1.base is not on0.base, "a GPU 0 buffer was handed out on GPU 1"
    assert backend.cache_key(fake) != (id(fake), 0)
    current["device"] = 0
    assert winograd._scratch(fake, "t", (4,), np.float32).base is on0.base  # GPU 0 keeps its own
    m0 = winograd._winograd_matrices(2, fake, np.float32)
    current["device"] = 1
    assert winograd._winograd_matrices(2, fake, np.float32)[0] is not m0[0]
    winograd.release_work_buffers()


def test_cache_key_of_host_modules_has_no_device():
    assert backend.cache_key(np) == (id(np), None)
    assert backend.cache_key(_strict.module) == (id(_strict.module), None)


# ---- dropout masks -------------------------------------------------------------------------------

def test_dropout_mask_is_made_on_the_device_not_copied_from_the_host(monkeypatch):
    backend.use("strict")
    x = Tensor(backend.xp().ones((4, 5), dtype=np.float32))

    def no_copy(*a, **k):
        raise AssertionError("dropout copied a host array to the device")
    monkeypatch.setattr(backend, "to_device", no_copy)
    out = F.dropout(x, 0.5)
    assert isinstance(out.data, _strict.StrictArray) and out.dtype == np.float32


@pytest.mark.parametrize("name", ["numpy", "strict"])
def test_dropout_masks_follow_from_the_seed_and_the_saved_generator_state(name):
    backend.use(name)
    x = Tensor(np.ones((6, 7), np.float32))

    def masks():
        return [backend.to_host(F.dropout(x, 0.3).data) for _ in range(3)]
    backend.seed(4)
    first = masks()
    backend.seed(4)
    assert all(np.array_equal(a, b) for a, b in zip(first, masks()))
    backend.seed(4)
    F.dropout(x, 0.3)
    state = backend.rng_state()  # a checkpoint taken after one step, resumed later
    F.dropout(x, 0.9)
    backend.set_rng_state(state)
    assert np.array_equal(backend.to_host(F.dropout(x, 0.3).data), first[1])
    assert not np.array_equal(first[0], first[1])
    kept = first[0] != 0
    np.testing.assert_allclose(first[0][kept], 1 / 0.7, rtol=1e-6)


def test_dropout_masks_agree_between_numpy_and_strict():
    backend.use("numpy")
    backend.seed(1)
    on_numpy = F.dropout(Tensor(np.ones((3, 8), np.float32)), 0.5).data
    backend.use("strict")
    backend.seed(1)
    on_strict = backend.to_host(F.dropout(Tensor(np.ones((3, 8), np.float32)), 0.5).data)
    np.testing.assert_array_equal(on_numpy, on_strict)
