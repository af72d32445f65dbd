"""IDX reading and load_mnist, on tiny files written here and on the real copy."""

import gzip
import shutil
import struct
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tinygan.data import DataError, load_mnist, read_idx
from tinygan.data.mnist import MNIST_MD5
from fakes import idx_bytes

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Point the cache at a temporary folder and make any network use fail loudly."""
    monkeypatch.setenv("TINYGAN_CACHE", str(tmp_path / "cache"))

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def write_mnist(folder, n_images=5, n_labels=None, gz=True, seed=0):
    """Write a tiny 'train' split into folder; return (images, labels)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n_images, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n_labels if n_labels is not None else n_images, dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for stem, data in (("train-images-idx3-ubyte", idx_bytes(images)),
                       ("train-labels-idx1-ubyte", idx_bytes(labels))):
        if gz:
            (folder / (stem + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return images, labels


def test_read_idx_plain_and_gzipped_by_magic_bytes(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "plain").write_bytes(idx_bytes(images))
    # Gzip is detected by content: a gzipped file without .gz and a plain file with it.
    (tmp_path / "zipped-no-suffix").write_bytes(gzip.compress(idx_bytes(images)))
    (tmp_path / "plain.gz").write_bytes(idx_bytes(images))
    for name in ("plain", "zipped-no-suffix", "plain.gz"):
        got = read_idx(tmp_path / name)
        assert got.dtype == np.uint8 and got.shape == (2, 3, 4)
        np.testing.assert_array_equal(got, images)
        got[0, 0, 0] = 7  # writable, not a view of read-only bytes


def test_read_idx_multibyte_types_come_back_native(tmp_path):
    values = np.array([-2, 70000, 3], dtype=">i4")
    (tmp_path / "ints").write_bytes(struct.pack(">I", 0x0C01) + struct.pack(">I", 3) + values.tobytes())
    got = read_idx(tmp_path / "ints")
    assert got.dtype == np.dtype("int32") and got.dtype.isnative
    np.testing.assert_array_equal(got, [-2, 70000, 3])


def test_read_idx_wrong_magic(tmp_path):
    labels = np.zeros(4, dtype=np.uint8)
    (tmp_path / "labels").write_bytes(idx_bytes(labels))
    with pytest.raises(DataError, match=r"labels: wrong IDX magic number: expected 0x00000803 "
                                        r"\(2051\), got 0x00000801 \(2049\)"):
        read_idx(tmp_path / "labels", expected_magic=2051)
    (tmp_path / "junk").write_bytes(b"\x12\x34\x56\x78" + bytes(20))
    with pytest.raises(DataError, match=r"junk: not an IDX file: magic number 0x12345678"):
        read_idx(tmp_path / "junk")


def test_read_idx_truncated_payload(tmp_path):
    data = idx_bytes(np.zeros((3, 28, 28), dtype=np.uint8))
    (tmp_path / "short").write_bytes(data[:-100])
    with pytest.raises(DataError, match=r"short: truncated: header says shape \(3, 28, 28\) of uint8, "
                                        rf"i.e. {len(data)} bytes in all, got {len(data) - 100}"):
        read_idx(tmp_path / "short")
    (tmp_path / "long").write_bytes(data + b"\0")
    with pytest.raises(DataError, match="long: trailing bytes"):
        read_idx(tmp_path / "long")
    (tmp_path / "header").write_bytes(data[:10])
    with pytest.raises(DataError, match="header: truncated IDX header: expected 16 bytes"):
        read_idx(tmp_path / "header")


def test_read_idx_truncated_gzip(tmp_path):
    packed = gzip.compress(idx_bytes(np.ones((3, 28, 28), dtype=np.uint8)))
    (tmp_path / "cut.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match=r"cut.gz: corrupt or truncated gzip data"):
        read_idx(tmp_path / "cut.gz")


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="IDX file not found: .*nothing-here"):
        read_idx(tmp_path / "nothing-here")


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_from_folder(tmp_path, gz):
    images, labels = write_mnist(tmp_path / "mnist", n_images=7, gz=gz)
    got_images, got_labels = load_mnist(tmp_path / "mnist", split="train")
    assert got_images.shape == (7, 28, 28) and got_images.dtype == np.uint8
    assert got_labels.shape == (7,) and got_labels.dtype == np.uint8
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_load_mnist_count_mismatch(tmp_path):
    write_mnist(tmp_path / "mnist", n_images=5, n_labels=4)
    with pytest.raises(DataError, match=r"train split disagrees: .*train-images-idx3-ubyte.gz holds "
                                        r"5 images but .*train-labels-idx1-ubyte.gz holds 4 labels"):
        load_mnist(tmp_path / "mnist")


def test_load_mnist_images_and_labels_swapped(tmp_path):
    folder = tmp_path / "mnist"
    write_mnist(folder)
    a, b = folder / "train-images-idx3-ubyte.gz", folder / "train-labels-idx1-ubyte.gz"
    a.rename(tmp_path / "tmp")
    b.rename(a)
    (tmp_path / "tmp").rename(b)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: wrong IDX magic number: "
                                        r"expected 0x00000803 \(2051\), got 0x00000801 \(2049\)"):
        load_mnist(folder)


def test_load_mnist_missing_files_and_bad_split(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte \(or t10k-images-idx3-ubyte.gz\) "
                                        r"not found in .*empty"):
        load_mnist(tmp_path / "empty", split="test")
    with pytest.raises(DataError, match="is not a folder"):
        load_mnist(tmp_path / "does-not-exist")
    with pytest.raises(ValueError, match=r"unknown MNIST split 'valid'.*\['test', 'train'\]"):
        load_mnist(tmp_path / "empty", split="valid")


def test_load_mnist_cache_without_download_never_touches_network(tmp_path):
    # The autouse fixture made urlopen raise; download=False must not call it.
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz is not in the cache "
                                        r".*mnist; call load_mnist\(download=True\)"):
        load_mnist(split="train", download=False)


def test_load_mnist_cache_hit_needs_no_network(tmp_path):
    """Files already in the cache with the right md5 are used without a download."""
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"real MNIST files not found at {SHARED_MNIST} (shared data folder absent)")
    cache = tmp_path / "cache" / "mnist"
    cache.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(SHARED_MNIST / name, cache / name)
    images, labels = load_mnist(split="test", progress=False)
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)


def test_mnist_md5_table_matches_shared_readme():
    # The md5s that guard downloads are the published ones (shared/data/README.md).
    assert MNIST_MD5 == {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }


def test_real_mnist():
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"real MNIST files not found at {SHARED_MNIST} (shared data folder absent)")
    images, labels = load_mnist(SHARED_MNIST, split="train")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60000,) and labels.dtype == np.uint8
    np.testing.assert_array_equal(
        np.bincount(labels, minlength=10),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    assert images.min() == 0 and images.max() == 255
    test_images, test_labels = load_mnist(SHARED_MNIST, split="test")
    assert test_images.shape == (10000, 28, 28) and len(test_labels) == 10000
