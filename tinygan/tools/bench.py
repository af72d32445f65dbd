"""Benchmark: how close a full training step comes to the machine's matrix-multiply limit.

    python -m tinygan.bench                       # every configuration, NumPy backend
    python -m tinygan.bench --threads 1 --json    # one BLAS thread, JSON lines too
    python -m tinygan.bench --backend cupy --only began64_n64
    python -m tinygan.bench --ops --only began64_n64    # device operations per step, by kind
    python -m tinygan.bench --threads 1 --torch ~/torchref/bin/python   # and PyTorch's same steps
    python -m tinygan.bench --threads 1 --torch ~/torchref/bin/python --rounds 3   # alternating, 3 times

What one run measures:

* the float32 GEMM peak: the best of several 2048x2048 @ 2048x2048 products
  with the backend's matmul, in GFLOP/s;
* per configuration, the full training step the trainers run (both networks'
  forward, backward and Adam): median, min and max seconds per step over
  ``--steps`` steps after ``--warmup``; images per second; the step's FLOPs;
  GFLOP/s achieved and its fraction of the GEMM peak; the peak memory the
  step allocates (the conv's reused work buffers included: NumPy's allocations
  through tracemalloc; on CuPy the high-water mark of its memory pool during
  the step, which also holds the parameters and optimizer state); and a breakdown
  of the step's time into GEMM, im2col/col2im with the Winograd transforms
  (the "im2col" part), optimizer and the rest (elementwise ops and Python
  overhead);
* the device operations of one step (``device_ops``; by kind with ``--ops``):
  every array call, operator, in-place operator, setitem, gather, copy and
  transfer counted as CuPy would launch a kernel for it, plus the extra
  kernels of the matmul patterns CuPy expands (a broadcast operand, an
  operand cuBLAS cannot read in place, a non-contiguous ``out=``). On a GPU
  each costs about 10 microseconds of host time, whatever its size.

FLOPs are those of direct convolution, counted from the layer shapes of the
products the step actually needs: 2 x multiply-adds for every forward conv,
transposed conv and linear layer, plus 2 x multiply-adds for each backward
product that is computed: the weight gradient when the weight requires grad,
the input gradient when the input requires grad (a network's first layer
does not need one; BEGAN's generator pass through D needs no D weight
gradients). A conv with input (N, C, H, W), weight (O, C, kh, kw) and output
(Ho, Wo) has N*Ho*Wo*O*C*kh*kw multiply-adds; a linear layer N*in*out. An
algorithm that needs fewer multiplications would count in its favour.

The machine's cores may be shared: a 1024^3 GEMM probe runs before each
configuration, and a configuration measured while the probe was below 70% of
the same 1024^3 product's best at the start is flagged as contended. (Like is
compared with like: a GPU reaches a smaller fraction of its peak on the
smaller product even when idle, so comparing it with the 2048^3 peak would
flag a quiet device.) ``--threads N`` sets the BLAS thread count
(the process restarts itself with the variable set, since BLAS reads it when
NumPy loads).

``--torch PYTHON`` then times the same BEGAN and MLP GAN steps in PyTorch on
the CPU, with that interpreter (a virtual environment with ``pip install
torch``; tinygan never imports torch) running ``benchmarks/torch_ref/bench.py``
of the source tree at the same thread count, and prints the ratios: figures
taken in one run, as comparisons must be on a shared machine; ``--rounds R``
alternates the two sides R times and reports the median ratio and its range
(tinygan/tools/bench_torch.py).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
import tracemalloc

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def _restart_with_threads(threads):
    if os.environ.get("TINYGAN_BENCH_THREADS") == str(threads):
        return
    env = dict(os.environ, TINYGAN_BENCH_THREADS=str(threads), **{v: str(threads) for v in _THREAD_VARS})
    os.execve(sys.executable, [sys.executable, "-m", "tinygan.bench", *sys.argv[1:]], env)


# ---- configurations ------------------------------------------------------------

CONFIGS = {
    "began32_n32": dict(kind="began", image_size=32, n=32, batch=16),
    "began64_n64": dict(kind="began", image_size=64, n=64, batch=16),
    "began64_n128": dict(kind="began", image_size=64, n=128, batch=16),
    "dcgan_mnist": dict(kind="dcgan", image_size=28, n=None, batch=64),
    "mlp_mnist": dict(kind="mlp", image_size=28, n=None, batch=64),
}


#: data-parallel replicas of the trainer, one per thread (``--replicas``; tinygan.distributed.threads)
REPLICAS = 1


def build(config, hidden=64):
    """(trainer, batch) for a configuration, with random data of the right shape on the backend;
    on NumPy with REPLICAS > 1 the trainer is replicated over that many threads."""
    from tinygan import backend
    if REPLICAS == 1 or backend.current() != "numpy":
        return _build(config, hidden)
    from tinygan.distributed import Replicated
    batch = None

    def make():  # every replica is built from seed 0, with the same batch
        nonlocal batch
        trainer, batch = _build(config, hidden)
        return trainer
    return Replicated(make, REPLICAS), batch


def _build(config, hidden):
    import numpy as np
    import tinygan as tg
    from tinygan import backend

    backend.seed(0)
    rng = np.random.default_rng(0)
    size, b = config["image_size"], config["batch"]
    if config["kind"] == "began":
        from tinygan.gan import BEGANDecoder, BEGANDiscriminator
        from tinygan.gan import BEGANTrainer
        n = config["n"]
        trainer = BEGANTrainer(BEGANDecoder(size, n, hidden), BEGANDiscriminator(size, n, hidden), num_fixed=1)
        batch = (tg.tensor(backend.to_device(rng.uniform(-1, 1, (b, 3, size, size)).astype(np.float32))),)
        return trainer, batch
    # the MNIST pairs with the networks of examples/gan_mnist.py (--arch mlp / --arch dcgan), without the
    # DCGAN's R1 (lazy: one D update in 4), as the PyTorch reference steps have none
    from tinygan.gan import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator
    from tinygan.gan import GANTrainer
    if config["kind"] == "mlp":
        G, D = MLPGenerator(100, (256, 512, 1024), (1, 28, 28)), MLPDiscriminator((1, 28, 28), (512, 256))
    else:
        G, D = DCGANGenerator(100, 32), DCGANDiscriminator(32)
    trainer = GANTrainer(G, D, loss="nonsaturating", k=1, lr=2e-4, num_fixed=1)
    batch = (tg.tensor(backend.to_device(rng.uniform(-1, 1, (b, 1, 28, 28)).astype(np.float32))),)
    return trainer, batch


# ---- measurement helpers ---------------------------------------------------------

def _sync():
    from tinygan import backend
    backend.synchronize()


PROBE_SIZE = 1024
CONTENDED_BELOW = 0.7


def contended(probe, reference):
    """Whether a probe's GFLOP/s says the machine was busy: below 70% of the same-size product's best."""
    return probe < CONTENDED_BELOW * reference


def gemm_peak(repeats=5, size=2048):
    """Best GFLOP/s of size x size float32 matrix products with the backend's matmul."""
    from tinygan import backend
    a = backend.randn(size, size)
    b = backend.randn(size, size)
    a @ b
    _sync()
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        _sync()
        best = max(best, 2 * size ** 3 / (time.perf_counter() - t) / 1e9)
    return best


