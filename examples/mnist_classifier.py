"""Train the MNIST judge: the classifier whose outputs score the GAN examples' samples.

    python examples/mnist_classifier.py                       # 2 epochs, about 2 minutes on one core
    python examples/mnist_classifier.py --data ~/data/mnist   # a folder with the four MNIST files

A small conv net (conv 5x5 16, pool, conv 5x5 32, pool, fc 128, fc 10) trained
with tinygan itself by the shared loop. At the end it prints the test accuracy
and the accuracy per digit, and caches the weights in
~/.cache/tinygan/mnist_judge.npz (or $TINYGAN_CACHE), keyed by the judge's
version. gan_mnist.py and cgan_mnist.py score with the judge this program
trained once, with one BLAS thread (98.77%), whose weights ship in
tinygan/eval/mnist_judge.npz: a judge trained on another machine (or with
another BLAS thread count) sums in another order, has other weights and reads
other scores (Frechet distances a few percent apart for the same samples),
so the shipped one is the instrument every result is measured with. The
cached judge serves mnist_judge.get_judge(shipped=False).

The run folder gets log.csv (cross-entropy and batch accuracy per step),
curves.png, grid_epoch{E:03d}.png (the test digits the judge gets wrong, up to
100, after each epoch) and checkpoint.npz. A judge below 98.5% test accuracy
is not cached.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tinygan import distributed, nn  # noqa: E402
from tinygan.tools import cli  # noqa: E402
from tinygan.eval import mnist_judge  # noqa: E402
from tinygan.train.checkpoint import CheckpointError  # noqa: E402
from tinygan.data import DataError, load_mnist  # noqa: E402
from tinygan.train.images import save_grid  # noqa: E402
from tqdm import tqdm  # noqa: E402

DEFAULT_OUT = "runs/mnist_classifier"
#: Flags that fix the model, its training rule or the data: a resumed run keeps them.
RUN_OWN = ("batch_size", "seed", "data", "lr")


def build_parser():
    p = cli.parser(__doc__.split("\n\n")[0] + "\n\n" + "\n\n".join(__doc__.split("\n\n")[1:]))
    cli.add_common_args(
        p, epochs=2, batch_size=64, lr=1e-3, out=DEFAULT_OUT, lr_help="Adam learning rate of the classifier",
        data_help="a folder with the four MNIST IDX files, gzipped or not (e.g. ~/data/mnist); "
                  "default: download them (md5-checked) into ~/.cache/tinygan/mnist")
    g = p.add_argument_group("judge")
    g.add_argument("--no-cache", action="store_true",
                   help="do not write the trained weights to the judge cache (only the run folder)")
    return p


def main(argv=None):
    p = build_parser()
    args, given = cli.parse_args(p, argv)

    with cli.friendly_errors(DataError, CheckpointError):
        args = cli.prepare_run(args, given, example="mnist_classifier", run_own=RUN_OWN)
        cli.use_backend(args.backend, args.device)
        train = load_mnist(args.data, "train", progress=not args.no_progress)
        test = load_mnist(args.data, "test", progress=not args.no_progress)

        def hooks(judge):
            def wrong_digits(epoch, out):
                with nn.evaluating(judge.net):
                    pred, _ = judge.predict(test[0])
                tqdm.write(f"epoch {epoch + 1}: test accuracy {np.mean(pred == test[1]):.2%}", file=sys.stderr)
                wrong = np.flatnonzero(pred != test[1])[:100]
                if len(wrong):
                    save_grid(Path(out) / f"grid_epoch{epoch + 1:03d}.png",
                              test[0][wrong][:, None].astype(np.float32) / 255, nrow=10, scale=2)
            return [wrong_digits]

        config = cli.loop_config(args, extra=dict(vars(args), judge_version=mnist_judge.JUDGE_VERSION))
        judge, accuracy = mnist_judge.train_judge(train, test, config, lr=args.lr, epoch_hooks=hooks)
        if not distributed.is_main():
            return  # under mpiexec, what follows training is rank 0's
        out = Path(args.out)
        pred, _ = judge.predict(test[0])
        per_digit = [float(np.mean(pred[test[1] == d] == d)) for d in range(10)]
        print(f"test accuracy {accuracy:.2%} on {len(test[1])} digits; per digit: "
              + ", ".join(f"{d}: {a:.1%}" for d, a in enumerate(per_digit)))
        if accuracy < mnist_judge.MIN_TEST_ACCURACY:
            print(f"warning: below the {mnist_judge.MIN_TEST_ACCURACY:.1%} a judge needs; train longer "
                  "(--epochs) before trusting its scores", file=sys.stderr)
        elif not args.no_cache:
            print(f"judge cached in {mnist_judge.save_judge(judge)}")
    print(f"done: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
