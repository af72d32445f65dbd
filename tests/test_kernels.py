"""The fused elementwise kernels (backend.ElementwiseKernel): each CUDA body is right without a GPU.

A kernel has two forms of one computation: CUDA C that CuPy compiles into one launch, and array
calls on the host. No GPU is at hand here, so every body is checked twice:

* NVRTC, the compiler CuPy itself uses, compiles it for an H100/H200 (compute_90) in the frame
  ElementwiseKernel puts around it: inputs bound as ``const T name = ...``, outputs as ``T &name``;
* g++ compiles the same body as C++ in a loop over host arrays, and its results must match the
  host form's on random data with the cases that matter (zero, both signs, large magnitudes).

Every kernel in ``ElementwiseKernel.defined`` must have sample arguments here, so a new kernel cannot
go untested. On the strict backend a call counts as one device operation, as on a GPU.
"""
import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from tinygan import _strict, backend, functional, optim

_DEFINING = (functional, optim)  # the modules that define kernels: ELU's, Adam's and the EMA's

KERNELS = {k.name: k for k in backend.ElementwiseKernel.defined}


def _data(rng, n, dtype):
    x = rng.standard_normal(n) * 3
    x[:4] = [0.0, -0.0, 40.0, -40.0]
    return x.astype(dtype)


def _elu(rng, n, dtype, alpha):
    """ELU outputs, what the backward kernel reads."""
    x = _data(rng, n, dtype)
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))).astype(dtype)


# name -> (arguments from (rng, n, dtype): arrays and Python numbers, inputs then outputs; rtol per dtype)
SAMPLES = {
    "elu_forward": (lambda r, n, t: [_data(r, n, t), 1.0, np.empty(n, t)], {np.float32: 1e-6, np.float64: 1e-14}),
    "elu_forward_alpha": (lambda r, n, t: [_data(r, n, t), 0.3, np.empty(n, t)], {np.float32: 1e-6, np.float64: 1e-14}),
    "elu_backward": (lambda r, n, t: [_elu(r, n, t, 1.0), _data(r, n, t), 1.0, np.empty(n, t)],
                     {np.float32: 1e-6, np.float64: 1e-14}),
    "elu_backward_alpha": (lambda r, n, t: [_elu(r, n, t, 0.5), _data(r, n, t), 0.5, np.empty(n, t)],
                           {np.float32: 1e-6, np.float64: 1e-14}),
    "adam_step": (lambda r, n, t: [_data(r, n, t) * 1e-3, 0.5, 0.5, 0.999, 1 - 0.999, 2e-4 / (1 - 0.5 ** 3), (1 - 0.999 ** 3) ** 0.5,
                                   1e-8, 0.0, _data(r, n, t), (_data(r, n, t) * 1e-3).astype(t),
                                   (r.random(n) * 1e-6).astype(t)], {np.float32: 2e-6, np.float64: 1e-13}),
    "adam_step_decay": (lambda r, n, t: [_data(r, n, t) * 1e-3, 0.9, 1 - 0.9, 0.99, 1 - 0.99, 1e-3, 0.1, 1e-8, 0.01, _data(r, n, t),
                                         np.zeros(n, t), np.zeros(n, t)], {np.float32: 2e-6, np.float64: 1e-13}),
    "ema_update": (lambda r, n, t: [_data(r, n, t), 0.999, 1 - 0.999, _data(r, n, t)], {np.float32: 1e-6, np.float64: 1e-14}),
}


def _kernel(case):
    return KERNELS[case.replace("_alpha", "").replace("_decay", "")]


def test_every_kernel_has_samples():
    covered = {_kernel(case).name for case in SAMPLES}
    assert covered == set(KERNELS), f"kernels without samples in this test: {set(KERNELS) - covered}"


def _params(kernel, args):
    """[(C type, name, is_output, is_array)] in call order."""
    ins = [p.split() for p in kernel.in_params.split(",")]
    outs = [p.split() for p in kernel.out_params.split(",")]
    assert len(ins) + len(outs) == len(args), f"{kernel.name}: {len(args)} samples for {len(ins) + len(outs)} params"
    return [(t, name, i >= len(ins), isinstance(a, np.ndarray)) for i, ((t, name), a) in enumerate(zip(ins + outs, args))]


def _source(kernel, args, ctype, device):
    """The body in the frame ElementwiseKernel gives it: a loop (host) or one thread per element (device)."""
    params = _params(kernel, args)
    sig = ", ".join(["long n"] + [f"{'' if out else 'const '}T{'*' if arr else ''} {name}{'_' if arr else ''}"
                                  for _, name, out, arr in params])
    binds = " ".join(f"{'T &' if out else 'const T '}{name} = {name}_[i];" for _, name, out, arr in params if arr)
    head = f"typedef {ctype} T;\n"
    if device:
        return (head + f'extern "C" __global__ void k({sig}) {{\n  long i = blockIdx.x * (long)blockDim.x + threadIdx.x;'
                f"\n  if (i >= n) return;\n  {binds}\n  {kernel.body};\n}}\n")
    return ("#include <cmath>\nusing namespace std;\n" + head + f'extern "C" void k({sig}) {{\n  for (long i = 0; i < n; ++i) '
            f"{{ {binds} {kernel.body}; }}\n}}\n")


