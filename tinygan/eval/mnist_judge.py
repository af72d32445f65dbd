"""The MNIST judge: a small convolutional classifier, trained with tinygan itself, that scores samples.

There is no pretrained network to download here, so GAN samples of MNIST are
judged by a classifier trained on the real digits:

* the class histogram of unconditional samples and its entropy (mode coverage:
  a generator that forgets a digit shows a hole in the histogram);
* the Fréchet distance between real test digits and samples in the
  classifier's penultimate (128-d) feature space, an MNIST analogue of FID;
* for a conditional GAN, the fraction of samples generated for label y that
  the classifier reads as y.

The metrics themselves are host functions in :mod:`tinygan.eval.metrics`
(:func:`~tinygan.eval.metrics.classifier_metrics`); this module owns the network,
its training (with the shared loop, :func:`tinygan.train.fit`) and the
cache of its weights.

Network (about 0.2 M parameters; about a minute per epoch on one CPU core)::

    x (N, 1, 28, 28) in [0, 1] -> (x - 0.5) / 0.5
    conv 5x5, 1 -> 16, pad 2, ReLU, avg-pool 2      -> 16 x 14 x 14
    conv 5x5, 16 -> 32, pad 2, ReLU, avg-pool 2     -> 32 x 7 x 7
    linear 1568 -> 128, ReLU                        -> features (penultimate layer)
    linear 128 -> 10                                -> logits

trained by Adam on the cross-entropy
``-log softmax(l)_y = logsumexp(l) - l_y`` for 2 epochs (test accuracy about 99%).

The examples score with one fixed judge, shipped beside this module
(``mnist_judge.npz``, :data:`SHIPPED_JUDGE`): weights this code trained once
(``python examples/mnist_classifier.py``, one BLAS thread; test accuracy 98.77%).
A judge retrained on another machine is another instrument: two trained here,
with one BLAS thread and with two, read the Fréchet distance of 10,000 real
training digits as 2.47 and 2.30, of one DCGAN's samples as 5.09 and 4.91, and
its rarest digit as 7.43% and 7.58% (floating-point sums in another order give
other weights). With the shipped weights, the same samples score the same on
every machine, so a run's numbers compare with docs/gan/RESULTS.md.

A retrained judge (``get_judge(shipped=False)``, and what
examples/mnist_classifier.py writes) is cached in
``tinygan.data.default_cache_dir() / "mnist_judge.npz"`` (one tinygan
checkpoint), keyed by :data:`JUDGE_VERSION`: a cache written by another
version of the network is not used, so scores are never computed by a judge
other than the one this code describes. Processes that need it at the same time
take turns: one trains it, in a run folder of its own, the others wait for its
cached weights.
"""
from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from .. import backend, distributed
from .. import functional as F
from .. import nn
from ..nn import StateDictError, check_state_matches
from ..optim import Adam
from ..tensor import Tensor, no_grad, tensor
from ..train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from . import metrics

__all__ = ["JUDGE_VERSION", "MIN_TEST_ACCURACY", "JudgeNet", "ClassifierTrainer", "MNISTJudge", "SHIPPED_JUDGE",
           "judge_path", "cross_entropy", "images_to_device", "batch_to_device", "train_judge", "save_judge", "load_judge",
           "get_judge"]

#: Key of the cached weights: change it whenever the network or its training changes.
JUDGE_VERSION = "mnist-judge-1: conv5x5-16/pool/conv5x5-32/pool/fc128/fc10, Adam 1e-3, 2 epochs"
#: The project's judge: weights trained once by this code and shipped with it (see the module's text).
SHIPPED_JUDGE = Path(__file__).with_name("mnist_judge.npz")
#: The judge is only trusted above this test accuracy; below it, its scores come with a warning.
MIN_TEST_ACCURACY = 0.985
NUM_CLASSES = 10


def judge_path():
    """Where the judge's weights are cached: ``default_cache_dir() / "mnist_judge.npz"``."""
    from ..data import default_cache_dir
    return default_cache_dir() / "mnist_judge.npz"


