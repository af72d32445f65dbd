"""The engine: graph walk, accumulation, no_grad/detach, errors, dtypes, backends."""
import importlib
import sys

import numpy as np
import pytest

import tinygan as tg
from tinygan import backend, nn, optim
from tinygan import functional as F

TOL = dict(eps=1e-6, atol=1e-7, rtol=1e-5)
tensor_module = importlib.import_module("tinygan.tensor")



def T(a, requires_grad=True, dtype=np.float64):
    return tg.Tensor(np.array(a, dtype=dtype), requires_grad=requires_grad)


def normal(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


# ---- the graph walk ----------------------------------------------------------------

def test_chain_5000_ops_deep_has_no_recursion_error():
    depth = 5000
    assert depth > sys.getrecursionlimit()  # a recursive walk would fail here
    x = T([0.5, -1.0])
    y = x
    for i in range(depth):
        y = y * 1.0001 if i % 2 else y + 0.001
    y.sum().backward()
    np.testing.assert_allclose(x.grad, np.full(2, 1.0001 ** (depth // 2)), rtol=1e-10)


def test_diamond_gradients_are_complete_before_use():
    """b feeds y directly and through t: both paths must reach b (d(2 b^2)/db = 4 b)."""
    b = T([3.0, -2.0])
    t = b * 2.0
    y = b * t
    y.backward(np.ones(2))
    np.testing.assert_allclose(b.grad, [12.0, -8.0])


REUSE = [
    ("short and long path", lambda x: x * F.exp(x * 2.0) + x),
    ("long path first", lambda x: F.exp(F.tanh(x) * 3.0) * x),
    ("shared intermediate", lambda x: (lambda h: h * h + F.sigmoid(h) * x)(F.tanh(x) + x)),
    ("three uses at three depths", lambda x: (lambda a: (lambda b: b * a * x)(F.exp(a)))(x * x)),
    ("reused reduction", lambda x: (lambda s: x * s + s * s)(F.sum(x * x))),
    ("leaf listed before its longer path", lambda x: x * F.exp(x)),
    ("intermediate listed before its longer path", lambda x: (lambda h: h * F.exp(h * 0.5))(F.tanh(x))),
]


@pytest.mark.parametrize("name,fn", REUSE, ids=[name for name, _ in REUSE])
def test_graphs_with_reuse_pass_gradcheck(name, fn):
    x = T(normal((3,), 1) * 0.5)
    assert tg.gradcheck(fn, (x,), **TOL)


def _random_dag(seed):
    """A random graph over two inputs: each node combines one or two earlier nodes, so paths of
    every length meet again downstream, in every order of the op's arguments."""
    r = np.random.default_rng(seed)
    unary = [F.tanh, F.sigmoid, lambda t: t * 0.5, F.neg]
    binary = [F.add, F.mul, F.sub, lambda a, b: F.tanh(a) * b]

    def fn(x, y):
        nodes = [x, y]
        plan = np.random.default_rng(seed)
        for _ in range(14):
            if plan.random() < 0.35:
                nodes.append(unary[plan.integers(len(unary))](nodes[plan.integers(len(nodes))]))
            else:
                i, j = plan.integers(len(nodes), size=2)
                nodes.append(binary[plan.integers(len(binary))](nodes[i], nodes[j]))
        return F.stack(nodes[-4:])
    return fn, T(r.standard_normal(3) * 0.5), T(r.standard_normal(3) * 0.5)


@pytest.mark.parametrize("seed", range(8))
def test_random_dags_pass_gradcheck(seed):
    fn, x, y = _random_dag(seed)
    assert tg.gradcheck(fn, (x, y), **TOL)


def test_tensor_used_twice_in_one_op():
    x = T([1.5, -2.0])
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * np.array([1.5, -2.0]))
    z = T([1.0, 2.0])
    (z + z).sum().backward()
    np.testing.assert_allclose(z.grad, [2.0, 2.0])


def test_gradient_accumulates_across_backward_calls():
    x = T([1.0, 2.0, 3.0])
    (x * 3.0).sum().backward()
    (x * x).sum().backward()  # a new forward: a new graph
    np.testing.assert_allclose(x.grad, 3.0 + 2 * np.array([1.0, 2.0, 3.0]))
    x.zero_grad()
    assert x.grad is None


def test_retain_graph_allows_a_second_backward():
    x = T([1.0, 2.0])
    loss = (F.exp(x) * 2.0).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_allclose(x.grad, 4 * np.exp([1.0, 2.0]))


def test_backward_through_a_freed_graph_raises():
    """Without retain_graph the graph is freed: a second pass must not silently stop short."""
    x = T([1.0, 2.0])
    h = F.exp(x)
    first = (h * 2.0).sum()
    second = (h * 3.0).sum()  # shares h with first
    first.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        second.backward()
    np.testing.assert_allclose(x.grad, 2 * np.exp([1.0, 2.0]))  # the first pass alone


def test_backward_frees_the_graph():
    x = T([1.0])
    y = F.exp(x) * 2.0
    assert not y.is_leaf and len(y._parents) == 1  # the constant 2.0 is no parent
    y.backward(np.ones(1))
    assert y._parents == () and y.is_leaf


def test_leaf_gradients_are_owned_writable_arrays():
    """In-place edits of one .grad (clipping, scaling) must work and touch nothing else."""
    a, b = T([1.0, 2.0]), T([3.0, 4.0])
    (a + b).sum().backward()  # add hands the same array to both; sum's backward is a broadcast view
    assert a.grad is not b.grad
    a.grad *= 0.5
    np.testing.assert_array_equal(a.grad, [0.5, 0.5])
    np.testing.assert_array_equal(b.grad, [1.0, 1.0])
    upstream = np.array([1.0, 1.0])
    c = T([0.0, 0.0])
    (c * 1.0).backward(upstream)
    c.grad *= 3
    np.testing.assert_array_equal(upstream, [1.0, 1.0])  # the caller's array is not the gradient


def test_leaf_backward():
    x = T([1.0, 2.0])
    x.backward(np.array([3.0, 4.0]))
    np.testing.assert_array_equal(x.grad, [3.0, 4.0])


# ---- no_grad and detach --------------------------------------------------------------

def test_no_grad_records_nothing():
    x = T([1.0, 2.0])
    assert tg.is_grad_enabled()
    with tg.no_grad():
        assert not tg.is_grad_enabled()
        y = F.exp(x) * 2.0 + x
        z = F.conv2d(T(normal((1, 1, 3, 3), 2)), T(normal((1, 1, 2, 2), 3)))
    assert tg.is_grad_enabled()
    for t in (y, z):
        assert not t.requires_grad and t._parents == () and t._backward is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_no_grad_restores_state_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with tg.no_grad():
            1 / 0
    assert tg.is_grad_enabled()
    with tg.no_grad():
        with tg.no_grad():
            pass
        assert not tg.is_grad_enabled()  # nested blocks restore the outer state
    assert tg.is_grad_enabled()


def test_detach_cuts_the_graph():
    x = T([1.0, 2.0])
    h = x * 3.0
    d = h.detach()
    assert not d.requires_grad and d.is_leaf
    assert d.data is h.data  # shares the data, as torch's detach
    loss = (d * x).sum()
    loss.backward()
    np.testing.assert_allclose(x.grad, [3.0, 6.0])  # only the direct path; not 2 * 3 x


# ---- backward's errors -------------------------------------------------------------------

def test_backward_on_non_scalar_without_grad():
    y = T(np.ones((2, 3))) * 2.0
    with pytest.raises(RuntimeError, match=r"one-element tensor.*\(2, 3\)"):
        y.backward()


def test_backward_on_tensor_not_requiring_grad():
    y = T([1.0, 2.0], requires_grad=False) * 2.0
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_backward_with_mismatched_gradient_shape():
    y = T(np.ones((2, 3))) * 2.0
    with pytest.raises(ValueError, match=r"gradient shape \(3, 2\) does not match tensor shape \(2, 3\)"):
        y.backward(np.ones((3, 2)))


def test_item_on_non_scalar():
    with pytest.raises(ValueError, match=r"one element.*\(2,\)"):
        T([1.0, 2.0]).item()
    assert T([[2.5]]).item() == 2.5


# ---- broadcasting -------------------------------------------------------------------------

@pytest.mark.parametrize("sa,sb", [
    ((3, 1, 4), (5, 4)),
    ((2, 3, 4, 4), (1, 3, 1, 1)),
    ((4,), ()),
    ((1, 1), (3, 1, 2)),
], ids=str)
def test_broadcast_gradients_are_reduced_to_each_input_shape(sa, sb):
    a, b = T(normal(sa, 4)), T(normal(sb, 5))
    out = a * b
    g = normal(out.shape, 6)
    out.backward(g)
    assert a.grad.shape == sa and b.grad.shape == sb
    da = g * np.broadcast_to(b.numpy(), out.shape)
    db = g * np.broadcast_to(a.numpy(), out.shape)

    def reduce_to(full, shape):
        lead = full.ndim - len(shape)
        full = full.sum(axis=tuple(range(lead)))
        return full.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True).reshape(shape)
    np.testing.assert_allclose(a.grad, reduce_to(da, sa), rtol=1e-12)
    np.testing.assert_allclose(b.grad, reduce_to(db, sb), rtol=1e-12)


def test_unbroadcast_directly():
    g = np.ones((2, 3, 4))
    np.testing.assert_array_equal(tensor_module.unbroadcast(g, (3, 1)), np.full((3, 1), 8.0))
    np.testing.assert_array_equal(tensor_module.unbroadcast(g, ()), np.array(24.0))
    assert tensor_module.unbroadcast(g, (2, 3, 4)) is g


# ---- comparisons ---------------------------------------------------------------------------

@pytest.mark.parametrize("op,ref", [
    (lambda a, b: a < b, np.less), (lambda a, b: a <= b, np.less_equal),
    (lambda a, b: a > b, np.greater), (lambda a, b: a >= b, np.greater_equal),
    (lambda a, b: a == b, np.equal), (lambda a, b: a != b, np.not_equal),
], ids=["lt", "le", "gt", "ge", "eq", "ne"])
def test_comparisons_have_no_gradient(op, ref):
    a, b = T([1.0, 2.0, 3.0]), T([2.0, 2.0, 2.0])
    out = op(a, b)
    assert isinstance(out, tg.Tensor)
    assert not out.requires_grad and out.is_leaf and out.dtype == bool
    np.testing.assert_array_equal(out.numpy(), ref(a.numpy(), b.numpy()))
    np.testing.assert_array_equal(op(a, 2.0).numpy(), ref(a.numpy(), 2.0))


@pytest.mark.parametrize("op", [
    lambda a, x: a + x, lambda a, x: a - x, lambda a, x: a * x, lambda a, x: a / x,
    lambda a, x: a @ x, lambda a, x: a ** x,
], ids=["+", "-", "*", "/", "@", "**"])
def test_ndarray_on_the_left_defers_to_the_tensor(op):
    # the backend's own array type on the left (numpy.ndarray, the strict or cupy array)
    host = np.random.default_rng(14).uniform(0.5, 2.0, (3, 3))
    a = backend.to_device(host)
    x = T(normal((3, 3), 15))
    out = op(a, x)
    assert isinstance(out, tg.Tensor) and out.requires_grad
    np.testing.assert_allclose(out.numpy(), op(host, x.numpy()), rtol=1e-12)
    assert tg.gradcheck(lambda x: op(a, x), (x,), **TOL)


def test_tensors_hash_by_identity():
    a, b = T([1.0]), T([1.0])
    assert len({a, b}) == 2 and {a: 1}[a] == 1


# ---- float32 stays float32 --------------------------------------------------------------------

def test_float32_training_keeps_float32_end_to_end():
    """Every activation, every gradient passed between ops, every leaf gradient and optimiser state."""
    backend.seed(3)
    conv = nn.Conv2d(1, 4, 3, stride=2, padding=1)
    bn = nn.BatchNorm2d(4)
    deconv = nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1)
    lin = nn.Linear(2 * 4 * 4, 3)
    emb = nn.Embedding(5, 3)
    params = conv.parameters() + bn.parameters() + deconv.parameters() + lin.parameters() + emb.parameters()
    x = tg.tensor(backend.randn(2, 1, 4, 4))
    assert x.dtype == np.float32
    labels = backend.to_device(np.array([1, 3]))  # constants live on the backend under test

    h = F.elu(conv(x))                                  # (2, 4, 2, 2)
    h = bn(h)
    h = F.leaky_relu(deconv(h), 0.2)                    # (2, 2, 4, 4)
    h = F.upsample_nearest(F.avg_pool2d(h, 2), 2)
    h = F.dropout(h, 0.25)
    logits = lin(F.flatten(h, 1)) + emb(labels)         # (2, 3)
    extra = (F.sigmoid(logits) * 0.5 + 1.0 - F.tanh(logits) ** 2 + F.softplus(logits) / 3.0
             + F.logsigmoid(logits) + F.exp(logits * 0.1) + F.sqrt(F.abs(logits) + 1.0))
    loss = (F.binary_cross_entropy_with_logits(logits, backend.to_device(np.ones((2, 3), dtype=np.float32)))
            + F.mse_loss(extra, backend.to_device(np.zeros((2, 3), dtype=np.float32)))
            + F.l1_loss(F.clip(logits, -1, 1), 0.5) + F.max(logits) * 0.1
            + F.mean(F.concat([logits, -logits], axis=1) ** 2)
            + F.log(F.sum(F.relu(logits)) + 1.0))

    nodes = tensor_module._topological_order(loss)
    assert len(nodes) > 40
    for node in nodes:
        assert node.dtype == np.float32, node
    seen = []
    for node in nodes:  # record the dtype of every gradient each op's backward hands on
        if node._backward is not None:
            inner = node._backward

            def spy(g, inner=inner, node=node):
                assert g.dtype == np.float32, f"upstream gradient of {node} is {g.dtype}"
                grads = list(inner(g))
                seen.extend((node, pg.dtype) for pg in grads if pg is not None)
                return grads
            node._backward = spy
    loss.backward()
    assert seen and all(dt == np.float32 for _, dt in seen), [s for s in seen if s[1] != np.float32]
    for p in params:
        assert p.grad is not None and p.grad.dtype == np.float32
    for buf in bn.state_dict().values():
        assert buf.dtype == np.float32

    opt = optim.Adam(params, lr=1e-3, weight_decay=1e-4)
    opt.step()
    for p, state in zip(params, opt.state):
        assert p.dtype == np.float32
        assert state["exp_avg"].dtype == np.float32 and state["exp_avg_sq"].dtype == np.float32
        assert isinstance(state["step"], int)


# ---- backends must not be mixed ----------------------------------------------------------------

@pytest.fixture
def numpy_and_strict():
    """One numpy tensor and one strict tensor (made under each backend)."""
    a = T(normal((2, 3), 7))
    backend.use("strict")
    b = T(normal((2, 3), 8))
    from tinygan import _strict
    assert isinstance(b.data, _strict.StrictArray) and isinstance(a.data, np.ndarray)
    return a, b


@pytest.mark.parametrize("op", [
    F.add, F.sub, F.mul, F.div,
    lambda a, b: F.matmul(a, b.T),
    lambda a, b: F.linear(a, b),
    lambda a, b: F.concat([a, b]),
    lambda a, b: F.mse_loss(a, b),
    lambda a, b: F.binary_cross_entropy_with_logits(b, a),
], ids=["add", "sub", "mul", "div", "matmul", "linear", "concat", "mse_loss", "bce"])
@pytest.mark.backend_agnostic  # switches backends itself
def test_mixing_numpy_and_strict_arrays_raises(numpy_and_strict, op):
    a, b = numpy_and_strict
    with pytest.raises(backend.BackendError, match="two backends"):
        op(a, b)


@pytest.mark.backend_agnostic  # switches backends itself
def test_mixing_backends_in_conv_and_batch_norm_raises():
    x_np = T(normal((1, 2, 4, 4), 9))
    stats_np = (np.zeros(2), np.ones(2))
    backend.use("strict")
    w = T(normal((3, 2, 3, 3), 10))
    x = T(normal((1, 2, 4, 4), 11))
    with pytest.raises(backend.BackendError, match="strict"):
        F.conv2d(x_np, w)
    with pytest.raises(backend.BackendError):
        F.batch_norm(x, *stats_np, training=True)  # host running statistics, device input
    with pytest.raises(backend.BackendError):
        F.embedding(np.array([0, 1]), T(normal((3, 2), 12)))  # host labels, device table


def test_get_array_module_ignores_python_scalars():
    assert backend.get_array_module(1.0, np.ones(2), 3) is np


# ---- shape errors name the op and the shapes -------------------------------------------------------

@pytest.mark.parametrize("call,pattern", [
    (lambda: F.conv2d(T(np.ones((1, 3, 5, 5))), T(np.ones((4, 2, 3, 3)))),
     r"conv2d: input has 3 channels \(shape \(1, 3, 5, 5\)\) but weight expects 2 \(weight shape \(4, 2, 3, 3\), layout \(out, in, kh, kw\)\)"),
    (lambda: F.conv2d(T(np.ones((3, 5, 5))), T(np.ones((4, 3, 3, 3)))), r"conv2d: .*4 dimensions.*\(3, 5, 5\)"),
    (lambda: F.conv2d(T(np.ones((1, 1, 2, 2))), T(np.ones((1, 1, 3, 3)))), r"conv2d: kernel 3x3 is larger"),
    (lambda: F.conv2d(T(np.ones((1, 1, 5, 5))), T(np.ones((2, 1, 3, 3))), T(np.ones(3))),
     r"conv2d: bias shape \(3,\) does not match 2"),
    (lambda: F.conv_transpose2d(T(np.ones((1, 3, 5, 5))), T(np.ones((2, 4, 3, 3)))),
     r"conv_transpose2d: input has 3 channels.*\(2, 4, 3, 3\)"),
    (lambda: F.conv_transpose2d(T(np.ones((1, 2, 5, 5))), T(np.ones((2, 4, 3, 3))), stride=2, output_padding=2),
     r"conv_transpose2d: output_padding 2 must be smaller than stride 2"),
    (lambda: F.linear(T(np.ones((2, 5))), T(np.ones((3, 4)))),
     r"linear: input has 5 features \(shape \(2, 5\)\) but weight expects 4 \(weight shape \(3, 4\)\)"),
    (lambda: F.matmul(T(np.ones((2, 3))), T(np.ones((4, 5)))), r"matmul: shapes \(2, 3\) and \(4, 5\)"),
    (lambda: F.reshape(T(np.ones((2, 3))), (4, 2)), r"reshape: .*shape \(2, 3\) \(6 elements\) into \(4, 2\)"),
    (lambda: F.concat([T(np.ones((2, 3))), T(np.ones((2, 4)))], axis=0), r"concat: shapes \[\(2, 3\), \(2, 4\)\]"),
    (lambda: F.batch_norm(T(np.ones((2, 3, 4))), backend.to_device(np.zeros(3)), backend.to_device(np.ones(3))),
     r"batch_norm: .*got shape \(2, 3, 4\)"),
    (lambda: F.batch_norm(T(np.ones((2, 3))), backend.to_device(np.zeros(4)), backend.to_device(np.ones(4))),
     r"batch_norm: running_mean has shape \(4,\)"),
    (lambda: F.batch_norm(T(np.ones((1, 3))), None, None, training=True), r"batch_norm: training needs more"),
    (lambda: nn.BatchNorm2d(3)(T(np.ones((2, 3)))), r"BatchNorm2d: expected a 4-D input, got shape \(2, 3\)"),
    (lambda: nn.BatchNorm1d(3)(T(np.ones((2, 3, 2, 2)))), r"BatchNorm1d: expected a 2-D input"),
    (lambda: F.permute(T(np.ones((2, 3))), (0, 0)), r"permute: axes \(0, 0\)"),
    (lambda: F.mse_loss(T(np.ones((2, 3))), backend.to_device(np.ones((3, 2)))), r"mse_loss: input shape \(2, 3\) and target shape \(3, 2\)"),
    (lambda: F.embedding(backend.to_device(np.array([0.5])), T(np.ones((3, 2)))), r"embedding: indices must be integers"),
    (lambda: F.dropout(T(np.ones(2)), 1.0), r"dropout: p must be in \[0, 1\)"),
], ids=["conv2d-channels", "conv2d-ndim", "conv2d-kernel", "conv2d-bias", "convT-channels", "convT-outpad",
        "linear", "matmul", "reshape", "concat", "batch_norm-ndim", "batch_norm-stats", "batch_norm-count",
        "BatchNorm2d", "BatchNorm1d", "permute", "mse_loss", "embedding-dtype", "dropout-p"])
def test_errors_name_the_op_and_shapes(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_conv2d_rejects_a_non_tensor_input():
    with pytest.raises(TypeError, match="conv2d: expected a Tensor, got ndarray"):
        F.conv2d(np.ones((1, 1, 3, 3)), T(np.ones((1, 1, 2, 2))))


@pytest.mark.parametrize("index", [
    np.array([0, 2]),
    [0, 2],
    (slice(None), np.array([1, 0])),
    np.array([True, False, True]),
    1.5,
], ids=["int array", "list", "tuple with array", "bool mask", "float"])
def test_indexing_with_arrays_raises_a_clear_type_error(index):
    x = T(normal((3, 4), 13))
    with pytest.raises(TypeError, match="ints, slices, None and .*embedding or one_hot"):
        x[index]


def test_one_hot():
    out = F.one_hot(np.array([2, 0]), 3)
    np.testing.assert_array_equal(out, [[0, 0, 1], [1, 0, 0]])
    assert out.dtype == np.float32