@contextlib.contextmanager
def count_flops():
    """Count the direct-convolution FLOPs of the conv/linear products run inside the block."""
    from tinygan import functional as F
    from tinygan.tensor import is_grad_enabled
    total = [0]

    def macs(part, args, out):
        x, weight = args[0], args[1]
        if part == "conv2d":
            n, o, ho, wo = out.shape
            return n * ho * wo * o * weight.shape[1] * weight.shape[2] * weight.shape[3]
        if part == "conv_transpose2d":
            n, cin, h, w = x.shape
            return n * h * w * cin * weight.shape[1] * weight.shape[2] * weight.shape[3]
        return out.size * weight.shape[1]  # linear

    def callback(part, fn, args, kwargs):
        out = fn(*args, **kwargs)
        if part in ("conv2d", "conv_transpose2d", "linear"):
            x, weight = args[0], args[1]
            products = 1
            if is_grad_enabled():  # the backward's two products, for what needs a gradient
                products += bool(weight.requires_grad) + bool(getattr(x, "requires_grad", False))
            total[0] += 2 * macs(part, args, out) * products
        return out

    with F.profile(callback):
        yield total


@contextlib.contextmanager
def time_parts():
    """Wall time spent in GEMMs, im2col/col2im (with the Winograd transforms) and the optimizer while the block runs."""
    from tinygan import functional as F
    from tinygan import optim
    parts = {"gemm": 0.0, "im2col": 0.0, "optimizer": 0.0}
    names = {"gemm": "gemm", "transform": "im2col"}

    def callback(part, fn, args, kwargs):
        if part not in names:
            return fn(*args, **kwargs)
        _sync()
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        _sync()
        parts[names[part]] += time.perf_counter() - t
        return out

    original = optim.Optimizer.step

    def step(self, *a, **k):
        _sync()
        t = time.perf_counter()
        out = original(self, *a, **k)
        _sync()
        parts["optimizer"] += time.perf_counter() - t
        return out
    optim.Optimizer.step = step
    try:
        with F.profile(callback):
            yield parts
    finally:
        optim.Optimizer.step = original


