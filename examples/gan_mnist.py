"""The minimax GAN on MNIST (Goodfellow et al. 2014, arXiv 1406.2661), Algorithm 1 with Adam.

    python examples/gan_mnist.py                          # MLP G and D, non-saturating G loss
    python examples/gan_mnist.py --loss minimax           # G minimises E log(1 - D(G(z))), the game as written
    python examples/gan_mnist.py --arch dcgan --backend cupy
    python examples/gan_mnist.py --data ~/data/mnist     # a folder with the four MNIST files
    python examples/gan_mnist.py --resume                # continue runs/gan_mnist where it stopped

G maps z ~ N(0, I) (100-d) to a 28x28 digit in [-1, 1]; D gives a logit. Each
step makes k discriminator updates, each on its own minibatch of real digits
and noise, then one generator update.

The run folder (--out, default runs/gan_mnist) gets log.csv (per step: loss_d,
loss_g, mean D(x), mean D(G(z)), step time), curves.png,
grid_epoch{E:03d}.png (64 samples from fixed noise after each epoch),
metrics.csv (per epoch: the MNIST judge's class entropy and Fréchet distance
on --eval-samples samples), samples.npy (--num-samples samples, float32
(N, 1, 28, 28) in [0, 1]), metrics.json (the judge's scores of samples.npy)
and checkpoint.npz. The judge is the classifier of
examples/mnist_classifier.py, with the weights shipped in
tinygan/eval/mnist_judge.npz (test accuracy 98.77%), so the same samples
score the same on every machine.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tinygan.tools import mnist_gan  # noqa: E402  (the program, shared with cgan_mnist.py)


def main(argv=None):
    mnist_gan.main(argv, conditional=False, doc=__doc__)


if __name__ == "__main__":
    main()
