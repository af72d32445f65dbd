"""The benchmark's FLOP count against a count done by hand, and its command line."""
import json
import os
import subprocess
import sys

import numpy as np

import tinygan as tg
from tinygan import backend
from tinygan.tools import bench
from tinygan import functional as F
from tinygan.gan import BEGANDecoder, BEGANDiscriminator
from tinygan.gan import BEGANTrainer


def began_macs_by_hand(n, h, b):
    """Multiply-adds of BEGAN's networks at 32x32 (3 scales), written out layer by layer."""
    k = 9  # 3x3 kernels
    decoder = (b * h * 8 * 8 * n                      # fc: h -> 8x8xn
               + 2 * b * 8 * 8 * n * n * k             # two convs at 8x8
               + 2 * b * 16 * 16 * n * n * k           # two convs at 16x16
               + 2 * b * 32 * 32 * n * n * k           # two convs at 32x32
               + b * 32 * 32 * 3 * n * k)              # to RGB
    first = b * 32 * 32 * n * 3 * k                    # encoder's first conv, 3 -> n
    encoder = (first
               + 2 * b * 32 * 32 * n * n * k           # scale 1: n filters
               + b * 16 * 16 * (2 * n) * n * k         # stride-2 conv n -> 2n
               + 2 * b * 16 * 16 * (2 * n) ** 2 * k    # scale 2: 2n filters
               + b * 8 * 8 * (3 * n) * (2 * n) * k     # stride-2 conv 2n -> 3n
               + 2 * b * 8 * 8 * (3 * n) ** 2 * k      # scale 3: 3n filters
               + b * 8 * 8 * 3 * n * h)                # fc: 8x8x3n -> h
    fc_g = b * h * 8 * 8 * n
    return decoder, encoder + decoder, first, fc_g


def test_began_step_flops_match_a_hand_count():
    n, h, b = 2, 3, 2
    backend.seed(0)
    trainer = BEGANTrainer(BEGANDecoder(32, n, h), BEGANDiscriminator(32, n, h), num_fixed=1)
    x = tg.tensor(np.zeros((b, 3, 32, 32), np.float32))
    with bench.count_flops() as flops:
        trainer.step((x,))
    G, D, E1, FCG = began_macs_by_hand(n, h, b)
    # D step: G(z_D) forward without grad; D on the 2B real+fake batch: forward, weight and input
    # gradients, except the first conv's input gradient (the images need none).
    d_step = G + 3 * 2 * D - 2 * E1
    # G step: G forward and both gradients except fc's input gradient (z needs none); D forward
    # and input gradients only (its weights are frozen during the G update).
    g_step = 3 * G - FCG + 2 * D
    assert flops[0] == 2 * (d_step + g_step)


def test_count_flops_uses_the_profiling_hook_and_leaves_it_as_it_was():
    from tinygan.functional import core
    before = core._profiler
    with bench.count_flops() as flops:
        assert core._profiler is not before
        F.linear(tg.tensor(np.ones((2, 3), np.float32)), tg.tensor(np.ones((4, 3), np.float32)))
    assert core._profiler is before
    assert flops[0] == 2 * 2 * 4 * 3      # 2 FLOPs per multiply-add, inputs that need no gradient: no backward products


def test_bench_cli_prints_json_lines_and_a_table():
    r = subprocess.run([sys.executable, "-m", "tinygan.bench", "--only", "began32_n32", "--steps", "1",
                        "--warmup", "0", "--json"], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    peak, row = json.loads(lines[0]), json.loads(lines[1])
    assert peak["config"] == "gemm_peak" and peak["gflops"] > 0
    for key in ("config", "image_size", "n", "batch", "s_med", "s_min", "s_max", "img_per_s", "gflop_step",
                "gflops", "peak_fraction", "peak_mem_mb"):
        assert key in row, key
    assert row["s_min"] <= row["s_med"] <= row["s_max"]
    assert abs(row["gflops"] - row["gflop_step"] / row["s_med"]) < 1e-6 * row["gflops"]
    assert any(line.startswith("began32_n32") for line in lines[2:])


def test_bench_rejects_an_unknown_configuration():
    r = subprocess.run([sys.executable, "-m", "tinygan.bench", "--only", "nope"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "unknown configuration 'nope'" in r.stderr


TINY = dict(kind="began", image_size=32, n=2, batch=2)


def test_contention_compares_the_probe_with_the_same_size_product(monkeypatch):
    # a quiet GPU: the 1024^3 probe reaches only 40% of the 2048^3 peak, as its own best does too
    speeds = {1024: 40.0, 2048: 100.0}
    monkeypatch.setattr(bench, "gemm_peak", lambda repeats=5, size=2048: speeds[size])
    row = bench.measure("tiny", TINY, steps=1, warmup=0, peak=100.0, probe_ref=40.0)
    assert not row["contended"] and row["probe_gflops"] == 40.0 and row["probe_ref_gflops"] == 40.0
    speeds[1024] = 20.0                     # now something else takes half the machine
    assert bench.measure("tiny", TINY, steps=1, warmup=0, peak=100.0, probe_ref=40.0)["contended"]
    assert bench.contended(27.9, 40.0) and not bench.contended(28.1, 40.0)


def test_peak_memory_reads_the_cupy_pool_through_the_backend(monkeypatch):
    # no GPU here: the strict backend runs the step, and the pool's reading is stood in for
    monkeypatch.setattr(bench, "gemm_peak", lambda repeats=5, size=2048: 1.0)
    backend.use("strict")
    calls = []
    monkeypatch.setattr(backend, "current", lambda: "cupy")
    monkeypatch.setattr(backend, "memory_pool_reset", lambda: calls.append("reset"))
    monkeypatch.setattr(backend, "memory_pool_held", lambda: 3 * 2 ** 20)
    row = bench.measure("tiny", TINY, steps=1, warmup=0, peak=1.0, probe_ref=1.0)
    assert row["peak_mem_mb"] == 3.0 and calls == ["reset"]
    assert "3" in bench._table([row], 1.0, None, "cupy").splitlines()[-1]
