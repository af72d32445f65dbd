"""Device discipline: the code only calls what CuPy has, and a training step never leaves the device.

(a) the library's own source, read with ``ast``: every array-module call exists in the real
    ``cupy`` package; only backend.py imports cupy; the engine modules never import numpy.
(b) the strict backend (device-like arrays that refuse host conversion) runs a whole
    forward/backward/Adam step with zero transfers and the numpy backend's numbers.
(c) asking for the cupy backend without a GPU, or for an unknown backend, is a clear error.
"""
import ast
import pathlib

import numpy as np
import pytest

import tinygan as tg
from tinygan import _strict, backend, nn, optim
from tinygan import functional as F

PACKAGE = pathlib.Path(tg.__file__).resolve().parent
SOURCES = sorted(PACKAGE.rglob("*.py"))
ENGINE_WITHOUT_NUMPY = sorted(str(p.relative_to(PACKAGE)) for p in SOURCES
                              if p.parts[len(PACKAGE.parts)] in ("tensor.py", "functional", "nn", "optim.py"))



# ---- (a) the source, read with ast ------------------------------------------------------

ARRAY_MODULE_NAMES = {"xp", "_xp"}               # names bound to an array module (backend.py's global is _xp)
ARRAY_MODULE_CALLS = {"_xp", "xp", "get_array_module"}  # calls that return one: _xp(x).exp, backend.xp().zeros


def _chain(node):
    """For ``a.b.c`` return (root node, ["b", "c"])."""
    attrs = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    return node, attrs[::-1]


def _is_array_module_root(root):
    if isinstance(root, ast.Name):
        return root.id in ARRAY_MODULE_NAMES
    if isinstance(root, ast.Call):
        f = root.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
        return name in ARRAY_MODULE_CALLS
    return False


def _scan_array_module_calls():
    """{"exp": ["functional.py:123", ...], "lib.stride_tricks.as_strided": [...], ...}"""
    found = {}
    for path in SOURCES:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            root, attrs = _chain(node)
            if _is_array_module_root(root):  # inner prefixes (xp.lib) are visited as nodes of their own
                found.setdefault(".".join(attrs), []).append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    return found


XP_NAMES = _scan_array_module_calls()


@pytest.fixture(scope="module")
def cupy():
    try:
        import cupy
    except ImportError as e:
        pytest.skip(f"cupy is not installed, so its API cannot be compared ({e})")
    return cupy


def test_scan_found_a_healthy_number_of_array_module_names():
    assert len(XP_NAMES) > 15, sorted(XP_NAMES)
    for expected in ("exp", "zeros", "where", "lib.stride_tricks.as_strided", "sqrt", "broadcast_to"):
        assert expected in XP_NAMES, expected


@pytest.mark.parametrize("name", sorted(XP_NAMES))
def test_array_module_name_exists_in_cupy(cupy, name):
    obj = cupy
    for part in name.split("."):
        assert hasattr(obj, part), (f"cupy has no {name} (used at {', '.join(XP_NAMES[name])}); "
                                    "CuPy would raise AttributeError on a GPU")
        obj = getattr(obj, part)


def test_cupy_is_the_real_package(cupy):
    assert hasattr(cupy, "ndarray") and hasattr(cupy, "cuda") and cupy.__version__


