"""The device-operation counter: what CuPy would launch, counted on the strict backend."""
import numpy as np
import pytest

from tinygan import _strict, backend
from tinygan.tools import bench

pytestmark = pytest.mark.backend_agnostic  # switches to strict itself


@pytest.fixture
def xp():
    backend.use("strict")
    _strict.reset_ops()
    yield backend.xp()
    backend.use("numpy")


def counts(fn):
    _strict.reset_ops()
    fn()
    return dict(_strict.ops)


def test_each_array_call_operator_and_assignment_is_one_operation(xp):
    a = xp.asarray(np.ones((4, 6), np.float32))
    b = xp.asarray(np.ones((6, 3), np.float32))
    assert counts(lambda: xp.exp(a)) == {"exp": 1}
    assert counts(lambda: a + 1) == {"operator add": 1}
    assert counts(lambda: a.__iadd__(1)) == {"in-place iadd": 1}
    assert counts(lambda: a.__setitem__((slice(0, 2),), 0)) == {"setitem": 1}
    assert counts(lambda: xp.matmul(a, b)) == {"matmul": 1}
    assert counts(lambda: a.sum()) == {"ndarray.sum": 1}
    assert counts(lambda: a.get()) == {"transfer to host": 1}


def test_views_and_allocations_cost_nothing_but_copies_do(xp):
    a = xp.asarray(np.ones((4, 6), np.float32))
    assert counts(lambda: (a.reshape(6, 4), a[1:3], a.T, xp.empty((3, 3)), xp.asarray(a))) == {}
    assert counts(lambda: a.T.reshape(24)) == {"ndarray.reshape": 1}          # a transposed reshape copies
    assert counts(lambda: a[xp.asarray(np.array([0, 2]))]) == {"transfer to device": 1, "getitem (gather)": 1}
    assert counts(lambda: xp.ascontiguousarray(a)) == {}
    assert counts(lambda: xp.ascontiguousarray(a.T)) == {"ascontiguousarray": 1}


def test_the_matmul_patterns_cupy_expands_are_counted_apart(xp):
    stack = xp.asarray(np.ones((5, 4, 6), np.float32))
    small = xp.asarray(np.ones((6, 6), np.float32))
    expanded = counts(lambda: xp.matmul(small, stack.transpose(0, 2, 1)))     # broadcast, and a (6,4) view stack
    assert expanded["matmul"] == 1
    assert expanded["matmul: broadcast operand (pointer-array batched GEMM)"] == 3
    gathered = counts(lambda: xp.matmul(stack[:, :, ::2], xp.asarray(np.ones((5, 3, 2), np.float32))))
    assert gathered.get("matmul: non-contiguous operand copied") == 1
    out = xp.zeros((6, 4), np.float32).T
    assert counts(lambda: xp.matmul(xp.asarray(np.ones((4, 6), np.float32)), small, out=out)).get(
        "matmul: non-contiguous out= (temporary and copy)") == 1


def test_a_training_steps_count_does_not_depend_on_width_or_batch():
    a = bench.device_ops(dict(kind="began", image_size=32, n=32, batch=16))
    b = bench.device_ops(dict(kind="began", image_size=32, n=16, batch=4))
    assert a == b and sum(a.values()) > 1000
    assert backend.current() == "numpy"   # put back as it was


def test_the_benchmark_reports_device_operations(capsys):
    assert bench.main(["--only", "mlp_mnist", "--steps", "1", "--warmup", "0", "--ops", "--json"]) == 0
    out = capsys.readouterr().out
    import json
    row = json.loads(out.splitlines()[1])
    assert row["device_ops"] == sum(row["device_ops_by_kind"].values()) > 100
    assert "device operations per training step" in out
