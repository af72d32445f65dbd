"""load_faces on a tiny folder of images made here, on archives of it, and on real LFW."""

import io
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinygan.data import DataError, DownloadError, FaceStats, load_faces
from tinygan.data import faces as faces_module
from tinygan.data import faces_decode

SHARED_LFW = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lfw-deepfunneled"

RED = (200, 30, 40)
BLUE = (0, 0, 255)
GREEN = (0, 255, 0)


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Point the cache at a temporary folder and make any network use fail at once."""
    monkeypatch.setenv("TINYGAN_CACHE", str(tmp_path / "cache"))

    def refuse(request, *args, **kwargs):
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused (test)"))

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def make_faces(root: Path) -> Path:
    """A tiny face folder: 3 colour images, 2 grayscale, 2 unreadable, 2 ignored files.

    Sorted relative paths: alice/1.jpg, alice/2.png, bob/1.PNG, bob/gray_rgb.png,
    carol/corrupt.jpg, carol/gray_l.jpg, carol/truncated.jpg.
    """
    rng = np.random.default_rng(0)
    (root / "alice").mkdir(parents=True)
    (root / "bob").mkdir()
    (root / "carol").mkdir()
    ramp = np.zeros((50, 60, 3), np.uint8)
    ramp[..., 0] = np.linspace(0, 255, 60, dtype=np.uint8)[None, :]
    ramp[..., 1] = np.linspace(0, 255, 50, dtype=np.uint8)[:, None]
    ramp[..., 2] = 90
    Image.fromarray(ramp).save(root / "alice" / "1.jpg", quality=95)
    Image.new("RGB", (40, 40), RED).save(root / "alice" / "2.png")
    # 80 wide, 100 tall: a 40x40 blue square in the centre of a green frame.
    framed = Image.new("RGB", (80, 100), GREEN)
    framed.paste(Image.new("RGB", (40, 40), BLUE), (20, 30))
    framed.save(root / "bob" / "1.PNG")
    # An RGB file whose three channels are equal: grayscale in disguise.
    gray = rng.integers(0, 256, size=(30, 30), dtype=np.uint8)
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(root / "bob" / "gray_rgb.png")
    # A single-channel JPEG.
    Image.fromarray(gray).save(root / "carol" / "gray_l.jpg")
    (root / "carol" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (root / "carol" / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    # Not counted: no image extension, hidden.
    (root / "notes.txt").write_text("not an image")
    Image.new("RGB", (40, 40), RED).save(root / "alice" / ".hidden.jpg")
    return root


@pytest.fixture
def face_dir(tmp_path):
    return make_faces(tmp_path / "faces")


def load_quietly(*args, **kwargs):
    """load_faces with the expected 'skipped' warning recorded, not shown."""
    kwargs.setdefault("progress", False)
    kwargs.setdefault("return_stats", True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = load_faces(*args, **kwargs)
    return result, [str(w.message) for w in caught]


def test_folder_counts_order_crop_and_warning(face_dir, tmp_path):
    (images, stats), messages = load_quietly(face_dir, size=8, crop=40, cache_dir=tmp_path / "c")
    assert isinstance(stats, FaceStats)
    assert (stats.found, stats.grayscale_excluded, stats.unreadable, stats.kept) == (7, 2, 2, 3)
    assert images.shape == (3, 3, 8, 8) and images.dtype == np.uint8
    # Sorted order: alice/1.jpg (ramp), alice/2.png (red), bob/1.PNG (blue centre).
    assert not np.all(images[0] == images[0, :, :1, :1])  # the ramp varies
    np.testing.assert_array_equal(images[1], np.broadcast_to(np.array(RED)[:, None, None], (3, 8, 8)))
    # crop=40 takes exactly the blue square out of the 80x100 green frame.
    np.testing.assert_array_equal(images[2], np.broadcast_to(np.array(BLUE)[:, None, None], (3, 8, 8)))
    # Exactly one line about the two unreadable files, naming one of them.
    assert len(messages) == 1
    assert messages[0].startswith("skipped 2 unreadable files under ")
    assert "e.g. carol/corrupt.jpg: " in messages[0]
    assert [e.split(":")[0] for e in stats.unreadable_examples] == [
        "carol/corrupt.jpg", "carol/truncated.jpg"]


def test_crop_none_uses_largest_centred_square(face_dir, tmp_path):
    (images, _), _ = load_quietly(face_dir, size=10, crop=None, cache_dir=tmp_path / "c")
    framed = images[2].transpose(1, 2, 0)  # the 80x100 image: its central 80x80
    # Centre is blue; left and right edges are green (the blue square is 40 of 80 wide).
    # (Lanczos rings a little near the colour edges, hence thresholds, not equality.)
    assert framed[5, 5, 2] > 230 and framed[5, 5, 1] < 30
    assert framed[5, 0, 1] > 200 and framed[5, 0, 2] < 50
    assert framed[5, 9, 1] > 200 and framed[5, 9, 2] < 50


def test_images_smaller_than_crop_are_counted(face_dir, tmp_path):
    (images, stats), messages = load_quietly(face_dir, size=8, crop=100, cache_dir=tmp_path / "c")
    assert stats.kept == 3 and stats.smaller_than_crop == 3
    assert any("3 images under" in m and "smaller than crop=100 px" in m for m in messages)


def test_exif_rotation_is_applied(tmp_path):
    folder = tmp_path / "rotated"
    folder.mkdir()
    halves = np.zeros((40, 40, 3), np.uint8)
    halves[:, :20] = RED
    halves[:, 20:] = BLUE
    exif = Image.Exif()
    exif[0x0112] = 3  # "rotate 180 degrees to display"
    Image.fromarray(halves).save(folder / "r.jpg", quality=95, exif=exif)
    images = load_faces(folder, size=4, crop=None, cache_dir=tmp_path / "c", progress=False)
    left, right = images[0, :, 2, 0], images[0, :, 2, 3]
    assert left[2] > 200 and left[0] < 60  # blue now on the left
    assert right[0] > 150 and right[2] < 60


def test_cache_hit_and_invalidation(face_dir, tmp_path):
    cache = tmp_path / "c"
    (first, stats1), _ = load_quietly(face_dir, size=8, crop=40, cache_dir=cache)
    assert not stats1.from_cache and Path(stats1.cache_file).is_file()
    assert Path(stats1.cache_file).parent == cache and Path(stats1.cache_file).suffix == ".npy"
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]

    (second, stats2), messages = load_quietly(face_dir, size=8, crop=40, cache_dir=cache)
    assert stats2.from_cache
    np.testing.assert_array_equal(first, second)
    assert (stats2.found, stats2.grayscale_excluded, stats2.unreadable, stats2.kept) == (7, 2, 2, 3)
    assert len(messages) == 1 and messages[0].startswith("skipped 2 unreadable")  # said again

    # Another size is another cache entry.
    (_, stats3), _ = load_quietly(face_dir, size=4, crop=40, cache_dir=cache)
    assert not stats3.from_cache and stats3.cache_file != stats1.cache_file

    # Touching a file (new mtime) or adding one invalidates the entry.
    os.utime(face_dir / "alice" / "2.png", ns=(1, 1))
    (_, stats4), _ = load_quietly(face_dir, size=8, crop=40, cache_dir=cache)
    assert not stats4.from_cache
    Image.new("RGB", (40, 40), GREEN).save(face_dir / "bob" / "zz.png")
    (more, stats5), _ = load_quietly(face_dir, size=8, crop=40, cache_dir=cache)
    assert not stats5.from_cache and stats5.kept == 4 and len(more) == 4


def test_damaged_cache_is_rebuilt(face_dir, tmp_path):
    (first, stats), _ = load_quietly(face_dir, size=8, crop=40, cache_dir=tmp_path / "c")
    Path(stats.cache_file).write_bytes(b"\x93NUMPY garbage")
    (again, stats2), _ = load_quietly(face_dir, size=8, crop=40, cache_dir=tmp_path / "c")
    assert not stats2.from_cache
    np.testing.assert_array_equal(first, again)


def test_worker_pool_gives_the_same_result(face_dir, tmp_path, monkeypatch):
    (single, _), _ = load_quietly(face_dir, size=8, crop=40, cache_dir=tmp_path / "c1", workers=1)
    monkeypatch.setattr(faces_decode, "_POOL_MIN_FILES", 0)
    (pooled, stats), _ = load_quietly(face_dir, size=8, crop=40, cache_dir=tmp_path / "c2", workers=2)
    assert stats.unreadable == 2
    np.testing.assert_array_equal(single, pooled)


@pytest.mark.parametrize("kind", ["tgz", "zip"])
def test_archive_source_is_extracted_once(face_dir, tmp_path, monkeypatch, kind):
    (expected, _), _ = load_quietly(face_dir, size=8, crop=40, cache_dir=tmp_path / "c0")
    archive = tmp_path / f"faces.{kind}"
    if kind == "tgz":
        with tarfile.open(archive, "w:gz") as tf:
            tf.add(face_dir, arcname="faces")
    else:
        with zipfile.ZipFile(archive, "w") as zf:
            for path in sorted(face_dir.rglob("*")):
                zf.write(path, Path("faces") / path.relative_to(face_dir))

    cache = tmp_path / "c"
    (images, stats), _ = load_quietly(archive, size=8, crop=40, cache_dir=cache)
    np.testing.assert_array_equal(images, expected)
    assert Path(stats.folder).parent == cache / "extracted"

    # The second call must not extract again: make extraction impossible.
    def fail(*args):
        raise AssertionError("extracted twice")

    monkeypatch.setattr(faces_module, "safe_extract", fail)
    (again, stats2), _ = load_quietly(archive, size=8, crop=40, cache_dir=cache)
    assert stats2.from_cache
    np.testing.assert_array_equal(again, expected)


def test_unsafe_archive_source_is_refused(tmp_path):
    archive = tmp_path / "evil.tgz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("../evil.png")
        data = b"x"
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match=r"member '../evil.png' contains a '..' component"):
        load_faces(archive, cache_dir=tmp_path / "c", progress=False)
    assert not (tmp_path / "c" / "evil.png").exists()


def test_no_usable_images(tmp_path):
    folder = tmp_path / "grey"
    folder.mkdir()
    Image.new("L", (20, 20), 128).save(folder / "a.png")
    (folder / "b.jpg").write_bytes(b"junk")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match=r"no usable colour images under .*grey: found 2 image "
                                            r"files, 1 grayscale \(excluded\), 1 unreadable, e.g. b.jpg"):
            load_faces(folder, cache_dir=tmp_path / "c", progress=False)

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no image files \(.jpg, .jpeg, .png, .bmp, .webp\) found "
                                        r"under .*empty"):
        load_faces(tmp_path / "empty", cache_dir=tmp_path / "c", progress=False)


def test_bad_sources_and_arguments(tmp_path, face_dir):
    with pytest.raises(DataError, match=r"face source not found: .*nowhere \(expected a folder"):
        load_faces(tmp_path / "nowhere", cache_dir=tmp_path / "c")
    (tmp_path / "list.txt").write_text("a.jpg\n")
    with pytest.raises(DataError, match=r"list.txt is not a supported archive"):
        load_faces(tmp_path / "list.txt", cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match=r"size must be a positive integer number of pixels, got 0"):
        load_faces(face_dir, size=0)
    with pytest.raises(ValueError, match=r"crop must be a positive integer .* got 12.5"):
        load_faces(face_dir, crop=12.5)


def test_lfw_default_without_network(tmp_path):
    cache = tmp_path / "c"
    with pytest.raises(DataError, match=r"LFW is not in the cache \(.*lfw-deepfunneled.tgz or "
                                        r".*lfw-funneled.tgz\); pass download=True"):
        load_faces(None, cache_dir=cache, download=False)
    # urlopen is patched to refuse: the download error is one line naming both sources.
    with pytest.raises(DownloadError, match=r"^could not download LFW from its 2 sources: 1\) LFW "
                                            r"deep-funneled, .*: connection refused; 2\) LFW funneled, "
                                            r".*: connection refused; .*; get lfw-deepfunneled.tgz"
                                            r".* by hand .* pass it with --data PATH"):
        load_faces(None, cache_dir=cache, progress=False)


def test_real_lfw_count():
    """LFW deep-funneled: 13,233 JPEGs, 39 pure grayscale, 13,194 kept (~8 s cold on 2 cores)."""
    if not SHARED_LFW.is_dir():
        pytest.skip(f"LFW deep-funneled not found at {SHARED_LFW} (shared data folder absent)")
    # Not tmp_path: pytest keeps recent tmp folders, and this cache is 162 MB.
    with tempfile.TemporaryDirectory() as cache:
        images, stats = load_faces(SHARED_LFW, cache_dir=cache, progress=False, return_stats=True)
        assert (stats.found, stats.grayscale_excluded, stats.unreadable, stats.kept) == (
            13233, 39, 0, 13194)
        assert images.shape == (13194, 3, 64, 64) and images.dtype == np.uint8
        assert not stats.from_cache

        again, stats2 = load_faces(SHARED_LFW, cache_dir=cache, progress=False, return_stats=True)
        assert stats2.from_cache
        np.testing.assert_array_equal(again[::997], images[::997])