def cross_entropy(logits, labels):
    """mean_i [logsumexp(l_i) - l_i[y_i]], stable: the row maximum is subtracted as a constant.

    ``labels`` are integer class indices (device array) of shape (N,).
    """
    row_max = Tensor(logits.data.max(axis=1, keepdims=True))  # a constant: cancels in the gradient
    lse = ((logits - row_max).exp().sum(axis=1, keepdims=True)).log() + row_max
    picked = (logits * F.one_hot(labels, logits.shape[1], dtype=logits.dtype)).sum(axis=1, keepdims=True)
    return (lse - picked).mean()


def images_to_device(images):
    """uint8 (N, 28, 28) or float (N, 1, 28, 28) in [0, 1] on the host -> float32 (N, 1, 28, 28) in [0, 1] on the device."""
    a = np.asarray(images) if backend.is_host(images) else images
    if a.ndim == 3:
        a = a.reshape(a.shape[0], 1, *a.shape[1:])
    if a.ndim != 4 or tuple(a.shape[1:]) != (1, 28, 28):
        raise ValueError(f"MNIST judge: expected images of shape (N, 28, 28) or (N, 1, 28, 28), got {tuple(a.shape)}")
    x = backend.to_device(a)
    if a.dtype == np.uint8:
        return x.astype(backend.DEFAULT_DTYPE) * (1 / 255)  # the cast happens on the device
    return x.astype(backend.DEFAULT_DTYPE)


