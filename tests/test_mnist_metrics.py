"""The classifier-based MNIST metrics (tinygan.eval.metrics) and the judge that feeds them (tinygan.eval.mnist_judge)."""
import math
from pathlib import Path

import numpy as np
import pytest

from tinygan import _strict, backend, tensor
from tinygan.eval import mnist_judge
from tinygan.train.checkpoint import CheckpointError, save_checkpoint
from tinygan.eval.metrics import class_distribution, classifier_metrics, label_accuracy, label_entropy
from tinygan.train import LoopConfig

from fakes import write_mnist

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """NumPy backend, and a cache folder of the test's own (never the user's cached judge)."""
    backend.use("numpy")
    backend.seed(0)
    monkeypatch.setenv("TINYGAN_CACHE", str(tmp_path / "cache"))
    yield
    backend.use("numpy")


# ---------------------------------------------------------------------------
# host metrics on constructed predictions
# ---------------------------------------------------------------------------

def test_class_distribution_and_entropy_known_answers():
    uniform = np.arange(1000) % 10
    p = class_distribution(uniform)
    np.testing.assert_allclose(p, 0.1)
    assert label_entropy(p) == pytest.approx(math.log(10))

    collapsed = np.full(50, 7)
    p = class_distribution(collapsed)
    assert p[7] == 1.0 and p.sum() == 1.0
    assert label_entropy(p) == 0.0

    two = np.array([3, 5] * 20)
    p = class_distribution(two)
    assert p[3] == p[5] == 0.5 and label_entropy(p) == pytest.approx(math.log(2))

    p = class_distribution(np.array([0, 0, 0, 1]), num_classes=4)
    np.testing.assert_allclose(p, [0.75, 0.25, 0, 0])
    assert label_entropy(p) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))


def test_class_metrics_reject_bad_input():
    with pytest.raises(ValueError, match=r"predicted class indices must be in \[0, 10\), got values from 0 to 10"):
        class_distribution(np.array([0, 10]))
    with pytest.raises(ValueError, match="integer class indices, got dtype float64"):
        class_distribution(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="sum to 1"):
        label_entropy(np.array([0.5, 0.6]))
    with pytest.raises(ValueError, match="same length"):
        label_accuracy(np.array([1, 2]), np.array([1, 2, 3]))


def test_label_accuracy_known_answer():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 0, 0, 9, 1, 0, 2, 2, 2, 2])
    acc, per_class = label_accuracy(pred, labels)
    assert acc == pytest.approx(0.8)
    np.testing.assert_allclose(per_class[:3], [0.75, 0.5, 1.0])
    assert np.isnan(per_class[3:]).all()    # no samples of those labels


def test_classifier_metrics_frechet_distance_of_a_shift():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((500, 4))
    shift = np.array([1.0, -2.0, 0.0, 0.5])
    pred = np.arange(500) % 10
    same = classifier_metrics(pred, real, real)
    assert same["fd"] == pytest.approx(0.0, abs=1e-9)
    shifted = classifier_metrics(pred, real + shift, real, labels=pred)
    assert shifted["fd"] == pytest.approx(shift @ shift, rel=1e-9)   # same covariance: ||mu_a - mu_b||^2
    assert shifted["entropy"] == pytest.approx(math.log(10)) and shifted["accuracy"] == 1.0
    with pytest.raises(ValueError, match="one row per prediction"):
        classifier_metrics(pred[:10], real, real)


# ---------------------------------------------------------------------------
# the judge network, its loss and its cache
# ---------------------------------------------------------------------------

def test_cross_entropy_value_gradient_and_huge_logits():
    logits_np = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    labels = np.array([1, 2])
    logits = tensor(logits_np, requires_grad=True)
    loss = mnist_judge.cross_entropy(logits, labels)
    log_softmax = logits_np - np.log(np.exp(logits_np).sum(axis=1, keepdims=True))
    assert loss.item() == pytest.approx(-log_softmax[[0, 1], labels].mean(), rel=1e-12)
    loss.backward()
    softmax = np.exp(log_softmax)
    onehot = np.eye(3)[labels]
    np.testing.assert_allclose(logits.grad, (softmax - onehot) / 2, rtol=1e-12)

    huge = tensor(np.array([[1e4, -1e4, 0.0]]), requires_grad=True)
    loss = mnist_judge.cross_entropy(huge, np.array([1]))
    loss.backward()
    assert loss.item() == pytest.approx(2e4) and np.isfinite(huge.grad).all()


def test_judge_shapes_and_device_only_prediction():
    backend.use("strict")
    backend.seed(0)
    net = mnist_judge.JudgeNet()
    x = tensor(mnist_judge.images_to_device(np.zeros((3, 28, 28), np.uint8)))
    assert net(x).shape == (3, 10) and net.features(x).shape == (3, 128)
    judge = mnist_judge.MNISTJudge(net)
    _strict.reset_transfers()
    pred, feats = judge.predict(np.random.default_rng(0).random((5, 1, 28, 28)).astype(np.float32), chunk=2)
    assert _strict.transfers == 6           # one explicit copy of predictions and features per chunk, no others
    assert pred.shape == (5,) and pred.dtype == np.int64 and feats.shape == (5, 128)
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 28, 28\) or \(N, 1, 28, 28\)"):
        judge.predict(np.zeros((2, 3, 28, 28), np.float32))