def _imports(path):
    """Top-level module names imported by a file, including importlib.import_module("x") and __import__("x")."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            f = node.func
            fname = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if fname in ("import_module", "__import__"):
                names.append(node.args[0].value)
    return {n.split(".")[0] for n in names}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_backend_imports_cupy(path):
    if path == PACKAGE / "backend.py":
        assert "cupy" in _imports(path)  # the scan does see imports inside functions
    else:
        assert "cupy" not in _imports(path), f"{path.name} imports cupy; only tinygan/backend.py may"


def test_the_engine_without_numpy_is_all_there():
    assert len(ENGINE_WITHOUT_NUMPY) >= 10 and "functional/conv.py" in ENGINE_WITHOUT_NUMPY


@pytest.mark.parametrize("name", ENGINE_WITHOUT_NUMPY)
def test_engine_modules_do_not_import_numpy(name):
    path = PACKAGE / name
    assert path.exists()
    assert "numpy" not in _imports(path), f"{name} imports numpy; it must take arrays from the backend"


# ---- (b) the strict backend ------------------------------------------------------------------

@pytest.fixture
def strict():
    backend.use("strict")
    _strict.reset_transfers()
    yield _strict
    backend.use("numpy")  # (the autouse fixture restores it too, even if this one is not reached)


HOST_CONVERSIONS = {
    "float()": float,
    "int()": int,
    "bool()": bool,
    "if": lambda a: 1 if a else 0,
    "np.asarray": np.asarray,
    "np.array": np.array,
    ".item()": lambda a: a.item(),
    ".tolist()": lambda a: a.tolist(),
    "iteration": list,
    "range()": lambda a: range(a),
}


@pytest.mark.parametrize("array", ["one element", "0-d reduction"])
@pytest.mark.parametrize("name", sorted(HOST_CONVERSIONS))
def test_strict_arrays_refuse_implicit_host_transfer(strict, name, array):
    a = backend.xp().ones(1) if array == "one element" else backend.xp().ones((2, 3)).sum()
    assert isinstance(a, _strict.StrictArray)
    with pytest.raises(_strict.HostTransferError, match="host memory"):
        HOST_CONVERSIONS[name](a)
    assert _strict.transfers == 0


def test_strict_reductions_are_0d_device_arrays(strict):
    x = backend.randn(2, 3)
    for r in (x.sum(), x.mean(), x.max(), backend.xp().sum(x), x[0, 0]):
        assert isinstance(r, _strict.StrictArray) and r.shape == ()


def test_explicit_transfers_are_counted(strict):
    t = tg.tensor(backend.randn(3))
    assert isinstance(t.data, _strict.StrictArray)
    host = t.numpy()
    assert isinstance(host, np.ndarray) and _strict.transfers == 1
    t.sum().item()
    assert _strict.transfers == 2
    _strict.reset_transfers()
    assert _strict.transfers == 0


def _model():
    class Net(nn.Module):
        """An autoencoder with a label embedding and a discriminator head: every layer kind once."""

        def __init__(self):
            super().__init__()
            # no bias before a batch norm, and the norm before the ELU: a parameter whose gradient is
            # zero in exact arithmetic gets float32 noise there, which Adam turns into steps of size lr
            self.enc = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1, bias=False),
                                     nn.BatchNorm2d(4), nn.ELU())
            self.fc = nn.Linear(4 * 2 * 2, 6)
            self.emb = nn.Embedding(5, 6)
            self.norm = nn.BatchNorm1d(6)
            self.up = nn.Sequential(nn.Linear(6, 4 * 2 * 2), nn.Unflatten(1, (4, 2, 2)))
            self.dec = nn.Sequential(nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
                                     nn.Upsample(2), nn.Conv2d(3, 1, 3, padding=1), nn.Tanh())
            self.head = nn.Sequential(nn.Dropout(0.1), nn.MinibatchDiscrimination(12, 3, 2), nn.Linear(15, 1))

        def forward(self, x, labels):
            h = F.avg_pool2d(self.enc(x), 2)                       # (n, 4, 2, 2)
            z = self.norm(self.fc(F.flatten(h, 1)) + self.emb(labels))
            recon = self.dec(self.up(z))                           # (n, 1, 8, 8)
            logit = self.head(F.concat([z, F.sigmoid(z)], axis=1))
            return recon, logit
    return Net()


def _train_step(name):
    """One seeded training step on backend ``name``; returns (transfers during the step, host results)."""
    backend.use(name)
    backend.seed(0)
    model = _model()
    opt = optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    x = tg.tensor(backend.uniform(-1, 1, (4, 1, 8, 8)))
    labels = backend.to_device(np.array([0, 3, 3, 1]))
    ones = backend.to_device(np.ones((4, 1), dtype=np.float32))
    _strict.reset_transfers()

    recon, logit = model(x, labels)
    loss = (F.l1_loss(recon, x) + 0.5 * F.mse_loss(recon, x)
            + F.binary_cross_entropy_with_logits(logit, ones)
            + F.softplus(-logit).mean() + F.logsigmoid(logit).mean() * 0.1)
    opt.zero_grad()
    loss.backward()
    opt.step()
    model.eval()
    with tg.no_grad():
        recon_eval, _ = model(x, labels)
    transfers = _strict.transfers

    arrays = {"loss": loss.data, "recon": recon.data, "recon_eval": recon_eval.data}
    arrays.update({f"param {n}": p.data for n, p in model.named_parameters()})
    arrays.update({f"grad {n}": p.grad for n, p in model.named_parameters()})
    arrays.update({f"buffer {n}": b for n, b in model.named_buffers()})
    arrays.update({f"adam {i} {k}": v for i, s in opt.state_dict()["state"].items() for k, v in s.items()
                   if hasattr(v, "shape")})
    kinds = {k: type(v) for k, v in arrays.items()}
    return transfers, kinds, {k: backend.to_host(v) for k, v in arrays.items()}


def test_training_step_under_strict_makes_no_host_transfer(strict):
    transfers, kinds, results = _train_step("strict")
    assert transfers == 0
    assert set(kinds.values()) == {_strict.StrictArray}, {k: v for k, v in kinds.items() if v is not _strict.StrictArray}
    assert len(results) > 30 and np.isfinite(results["loss"])


def test_strict_and_numpy_give_the_same_numbers(strict):
    _, _, on_strict = _train_step("strict")
    _, kinds, on_numpy = _train_step("numpy")
    assert set(kinds.values()) <= {np.ndarray, np.float32}
    assert on_strict.keys() == on_numpy.keys()
    for k in on_numpy:
        assert on_strict[k].dtype == on_numpy[k].dtype == np.float32, k
        # the strict backend stands in for a GPU, so its Winograd transforms take the GPU's form
        # (functional.winograd._gathered), which sums in another order: float32 rounding apart
        np.testing.assert_allclose(on_strict[k], on_numpy[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_loading_host_state_under_strict_stays_on_the_device(strict):
    lin = nn.Linear(3, 2)
    host = {"weight": np.full((2, 3), 0.5, dtype=np.float32), "bias": np.zeros(2, dtype=np.float32)}
    lin.load_state_dict(host)
    assert isinstance(lin.weight.data, _strict.StrictArray)
    p = lin.weight
    opt = optim.Adam([p])
    opt.load_state_dict({"param_groups": opt.state_dict()["param_groups"],
                         "state": {0: {"step": 2, "exp_avg": np.ones((2, 3)), "exp_avg_sq": np.ones((2, 3))}}})
    assert isinstance(opt.state[0]["exp_avg"], _strict.StrictArray)
    assert opt.state[0]["exp_avg"].dtype == np.float32  # cast to the parameter's dtype
    assert _strict.transfers == 0


def test_gradcheck_runs_under_strict(strict):
    x = tg.Tensor(np.random.default_rng(0).standard_normal((1, 2, 4, 4)), requires_grad=True)
    w = tg.Tensor(np.random.default_rng(1).standard_normal((2, 2, 3, 3)), requires_grad=True)
    assert isinstance(x.data, _strict.StrictArray)
    assert tg.gradcheck(lambda x, w: F.conv2d(x, w, stride=2, padding=1), (x, w), atol=1e-7, rtol=1e-5)
    assert _strict.transfers > 0  # gradcheck copies to the host explicitly: counted, not refused


def test_a_hidden_host_round_trip_fails_under_strict(strict):
    """What the strict backend is for: code that would synchronise a GPU fails on the CPU."""
    loss = F.mse_loss(tg.tensor(backend.randn(3)), backend.xp().zeros(3, dtype=np.float32))
    with pytest.raises(_strict.HostTransferError):
        if loss.data > 0:  # an `if` on a device value
            pass
    with pytest.raises(_strict.HostTransferError):
        float(loss.data)


# ---- (c) asking for backends ---------------------------------------------------------------------

@pytest.mark.backend_agnostic  # switches backends itself
def test_cupy_backend_without_a_gpu_says_what_to_install():
    try:
        backend.use("cupy")
    except backend.BackendError as e:
        message = str(e)
    else:
        backend.use("numpy")
        pytest.skip("a GPU answered: the cupy backend works on this machine")
    assert "tinygan[cuda12]" in message and "cupy" in message
    assert backend.current() == "numpy" and backend.xp() is np  # the failed switch changed nothing


@pytest.mark.backend_agnostic  # switches backends itself
def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(backend.BackendError, match=r"unknown backend 'torch'; expected one of numpy, cupy, strict"):
        backend.use("torch")
    assert backend.current() == "numpy"


def test_backend_switch_round_trip():
    assert backend.use("strict") is _strict.module and backend.current() == "strict"
    assert backend.use("numpy") is np and backend.current() == "numpy"