def device_ops(config):
    """One training step's device operations by kind, as CuPy would launch them (the strict backend counts).

    The count depends on the layers, not on their width or the batch, so it is taken with n = 8 and
    a batch of 2 at the configuration's image size; the second step is counted (the first one also
    allocates the optimisers' state).
    """
    from tinygan import _strict, backend
    small = dict(config, batch=2, n=8 if config["n"] else None)
    with backend.using("strict"):
        trainer, batch = build(small)
        trainer.step(batch)
        _strict.reset_ops()
        trainer.step(batch)
        return dict(_strict.ops)


def time_steps(trainer, batch, steps, warmup):
    """Seconds of each of ``steps`` training steps, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        trainer.step(batch)
    _sync()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        trainer.step(batch)
        _sync()
        times.append(time.perf_counter() - t)
    return times


def measure(name, config, steps, warmup, peak, probe_repeats=3, probe_ref=None):
    """One configuration's row. ``probe_ref``: the best GFLOP/s of the PROBE_SIZE product on a quiet
    machine (measured here first when not given), against which this configuration's probe is judged."""
    from tinygan import backend
    if probe_ref is None:
        probe_ref = gemm_peak(repeats=5, size=PROBE_SIZE)
    probe = gemm_peak(repeats=probe_repeats, size=PROBE_SIZE)
    trainer, batch = build(config)
    times = time_steps(trainer, batch, steps, warmup)
    with count_flops() as flops:
        trainer.step(batch)
    with time_parts() as parts:
        t = time.perf_counter()
        trainer.step(batch)
        _sync()
        total = time.perf_counter() - t
    # the conv's reused work buffers were allocated before: free them so the measured step
    # allocates them again and they count in its peak
    from tinygan.functional import winograd
    winograd.release_work_buffers()
    if backend.current() == "cupy":  # the memory pool's high-water mark
        backend.memory_pool_reset()
        trainer.step(batch)
        _sync()
        peak_mem = backend.memory_pool_held() / 2 ** 20
    else:  # NumPy reports its allocations to tracemalloc
        tracemalloc.start()
        trainer.step(batch)
        peak_mem = tracemalloc.get_traced_memory()[1] / 2 ** 20
        tracemalloc.stop()
    s_med = statistics.median(times)
    gflop = flops[0] / 1e9
    ops = device_ops(config)
    breakdown = {k: v / total / REPLICAS for k, v in parts.items()}  # replicas: each thread's share
    breakdown["other"] = max(0.0, 1 - sum(breakdown.values()))
    return dict(config=name, image_size=config["image_size"], n=config["n"], batch=config["batch"],
                s_med=s_med, s_min=min(times), s_max=max(times), img_per_s=config["batch"] / s_med,
                gflop_step=gflop, gflops=gflop / s_med, peak_fraction=gflop / s_med / peak,
                peak_mem_mb=peak_mem, contended=contended(probe, probe_ref), probe_gflops=probe,
                probe_ref_gflops=probe_ref, breakdown=breakdown, device_ops=sum(ops.values()), device_ops_by_kind=ops)


