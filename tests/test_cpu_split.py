"""The CPU split (backend.split_run): ops split over threads give bit for bit the single-thread result.

Every op that splits its work (ELU and its derivative, the Winograd transforms, the tile copy, im2col
and col2im)
splits along an axis it does not reduce over, so each element is computed by the same instructions
as without the split. Tests run on tiny shapes, so the threshold is lowered to split them all.
"""
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

import tinygan as tg
from tinygan import _cpu, backend, functional as F

pytestmark = pytest.mark.numpy_only  # devices never split (one kernel per op)


def _run(shape, cin, cout, padding):
    rng = np.random.default_rng(3)
    x = tg.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)
    w = tg.tensor(rng.standard_normal((cout, cin, 3, 3)).astype(np.float32) * 0.3, requires_grad=True)
    b = tg.tensor(rng.standard_normal(cout).astype(np.float32), requires_grad=True)
    w2 = tg.tensor(rng.standard_normal((cout, cout, 3, 3)).astype(np.float32) * 0.3, requires_grad=True)
    y = F.elu(F.conv2d(F.elu(x), w, b, padding=padding))
    y = F.conv2d(y, w2, stride=2, padding=1)                 # im2col and col2im, also split
    (y * tg.tensor(rng.standard_normal(y.shape).astype(np.float32))).sum().backward()
    return [a.copy() for a in (y.data, x.grad, w.grad, b.grad, w2.grad)]


@pytest.mark.parametrize("shape, cin, cout, padding", [((2, 3, 9, 7), 3, 4, 1), ((3, 2, 12, 12), 2, 5, 0)])
def test_split_over_threads_is_bit_identical(monkeypatch, shape, cin, cout, padding):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert backend.cpu_workers(np) == 1
    alone = _run(shape, cin, cout, padding)
    calls = []
    real = backend.split_run

    def counting(xp, fn, length, size):
        calls.append(length)
        return real(xp, fn, length, size)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    monkeypatch.setattr(_cpu, "SPLIT_MIN_SIZE", 0)
    monkeypatch.setattr(backend, "split_run", counting)
    split = _run(shape, cin, cout, padding)
    assert backend.cpu_workers(np) == 3
    assert len(calls) >= 8  # ELU twice each way, the transforms, the tile copies
    for a, b in zip(alone, split):
        np.testing.assert_array_equal(a, b)


def test_split_covers_the_range_once(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    monkeypatch.setattr(_cpu, "SPLIT_MIN_SIZE", 0)
    seen = np.zeros(10, dtype=int)

    def fn(part):
        seen[part] += 1
    backend.split_run(np, fn, 10, 10)
    assert seen.tolist() == [1] * 10


def test_devices_and_small_ops_are_not_split(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    parts = []
    backend.split_run(np, parts.append, 100, _cpu.SPLIT_MIN_SIZE - 1)   # too small to pay
    assert parts == [slice(0, 100)]
    with backend.using("strict"):
        assert backend.cpu_workers(backend.xp()) == 1


_HEAP_PROBE = """
import os
import platform
import subprocess
import sys

import numpy as np
from tinygan import _malloc, backend
a = np.ones(40 << 18, dtype=np.float32)       # 40 MB: above glibc's largest default mmap threshold
addr = a.ctypes.data
for line in open("/proc/self/maps"):
    lo, hi = (int(v, 16) for v in line.split()[0].split("-"))
    if lo <= addr < hi:
        print(_malloc.TUNED, "[heap]" in line)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="the host allocator tuning is glibc's mallopt")
@pytest.mark.parametrize("env, expected", [({}, "True True"), ({"TINYGAN_MALLOC": "default"}, "False False")])
def test_large_host_blocks_come_from_the_reused_heap(env, expected):
    """With the tuning, a 40 MB array lives in malloc's heap (freed blocks are reused, no fresh page
    faults each step); TINYGAN_MALLOC=default leaves glibc's default, a fresh mmap per block."""
    out = subprocess.run([sys.executable, "-c", _HEAP_PROBE], capture_output=True, text=True, check=True,
                         env=dict(os.environ, **env))
    assert out.stdout.split() == expected.split()
