"""Time a data-parallel training step and its gradient all-reduce:

    OPENBLAS_NUM_THREADS=1 mpiexec -n 2 python -m tinygan.tools.distbench            # BEGAN 64x64, n = 64
    OPENBLAS_NUM_THREADS=1 python -m tinygan.tools.distbench                         # the same, one process
    mpiexec -n 2 python -m tinygan.tools.distbench --size 32 --filters 32 --steps 5 --json

One BEGAN step on a global batch of ``--batch-size`` (16) split over the ranks,
random images, after ``--warmup`` steps: the median seconds per step, and per
step the time spent in the gradient all-reduces (both networks', with the
step's losses riding along) and the bytes they move. Rank 0 prints; the
all-reduce time is the slowest rank's, since a rank that arrives early waits
there for the others.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from .. import backend, distributed
from ..gan import BEGANDecoder, BEGANDiscriminator, BEGANTrainer
from ..tensor import tensor


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=64, choices=(32, 64, 128))
    p.add_argument("--filters", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16, help="global batch, split over the ranks")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--backend", default="numpy", choices=("numpy", "cupy", "strict"))
    p.add_argument("--json", action="store_true", help="also print one JSON line")
    args = p.parse_args(argv)
    from . import cli
    with cli.friendly_errors(distributed.DistributedError):
        distributed.check_divisible(args.batch_size)
        cli.use_backend(args.backend)
        backend.seed(0)
        trainer = BEGANTrainer(BEGANDecoder(args.size, args.filters, 64), BEGANDiscriminator(args.size, args.filters, 64))
        world = distributed.world_size()
        images = np.random.default_rng(0).uniform(-1, 1, (args.batch_size, 3, args.size, args.size))
        x = tensor(backend.to_device(distributed.shard(images).astype(np.float32)))
        times, reduce_times, calls, moved = [], [], 0, 0
        for i in range(args.warmup + args.steps):
            before = dict(distributed.stats)
            start = time.perf_counter()
            backend.to_host(trainer.step((x,))["M"])  # waits for the device
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
                reduce_times.append(distributed.stats["all_reduce_s"] - before["all_reduce_s"])
                calls = distributed.stats["all_reduce_calls"] - before["all_reduce_calls"]
                moved = distributed.stats["all_reduce_bytes"] - before["all_reduce_bytes"]
        slowest = max(distributed.all_gather(statistics.median(reduce_times)))
        step_s = max(distributed.all_gather(statistics.median(times)))
    if distributed.is_main():
        row = dict(config=f"began{args.size}_n{args.filters}", ranks=world, global_batch=args.batch_size,
                   backend=args.backend, s_step=round(step_s, 4), all_reduce_s_step=round(slowest, 5),
                   all_reduce_calls_step=calls, all_reduce_mb_step=round(moved / 2 ** 20, 2),
                   img_per_s=round(args.batch_size / step_s, 2))
        print(f"BEGAN {args.size}x{args.size} n={args.filters}, global batch {args.batch_size} on {world} "
              f"process{'es' if world > 1 else ''} ({args.backend}): {step_s:.3f} s/step (median of {args.steps}), "
              f"{row['img_per_s']} img/s; gradient all-reduce {slowest * 1e3:.1f} ms/step "
              f"({calls} calls, {row['all_reduce_mb_step']} MB)")
        if args.json:
            print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
