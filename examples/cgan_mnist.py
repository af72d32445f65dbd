"""The conditional GAN on MNIST (Mirza & Osindero 2014, arXiv 1411.1784): G(z | y) and D(x | y).

    python examples/cgan_mnist.py                         # MLP G and D, one row of samples per digit
    python examples/cgan_mnist.py --arch dcgan --backend cupy
    python examples/cgan_mnist.py --data ~/data/mnist    # a folder with the four MNIST files
    python examples/cgan_mnist.py --resume               # continue runs/cgan_mnist where it stopped

The game of the GAN with the digit's label y given to both players: as in the
paper's MNIST model, z and the one-hot y are each mapped by their own hidden
layer and joined, in G and in D (the dcgan arch joins y to z and to the image
as constant planes). Real digits come with their labels; the fakes of each
step get labels drawn uniformly from 0-9.

The run folder (--out, default runs/cgan_mnist) gets log.csv, curves.png,
grid_epoch{E:03d}.png (after each epoch: one row per digit 0-9, the same z in
each column), metrics.csv (per epoch: how often the MNIST judge reads a sample
of label y as y, class entropy, Fréchet distance), samples.npy (float32
(N, 1, 28, 28) in [0, 1]) with labels.npy beside it (labels cycling 0-9),
metrics.json (the judge's scores of samples.npy) and checkpoint.npz.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tinygan.tools import mnist_gan  # noqa: E402  (the program, shared with gan_mnist.py)


def main(argv=None):
    mnist_gan.main(argv, conditional=True, doc=__doc__)


if __name__ == "__main__":
    main()