def _table(rows, peak, threads, backend_name):
    how = f"{REPLICAS} data-parallel replicas of 1 BLAS thread" if REPLICAS > 1 else f"BLAS threads {threads or 'default'}"
    head = f"GEMM peak {peak:.1f} GFLOP/s (float32, 2048^3, backend {backend_name}, {how})"
    cols = f"{'config':<14}{'s/step med':>11}{'min':>8}{'max':>8}{'img/s':>8}{'GFLOP':>8}{'GFLOP/s':>9}{'of peak':>8}{'mem MB':>8}{'dev ops':>8}  time: gemm / im2col+wino / optim / other"
    lines = [head, cols, "-" * len(cols)]
    for r in rows:
        b = r["breakdown"]
        mem = f"{r['peak_mem_mb']:.0f}" if r["peak_mem_mb"] is not None else "n/a"
        flag = "  CONTENDED" if r["contended"] else ""
        lines.append(f"{r['config']:<14}{r['s_med']:>11.3f}{r['s_min']:>8.3f}{r['s_max']:>8.3f}{r['img_per_s']:>8.1f}"
                     f"{r['gflop_step']:>8.2f}{r['gflops']:>9.1f}{r['peak_fraction']:>8.0%}{mem:>8}{r['device_ops']:>8}  "
                     f"{b['gemm']:.0%} / {b['im2col']:.0%} / {b['optimizer']:.0%} / {b['other']:.0%}{flag}")
    return "\n".join(lines)


