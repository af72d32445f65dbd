"""One small training run through ``fit``, for tests/test_distributed.py to start under ``mpiexec -n 2``
and as a single process, and compare (not a test file itself: pytest does not collect it).

    python tests/distributed_run.py MODEL OUT [--backend B] [--steps N] [--batch-size B] [--fail-rank R]
                                    [--kill-rank R] [--lr LR] [--resume]

MODEL is ``began`` (32x32, n = 4) or ``mlp`` (the MLP GAN on 28x28). The data is random uint8 images
drawn from a fixed seed, the same on every rank. ``--fail-rank R`` makes rank R raise at step 3,
``--kill-rank R`` makes it SIGKILL itself there. With ``--report``, every rank prints a line
``rank R transfers T`` (host transfers during its training steps on the strict backend).
"""
import argparse
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from tinygan import _strict, backend, distributed  # noqa: E402
from tinygan.gan import BEGANDecoder, BEGANDiscriminator, BEGANTrainer, GANTrainer, MLPDiscriminator, MLPGenerator  # noqa: E402
from tinygan.tensor import tensor  # noqa: E402
from tinygan.tools import cli  # noqa: E402
from tinygan.train import LoopConfig, fit  # noqa: E402


def to_device(batch):
    (images,) = batch
    x = backend.to_device(images)
    return (tensor(x.astype(backend.DEFAULT_DTYPE) * (2 / 255) - 1),)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model", choices=("began", "mlp"))
    p.add_argument("out")
    p.add_argument("--backend", default="numpy")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--fail-rank", type=int, default=None)
    p.add_argument("--kill-rank", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--report", action="store_true")
    args = p.parse_args()
    with cli.friendly_errors(distributed.DistributedError):
        cli.use_backend(args.backend)
        rng = np.random.default_rng(123)
        if args.model == "began":
            data = rng.integers(0, 256, size=(64, 3, 32, 32), dtype=np.uint8)
            backend.seed(0)
            trainer = BEGANTrainer(BEGANDecoder(32, 4, 8), BEGANDiscriminator(32, 4, 8), lr=args.lr, num_fixed=4)
        else:
            data = rng.integers(0, 256, size=(96, 1, 28, 28), dtype=np.uint8)
            backend.seed(0)
            trainer = GANTrainer(MLPGenerator(8, (32, 64)), MLPDiscriminator(hidden=(64, 32)), lr=args.lr,
                                 num_fixed=4)
        step = trainer.step
        counts = []

        def checked_step(batch):
            at = len(counts) + 1
            if at == 3 and distributed.rank() == args.fail_rank:
                raise ValueError(f"a deliberate failure on rank {distributed.rank()} at step 3")
            if at == 3 and distributed.rank() == args.kill_rank:
                os.kill(os.getpid(), signal.SIGKILL)
            before = _strict.transfers
            metrics = step(batch)
            counts.append(_strict.transfers - before)
            return metrics
        trainer.step = checked_step
        config = LoopConfig(out=args.out, epochs=100, batch_size=args.batch_size, seed=0, log_every=5,
                            checkpoint_every=10, max_steps=args.steps, resume=args.resume, progress=False,
                            extra={k: v for k, v in vars(args).items() if k not in ("steps", "resume")})
        fit(trainer, (data,), config, to_device)
    if args.report:
        print(f"rank {distributed.rank()} transfers {sum(counts)} steps {len(counts)}", flush=True)


if __name__ == "__main__":
    main()