def test_judge_cache_is_keyed_by_version(tmp_path):
    backend.seed(0)
    judge = mnist_judge.MNISTJudge(mnist_judge.JudgeNet(), test_accuracy=0.99)
    images = np.random.default_rng(1).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    path = mnist_judge.save_judge(judge)
    assert path == mnist_judge.judge_path() and path.parent == tmp_path / "cache"

    loaded = mnist_judge.load_judge()
    assert loaded.test_accuracy == 0.99
    for a, b in zip(judge.predict(images), loaded.predict(images)):
        np.testing.assert_array_equal(a, b)

    # a cache of another version of the judge is not used
    arrays = {f"net/{k}": backend.to_host(v) for k, v in judge.net.state_dict().items()}
    save_checkpoint(path, arrays, {"version": "mnist-judge-0", "test_accuracy": 0.5})
    assert mnist_judge.load_judge() is None
    # a cache of the right version with other shapes names the parameter
    arrays["net/fc1.weight"] = np.zeros((64, 1568), np.float32)
    save_checkpoint(path, arrays, {"version": mnist_judge.JUDGE_VERSION})
    with pytest.raises(CheckpointError, match="parameter 'fc1.weight' has shape \\(64, 1568\\)"):
        mnist_judge.load_judge()
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a tinygan .npz checkpoint"):
        mnist_judge.load_judge()


# ---------------------------------------------------------------------------
# a quickly trained judge on real digits: the metrics on samples with known answers
# ---------------------------------------------------------------------------

@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"MNIST is not in {SHARED_MNIST}")
def test_quick_judge_scores_real_and_collapsed_digits(tmp_path):
    from tinygan.data import load_mnist
    train_images, train_labels = load_mnist(SHARED_MNIST, "train")
    test_images, test_labels = load_mnist(SHARED_MNIST, "test")
    train = (train_images[:3000], train_labels[:3000])
    test = (test_images[:1000], test_labels[:1000])
    config = LoopConfig(out=str(tmp_path / "judge"), epochs=1, batch_size=32, seed=0, progress=False)
    state = backend.rng_state()
    judge, accuracy = mnist_judge.train_judge(train, test, config)
    assert backend.rng_state() == state     # training the judge leaves the caller's noise alone
    assert accuracy > 0.75                  # 94 steps already learn digits (about 84%; the full judge: 98.5%+)

    judge.set_reference(test[0][:500])
    real = test[0][500:][:, None].astype(np.float32) / 255
    scores = judge.evaluate(real, labels=test[1][500:].astype(np.int64))
    # real digits cover the ten classes evenly; the quick judge's 16% of errors skew the histogram a little
    assert scores["entropy"] > math.log(10) - 0.15
    assert scores["accuracy"] > 0.75
    collapsed = np.repeat(real[:1], 500, axis=0)         # a generator that draws one digit only
    worst = judge.evaluate(collapsed)
    assert worst["entropy"] == 0.0
    assert worst["fd"] > 5 * scores["fd"]


# ---------------------------------------------------------------------------
# the shipped judge: one fixed instrument for every machine
# ---------------------------------------------------------------------------

def test_get_judge_scores_with_the_shipped_weights_and_trains_nothing(tmp_path):
    messages = []
    judge = mnist_judge.get_judge(write_mnist(tmp_path / "mnist", (("t10k", 20),)), progress=False, log=messages.append)
    shipped = mnist_judge.load_judge(mnist_judge.SHIPPED_JUDGE)
    assert messages == [] and not (tmp_path / "cache").exists()      # no training, no cache written
    assert judge.test_accuracy == shipped.test_accuracy >= mnist_judge.MIN_TEST_ACCURACY
    images = np.random.default_rng(1).random((7, 1, 28, 28)).astype(np.float32)
    for a, b in zip(judge.predict(images), shipped.predict(images)):
        np.testing.assert_array_equal(a, b)


def test_without_the_shipped_file_get_judge_says_so_and_uses_the_cache(tmp_path, monkeypatch):
    backend.seed(3)
    cached = mnist_judge.MNISTJudge(mnist_judge.JudgeNet(), test_accuracy=0.99)
    mnist_judge.save_judge(cached)
    monkeypatch.setattr(mnist_judge, "SHIPPED_JUDGE", tmp_path / "missing.npz")
    messages = []
    judge = mnist_judge.get_judge(write_mnist(tmp_path / "mnist", (("t10k", 20),)), progress=False, log=messages.append)
    assert len(messages) == 1 and "the shipped MNIST judge" in messages[0] and "missing.npz" in messages[0]
    assert judge.test_accuracy == 0.99
    images = np.random.default_rng(1).random((4, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(judge.predict(images)[1], cached.predict(images)[1])


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"MNIST is not in {SHARED_MNIST}")
def test_the_shipped_judge_is_the_judge_it_says_it_is():
    """Its recorded test accuracy is what its weights score on the MNIST test set (98.77%), to within
    two digits of 10,000 (another CPU's sums may flip a digit on the edge between two classes); the
    judge trained with two BLAS threads scores 98.83%, six digits away."""
    from tinygan.data import load_mnist
    judge = mnist_judge.load_judge(mnist_judge.SHIPPED_JUDGE)
    images, labels = load_mnist(SHARED_MNIST, "test")
    assert judge.test_accuracy == pytest.approx(0.9877, abs=1e-9)
    assert judge.accuracy(images, labels) == pytest.approx(judge.test_accuracy, abs=2e-4)