def _nvrtc():
    try:
        from cupy.cuda import nvrtc
        nvrtc.getVersion()
    except Exception as e:  # ImportError without cupy; a load error without the NVRTC library
        pytest.skip(f"NVRTC is not installed ({type(e).__name__}): pip install cupy-cuda12x nvidia-cuda-nvrtc-cu12")
    return nvrtc


@pytest.mark.parametrize("ctype, dtype", [("float", np.float32), ("double", np.float64)])
@pytest.mark.parametrize("case", sorted(SAMPLES))
def test_cuda_body_compiles_for_the_gpu(case, ctype, dtype):
    nvrtc = _nvrtc()
    kernel = _kernel(case)
    src = _source(kernel, SAMPLES[case][0](np.random.default_rng(0), 8, dtype), ctype, device=True)
    prog = nvrtc.createProgram(src, f"{kernel.name}.cu", [], [])
    try:
        nvrtc.compileProgram(prog, ["-arch=compute_90"])
    except nvrtc.NVRTCError:
        pytest.fail(f"{kernel.name}: NVRTC refuses the CUDA body:\n{nvrtc.getProgramLog(prog)}\n{src}")
    assert b".entry k" in nvrtc.getPTX(prog) or ".entry k" in str(nvrtc.getPTX(prog))


@pytest.fixture(scope="module")
def cxx(tmp_path_factory):
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler (g++) to run the kernel bodies on the CPU")
    return compiler, tmp_path_factory.mktemp("kernels")


@pytest.mark.parametrize("ctype, dtype", [("float", np.float32), ("double", np.float64)])
@pytest.mark.parametrize("case", sorted(SAMPLES))
def test_cuda_body_computes_what_the_host_form_does(case, ctype, dtype, cxx):
    compiler, tmp = cxx
    kernel = _kernel(case)
    make, rtol = SAMPLES[case]
    n = 1001
    args = make(np.random.default_rng(1), n, dtype)
    src = tmp / f"{case}_{ctype}.cpp"
    src.write_text(_source(kernel, args, ctype, device=False))
    lib = tmp / f"{case}_{ctype}.so"
    subprocess.run([compiler, "-O1", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, capture_output=True)
    scalar = ctypes.c_float if dtype == np.float32 else ctypes.c_double
    c_args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    ctypes.CDLL(str(lib)).k(ctypes.c_long(n), *[a.ctypes.data_as(ctypes.c_void_p) if isinstance(a, np.ndarray)
                                                else scalar(a) for a in c_args])
    host_args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    kernel.host(np, *host_args)
    outputs = [i for i, (_, _, out, _) in enumerate(_params(kernel, args)) if out]
    for i in outputs:
        np.testing.assert_allclose(c_args[i], host_args[i], rtol=rtol[dtype], atol=rtol[dtype] * np.abs(host_args[i]).max(),
                                   err_msg=f"{kernel.name}: output {i} of the CUDA body differs from the host form")
    assert any(not np.array_equal(c_args[i], args[i]) for i in outputs)  # the outputs were written


def test_a_kernel_is_one_device_operation_on_the_strict_backend():
    with backend.using("strict"):
        x = backend.to_device(np.linspace(-2, 2, 10).astype(np.float32))
        y = backend.xp().empty_like(x)
        _strict.reset_ops()
        KERNELS["elu_forward"](x, 1.0, y)
        assert dict(_strict.ops) == {"kernel elu_forward": 1}
        np.testing.assert_allclose(backend.to_host(y), np.where(np.linspace(-2, 2, 10) > 0, np.linspace(-2, 2, 10),
                                                                np.expm1(np.linspace(-2, 2, 10))), rtol=1e-6)


def test_cupy_accepts_every_kernel_definition():
    cupy = pytest.importorskip("cupy", reason="the cupy package is not installed")
    for kernel in KERNELS.values():  # parsing the parameters needs no GPU; compiling waits for the first call
        k = cupy.ElementwiseKernel(kernel.in_params, kernel.out_params, kernel.body, f"tinygan_{kernel.name}")
        assert (k.nin, k.nout) == (len(kernel.in_params.split(",")), len(kernel.out_params.split(",")))


def test_two_backends_in_one_kernel_call_are_refused():
    with backend.using("strict"):
        y = backend.xp().empty((3,), dtype=np.float32)
        with pytest.raises(backend.BackendError, match="two backends"):
            KERNELS["elu_forward"](np.ones(3, np.float32), 1.0, y)
