"""Check an install end to end: ``python -m tinygan.doctor``.

One command that proves tinygan works on this machine and prints a one-screen
report to paste into a bug report. Exit status 0 only if every check passed.

What it checks (each line: status, name, measured value against its limit):

* versions: tinygan, Python, NumPy, CuPy, the CUDA runtime and driver, the
  GPU's name and memory, the BLAS library and its thread setting;
* every op family (elementwise and activations, reductions, shapes and
  indexing, matmul and linear, conv2d on each of its algorithms: im2col and
  Winograd F(4x4, 3x3) and F(2x2, 3x3), conv_transpose2d, upsample, pooling,
  batch norm in training and evaluation, embedding and one_hot, the losses):
  forward, backward and one Adam step on small odd shapes in float32, against
  NumPy in float64. Errors are ``max |x - ref| / max |ref|`` per array (the
  worst array), the Adam step's in units of the learning rate;
* one training step of each model (BEGAN with and without skip connections,
  DCGAN, MLP GAN, and the conditional MLP and DCGAN GANs) from the same seed
  against the NumPy backend: losses, every gradient, and the share of
  parameters whose Adam update differs by more than a tenth of the learning
  rate (a tiny gradient may flip its sign between backends; a wrong update
  moves all of them);
* a BEGAN step at the main command's settings (64x64, n = 128, batch 16; a
  smaller one without a GPU, or with ``--quick``): seconds per step measured
  between device synchronisations, the memory peak (CuPy's memory pool on a
  GPU; NumPy's allocations through tracemalloc on the CPU), and the
  device-to-host synchronisations inside the step, which must be zero;
* a checkpoint written on the device backend and loaded on NumPy, and the
  reverse: every array of the trainer's state must come back bit for bit.

Without a GPU the checks run on the NumPy backend and on the strict emulation
of a device (``--backend strict``), and one line says that no GPU answered
and what to install.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import platform
import sys
import time

import numpy as np

import tinygan as tg
from tinygan import backend

from .doctor_checks import check_models, check_ops, on_backend
from .doctor_runtime import _cfg_label, check_checkpoint, check_step_speed, check_step_syncs

STEP_MAIN = dict(size=64, filters=128, hidden=64, batch=16)   # examples/began_faces.py defaults
STEP_SMALL = dict(size=32, filters=32, hidden=64, batch=16)    # CPU-only and --quick
INSTALL_HINT = "pip install 'tinygan[cuda12]' (CUDA 12) or 'tinygan[cuda13]' (CUDA 13)"


class Report:
    """Check lines, printed as they come, and whether all passed."""

    def __init__(self, out=sys.stdout):
        self.out, self.results = out, []

    def line(self, text=""):
        print(text, file=self.out, flush=True)

    def check(self, name, ok, detail):
        self.results.append((name, bool(ok)))
        self.line(f"{'PASS' if ok else 'FAIL'}  {name:<38} {detail}")

    def run(self, name, fn):
        """Run ``fn() -> (ok, detail)``; an exception is a FAIL with its message."""
        try:
            ok, detail = fn()
        except Exception as e:  # a crash is a failed check, and the report goes on
            msg = str(e).splitlines()[0] if str(e) else ""
            ok, detail = False, f"{type(e).__name__}: {msg}"[:160]
        self.check(name, ok, detail)
        return ok

    @property
    def failed(self):
        return [n for n, ok in self.results if not ok]


# ---- versions -----------------------------------------------------------------------------

def _blas():
    name = "unknown"
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        name = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # older NumPy: show_config prints and returns None
        pass
    env = [f"{v}={os.environ[v]}" for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
           if v in os.environ]
    threads = ", ".join(env) if env else f"not set (BLAS default, {os.cpu_count()} CPUs)"
    try:
        import threadpoolctl  # optional: reads the thread count BLAS actually uses
        info = [p for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]
        if info:
            threads += f"; threadpoolctl: {info[0].get('num_threads')} threads"
    except Exception:
        pass
    from .. import backend
    live = backend.blas_threads()  # --threads N (replicas) sets it to 1 during each step
    threads += (f"; {live} in use, settable for --threads replicas" if live is not None else
                "; not settable from Python (not OpenBLAS): for --threads N > 1 set OMP_NUM_THREADS=1")
    return name, threads


def _cupy_version():
    for dist in importlib.metadata.distributions():
        n = (dist.metadata["Name"] or "").lower()
        if n == "cupy" or n.startswith("cupy-cuda"):
            return f"{dist.version} ({dist.metadata['Name']})"
    return "not installed"


def _cuda_version(v):
    return f"{v // 1000}.{v % 1000 // 10}"


def versions(report, gpu):
    blas, threads = _blas()
    report.line(f"tinygan {tg.__version__} | Python {platform.python_version()} | NumPy {np.__version__} | "
                f"CuPy {_cupy_version()}")
    if gpu is not None:
        report.line(f"GPU {gpu['device']}: {gpu['name']}, {gpu['memory_bytes'] / 2 ** 30:.1f} GiB | "
                    f"CUDA runtime {_cuda_version(gpu['cuda_runtime'])} | driver {_cuda_version(gpu['cuda_driver'])}")
    report.line(f"CPU: {platform.machine()}, {os.cpu_count()} cores | BLAS {blas} | threads: {threads}")


# ---- the command --------------------------------------------------------------------------

def _gpu(device):
    """(device info or None, the reason no GPU answered or None)."""
    try:
        with on_backend("cupy"):
            if device is not None:
                backend.select_device(device)
            return backend.device_info(), None
    except backend.BackendError as e:
        return None, str(e).split(";")[0]


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m tinygan.doctor", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0] + "\n\n" + "\n\n".join(__doc__.split("\n\n")[1:]),
        epilog="Exit status: 0 if every check passed, 1 if any failed, 2 for a usage error.")
    p.add_argument("--backend", choices=("auto", "cupy", "numpy", "strict"), default="auto",
                   help="backend to check against NumPy (default auto: cupy if a GPU answers, else numpy and strict)")
    p.add_argument("--device", type=int, default=None, metavar="N",
                   help="GPU number N, as CuPy counts them (within CUDA_VISIBLE_DEVICES); default: 0")
    p.add_argument("--quick", action="store_true",
                   help=f"time the BEGAN step at {_cfg_label(STEP_SMALL)} instead of the main command's "
                        f"{_cfg_label(STEP_MAIN)} on a GPU")
    p.add_argument("--steps", type=int, default=3, help="timed BEGAN steps (default 3)")
    return p


def main(argv=None, out=None):
    args = build_parser().parse_args(argv)
    if args.steps < 1:
        build_parser().error("--steps must be >= 1")
    report = Report(out or sys.stdout)
    start = time.perf_counter()
    gpu, why = (None, None)
    if args.backend in ("auto", "cupy") or args.device is not None:
        gpu, why = _gpu(args.device)
    if args.backend == "cupy" and gpu is None:
        print(f"error: --backend cupy: {why}", file=sys.stderr)
        return 2
    if args.device is not None and gpu is None:
        print(f"error: --device {args.device}: {why}", file=sys.stderr)
        return 2
    backend.use("numpy")
    names = ["cupy"] if gpu is not None and args.backend in ("auto", "cupy") else \
        ["numpy", "strict"] if args.backend == "auto" else [args.backend]

    report.line(f"== tinygan doctor: backends {', '.join(names)}, each against NumPy ==")
    versions(report, gpu)
    if gpu is None and args.backend == "auto":
        report.line(f"no GPU answered: {why}")
        report.line(f"so the checks ran on numpy and strict; for a GPU: {INSTALL_HINT}")
    device = names[-1]   # the backend that stands for the device: cupy, or strict without a GPU
    try:
        with contextlib.ExitStack() as stack:
            if gpu is not None and args.device is not None:
                stack.enter_context(on_backend("cupy"))
                backend.select_device(args.device)
            report.line("-- op families: forward, backward, Adam step; float32 vs NumPy float64")
            for name in names:
                check_ops(report, name)
            report.line("-- one training step of each model vs the numpy backend, same seed")
            for name in names:
                if name != "numpy":
                    check_models(report, name)
            if names == ["numpy"]:
                report.line("(numpy is the reference itself: model steps need --backend strict or cupy)")
            cfg = STEP_MAIN if gpu is not None and not args.quick else STEP_SMALL
            note = "" if cfg is STEP_MAIN else (
                " (smaller than the main command's 64x64 n=128: " + ("--quick)" if gpu is not None else
                                                                     "no GPU, to stay under a minute)"))
            report.line(f"-- BEGAN step at {_cfg_label(cfg)}{note}")
            timed = "cupy" if "cupy" in names else "numpy" if "numpy" in names else names[0]
            check_step_speed(report, timed, cfg, args.steps)
            for name in names:
                if name != "numpy":
                    check_step_syncs(report, name, cfg if name == "cupy" else STEP_SMALL)
            if "strict" not in names:
                check_step_syncs(report, "strict", STEP_SMALL)
            report.line("-- checkpoints")
            if device != "numpy":
                check_checkpoint(report, device, "out")
                check_checkpoint(report, device, "in")
            else:
                report.line("(numpy only: nothing to cross)")
    finally:
        backend.use("numpy")
    n, bad = len(report.results), report.failed
    report.line(f"== {n - len(bad)} of {n} checks passed"
                + (f"; FAILED: {', '.join(bad)}" if bad else "") + f" ({time.perf_counter() - start:.0f} s) ==")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())