class JudgeNet(nn.Module):
    """The classifier of the module docstring; ``features(x)`` is its penultimate layer."""

    feature_dim = 128

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 5, padding=2)
        self.conv2 = nn.Conv2d(16, 32, 5, padding=2)
        self.fc1 = nn.Linear(32 * 7 * 7, self.feature_dim)
        self.fc2 = nn.Linear(self.feature_dim, NUM_CLASSES)

    def features(self, x):
        """(N, 1, 28, 28) in [0, 1] -> (N, 128) penultimate activations."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"JudgeNet: expected images of shape (N, 1, 28, 28) in [0, 1], got {x.shape}")
        h = (x - 0.5) * 2.0  # centred inputs: the first layer's default init expects them
        h = F.avg_pool2d(F.relu(self.conv1(h)), 2)
        h = F.avg_pool2d(F.relu(self.conv2(h)), 2)
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x):
        return self.fc2(self.features(x))


class ClassifierTrainer:
    """The judge's training step, in the shared loop's trainer interface (see tinygan.train.loop)."""

    name = "MNIST judge"
    headline = ("loss", "accuracy")
    curve_panels = [("cross-entropy", ["loss"]), ("batch accuracy", ["accuracy"])]

    def __init__(self, net, lr=1e-3):
        self.net = net
        self.opt = Adam(net.parameters(), lr=lr)

    def step(self, batch):
        x, labels = batch
        logits = self.net(tensor(x))
        loss = cross_entropy(logits, labels)
        self.opt.zero_grad()
        loss.backward()
        accuracy = (logits.data.argmax(axis=1) == labels).astype(backend.DEFAULT_DTYPE).mean()
        # many processes: the gradients' (and the metrics') mean over the ranks; one process: as they are
        loss_value, accuracy = distributed.all_reduce_gradients(self.opt, loss.data, accuracy)
        self.opt.step()
        return {"loss": loss_value, "accuracy": accuracy}

    def state_dict(self):
        return {"net": dict(self.net.state_dict()), "opt": self.opt.state_dict()}

    def load_state_dict(self, s):
        check_state_matches({k: v.shape for k, v in self.net.state_dict().items()}, s["net"], "MNIST judge",
                            hint=None)
        self.net.load_state_dict(s["net"])
        self.opt.load_state_dict(s["opt"])


def batch_to_device(batch):
    """(uint8 images, labels) on the host -> (float32 (N, 1, 28, 28) in [0, 1], int64 labels) on the device."""
    images, labels = batch
    return images_to_device(images), backend.to_device(labels.astype(np.int64))


class MNISTJudge:
    """A trained :class:`JudgeNet` that scores MNIST samples (images in [0, 1])."""

    def __init__(self, net, test_accuracy=None):
        self.net = net.eval()
        self.test_accuracy = test_accuracy
        self._real_features = None

    def predict(self, images, chunk=1000):
        """(predicted class (N,) int64, penultimate features (N, 128) float64), on the host."""
        preds, feats = [], []
        n = len(images)
        for i in range(0, n, chunk):
            x = images_to_device(images[i:i + chunk])
            with no_grad():
                f = self.net.features(tensor(x))
                logits = self.net.fc2(f)
            # one transfer per chunk, at an evaluation point (never inside a training step)
            preds.append(backend.to_host(logits.data.argmax(axis=1)).astype(np.int64))
            feats.append(backend.to_host(f.data).astype(np.float64))
        if not preds:
            raise ValueError("MNIST judge: no images to score")
        return np.concatenate(preds), np.concatenate(feats)

    def accuracy(self, images, labels):
        """Fraction of ``images`` classified as ``labels``."""
        pred, _ = self.predict(images)
        return float(np.mean(pred == np.asarray(labels)))

    def set_reference(self, real_images):
        """The real digits whose features the Fréchet distance compares samples with (e.g. the test set)."""
        self._real_features = self.predict(real_images)[1]
        return self

    def evaluate(self, samples, labels=None):
        """Score samples (N, 1, 28, 28) in [0, 1]: see :func:`tinygan.eval.metrics.classifier_metrics`.

        Needs :meth:`set_reference` first for the Fréchet distance.
        """
        if self._real_features is None:
            raise RuntimeError("MNISTJudge.evaluate: call set_reference(real_images) first "
                               "(the real digits the Fréchet distance compares with)")
        samples = np.asarray(samples)
        if samples.ndim != 4 or samples.shape[1:] != (1, 28, 28):
            raise ValueError(f"MNIST judge: samples must have shape (N, 1, 28, 28) in [0, 1], got {samples.shape}")
        pred, feats = self.predict(samples)
        return metrics.classifier_metrics(pred, feats, self._real_features, labels=labels,
                                          num_classes=NUM_CLASSES)


def train_judge(train, test, config, lr=1e-3, epoch_hooks=None):
    """Train a :class:`JudgeNet` with the shared loop; returns (MNISTJudge, test accuracy).

    ``train`` and ``test`` are ``(images uint8 (N, 28, 28), labels (N,))`` host
    pairs; ``config`` is the loop's :class:`~tinygan.train.LoopConfig` (run
    folder, epochs, batch size, seed, resume, ...); ``epoch_hooks(judge)``, if
    given, returns the loop's per-epoch hooks. The global random generator is
    restored afterwards, so training the judge in the middle of a GAN's run
    does not change that run's noise.
    """
    from ..train import fit
    with backend.rng_fork(config.seed):
        net = JudgeNet()
        trainer = ClassifierTrainer(net, lr=lr)
        judge = MNISTJudge(net)
        net.train()
        fit(trainer, (train[0], train[1]), config, batch_to_device,
            epoch_hooks=epoch_hooks(judge) if epoch_hooks else ())
    net.eval()
    judge.test_accuracy = judge.accuracy(test[0], test[1])
    return judge, judge.test_accuracy


def save_judge(judge, path=None):
    """Cache the judge's weights as a tinygan checkpoint, keyed by :data:`JUDGE_VERSION`.

    The file is written atomically (a reader sees the old file or the new one).
    A failed write (read-only cache, full disk) raises a DataError naming the
    path and suggesting ``TINYGAN_CACHE``.
    """
    from ..data.cache import cache_writes
    path = Path(path) if path is not None else judge_path()
    arrays = {f"net/{k}": backend.to_host(v) for k, v in judge.net.state_dict().items()}
    with cache_writes(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, arrays, {"version": JUDGE_VERSION, "test_accuracy": judge.test_accuracy})
    return path


def load_judge(path=None):
    """The cached judge, or None when there is none or it was written by another JUDGE_VERSION.

    A file that exists but is not a readable checkpoint raises CheckpointError.
    """
    path = Path(path) if path is not None else judge_path()
    if not path.exists():
        return None
    arrays, meta = load_checkpoint(path)
    if meta.get("version") != JUDGE_VERSION:
        return None
    net = JudgeNet()
    state = {k[len("net/"):]: v for k, v in arrays.items() if k.startswith("net/")}
    try:
        check_state_matches({k: v.shape for k, v in net.state_dict().items()}, state, "MNIST judge",
                            hint=f"delete {path} to retrain it")
    except StateDictError as e:  # the cached file is what is wrong
        raise CheckpointError(str(e)) from None
    net.load_state_dict(state)
    return MNISTJudge(net, meta.get("test_accuracy"))


def get_judge(data=None, progress=True, log=None, shipped=True):
    """The project's judge (:data:`SHIPPED_JUDGE`), or with ``shipped=False`` the cached judge of
    this machine, trained first (about 2 minutes on one core) if the cache has none.

    ``data`` is an MNIST folder for :func:`tinygan.data.load_mnist` (None: its
    download cache). The judge's reference for the Fréchet distance is set to
    the MNIST test set. An install without the shipped file (or with one of
    another version) says so and falls back to the cache.
    """
    from ..data import load_mnist
    from ..data.cache import cache_lock
    log = log or (lambda msg: print(msg, file=sys.stderr))
    test = load_mnist(data, "test", progress=progress)
    judge = load_judge(SHIPPED_JUDGE) if shipped else None
    if shipped and judge is None:
        log(f"the shipped MNIST judge ({SHIPPED_JUDGE}) is missing or of another version than "
            f"{JUDGE_VERSION!r}: using one trained on this machine, whose scores differ a little")
    if judge is None:
        judge = load_judge()
    if judge is None:
        # One process trains; the others wait here, then load what it cached.
        with cache_lock(judge_path(), "train the MNIST judge", log=log):
            judge = load_judge()
            if judge is None:
                judge = _train_and_cache(data, test, progress, log)
    if judge.test_accuracy is not None and not judge.test_accuracy >= MIN_TEST_ACCURACY:
        log(f"warning: the MNIST judge's test accuracy {judge.test_accuracy:.2%} is below "
            f"{MIN_TEST_ACCURACY:.1%}; its scores are unreliable")
    return judge.set_reference(test[0])


def _train_and_cache(data, test, progress, log):
    """Train the judge in a run folder of its own, cache it, then move the run to ``mnist_judge_run``.

    Called with the judge's cache lock held. The run folder is private to this
    process until training has finished (``.mnist_judge_run.<random>`` in the
    cache), so no other process ever writes into it or sees half of it.
    """
    from ..data import default_cache_dir, load_mnist
    from ..data.cache import cache_writes
    from ..train import LoopConfig
    log(f"no MNIST judge of version {JUDGE_VERSION!r} in {judge_path()}: training it "
        "(python examples/mnist_classifier.py does the same)")
    train = load_mnist(data, "train", progress=progress)
    cache = default_cache_dir()
    with cache_writes(cache):
        cache.mkdir(parents=True, exist_ok=True)
        run = Path(tempfile.mkdtemp(prefix=".mnist_judge_run.", dir=cache))
    try:
        config = LoopConfig(out=str(run), epochs=2, batch_size=64, progress=progress,
                            extra={"judge_version": JUDGE_VERSION})
        with cache_writes(run):
            judge, acc = train_judge(train, test, config)
        path = save_judge(judge)
        with cache_writes(cache / "mnist_judge_run"):
            _replace_folder(run, cache / "mnist_judge_run")
    except BaseException:
        shutil.rmtree(run, ignore_errors=True)
        raise
    log(f"MNIST judge: test accuracy {acc:.2%}; cached in {path}")
    return judge


def _replace_folder(new, final):
    """Put the folder ``new`` at ``final``, the old ``final`` (if any) removed; renames only."""
    new, final = Path(new), Path(final)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old.{secrets.token_hex(4)}")
        os.replace(final, old)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