def _ops_table(rows, top=12):
    """Per configuration: device operations per step, the most frequent kinds first."""
    lines = []
    for r in rows:
        by_kind = sorted(r["device_ops_by_kind"].items(), key=lambda kv: -kv[1])
        lines.append(f"\n{r['config']}: {r['device_ops']:,} device operations per training step")
        lines += [f"  {count:>7,}  {kind}" for kind, count in by_kind[:top]]
        rest = sum(count for _, count in by_kind[top:])
        if rest:
            lines.append(f"  {rest:>7,}  ({len(by_kind) - top} other kinds)")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tinygan.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy", help="array backend to measure")
    p.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(CONFIGS)}")
    p.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--threads", type=int, default=None, help="BLAS threads (restarts the process with the setting)")
    p.add_argument("--json", action="store_true", help="also print one JSON line per configuration (first line: the GEMM peak)")
    p.add_argument("--ops", action="store_true",
                   help="also print each configuration's device operations per step by kind, as CuPy would launch them")
    p.add_argument("--device", type=int, default=None, metavar="N",
                   help="with --backend cupy: the GPU to use, counted among those CUDA_VISIBLE_DEVICES shows")
    p.add_argument("--torch", default=None, metavar="PYTHON",
                   help="also time the same BEGAN and MLP GAN steps in PyTorch (CPU) with this interpreter, "
                        "one that has torch installed, and print the ratios")
    p.add_argument("--replicas", action="store_true",
                   help="with --threads N > 1: train N replicas of the step data-parallel, one per thread "
                        "(each with 1 BLAS thread), as examples do with --threads N, instead of N BLAS threads")
    p.add_argument("--rounds", type=int, default=1, metavar="R",
                   help="with --torch: time both sides R times, alternating (tinygan, PyTorch, PyTorch, "
                        "tinygan, ...), and report the median ratio and its range over the rounds")
    args = p.parse_args(argv)
    if args.threads is not None:
        _restart_with_threads(args.threads)
    names = list(CONFIGS) if args.only is None else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        p.error(f"unknown configuration {unknown[0]!r}; choose from {', '.join(CONFIGS)}")
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    global REPLICAS
    if args.replicas:
        if args.threads is None or args.threads < 2:
            p.error("--replicas needs --threads N with N >= 2 (one replica per thread)")
        if args.backend != "numpy":
            p.error("--replicas runs on the numpy backend (GPUs take one process each: mpiexec)")
        REPLICAS = args.threads
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1, not {args.rounds}")
    if args.rounds > 1 and args.torch is None:
        p.error("--rounds alternates tinygan with PyTorch: give --torch PYTHON too")

    if args.torch is not None:  # before any measuring: a typo should not cost a whole benchmark
        import shutil
        from .bench_torch import TORCH_REF
        if not os.path.isfile(os.path.join(TORCH_REF, "bench.py")):
            p.error(f"--torch: the PyTorch reference {TORCH_REF} is not here (it ships with the source tree: "
                    "run the benchmark from a clone of tinygan)")
        if shutil.which(args.torch) is None:
            p.error(f"--torch: no interpreter {args.torch!r}: give the python of a virtual environment with torch")
    from tinygan import backend
    try:
        backend.use(args.backend) if args.device is None else backend.use(args.backend, device=args.device)
    except backend.BackendError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    threads = os.environ.get("TINYGAN_BENCH_THREADS")
    peak = gemm_peak()
    probe_ref = gemm_peak(size=PROBE_SIZE)
    if args.json:
        print(json.dumps({"config": "gemm_peak", "gflops": peak, "backend": args.backend, "threads": threads}), flush=True)
    rows = []
    for name in names:
        row = measure(name, CONFIGS[name], args.steps, args.warmup, peak, probe_ref=probe_ref)
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(f"measured {name}: {row['s_med']:.3f} s/step", file=sys.stderr, flush=True)
    print(_table(rows, peak, threads, args.backend))
    if args.ops:
        print(_ops_table(rows))
    if args.torch:
        from . import bench_torch
        torch_threads = int(threads) if threads else os.cpu_count()
        configs = bench_torch.reference_configs(names)
        first = {r["config"]: r["s_med"] for r in rows}

        def time_ours(r):  # round 0's figures are the table's above
            if r == 0:
                return first
            print(f"round {r}: tinygan", file=sys.stderr, flush=True)
            return {n: statistics.median(time_steps(*build(CONFIGS[n]), args.steps, args.warmup))
                    for n in names}

        def time_torch(r):
            print(f"round {r}: PyTorch", file=sys.stderr, flush=True)
            return bench_torch.torch_reference(args.torch, torch_threads, args.steps, args.warmup,
                                               configs=configs) if configs else {}
        try:
            ours, theirs = bench_torch.round_robin(args.rounds, time_ours, time_torch)
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        cmp = bench_torch.compare(ours, theirs)
        print(bench_torch.table(cmp, threads))
        if args.json:
            for name, c in cmp.items():
                print(json.dumps({"config": name, "torch_s_med": c["torch_s"], "ours_s_med": c["ours_s"],
                                  **{k: c[k] for k in ("ratio", "ratio_min", "ratio_max", "rounds")},
                                  "ours_s_per_round": [o[name] for o in ours],
                                  "torch_s_per_round": [t[name] for t in theirs]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
