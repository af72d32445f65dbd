"""Download sources tried in order and verified by checksum; data faults that must be one clear line.

Nothing here reaches the internet: the only server is one on 127.0.0.1 started
by the tests; host names ending in ``.invalid`` fail to resolve through a
patched ``socket.getaddrinfo`` (no DNS query is made), and any other host is
refused by the test.
"""

import errno
import gzip
import hashlib
import importlib
import io
import os
import socket
import tarfile
import threading
import urllib.parse
import urllib.request
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from tinygan.eval import mnist_judge
from tinygan.data import (DataError, DataWarning, DownloadError, Source, download, fetch,
                          fingerprint, load_faces, load_mnist, sha256sum)
from tinygan.data import faces as faces_module
from tinygan.data import mnist as mnist_module
from fakes import idx_bytes

# The package's ``download`` is the function; the module holds its helpers.
download_module = importlib.import_module("tinygan.data.download")


# ---------------------------------------------------------------------------
# A local server, an unresolvable name, no other network
# ---------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def local_network_only(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYGAN_CACHE", str(tmp_path / "cache"))
    real_urlopen = urllib.request.urlopen
    real_getaddrinfo = socket.getaddrinfo

    def guarded(request, *args, **kwargs):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        host = urllib.parse.urlsplit(url).hostname
        assert host == "127.0.0.1" or host.endswith(".invalid"), f"a test tried to reach {host}"
        return real_urlopen(request, *args, **kwargs)

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and host.endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append(self.path)
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests = {}, []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha(data):
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------
# fetch: dead sources, wrong checksums, fallback, the all-fail message
# ---------------------------------------------------------------------------

def test_dead_and_wrong_sources_fall_back_to_a_verified_one(tmp_path, server):
    good = os.urandom(50_000)
    server.files["/wrong.bin"] = b"not the file" * 100
    server.files["/good.bin"] = good
    sources = [
        Source("http://lfw.host.invalid/a.tgz", f"sha256:{sha(good)}", "dead name", "a.tgz"),
        Source(f"http://127.0.0.1:{closed_port()}/a.tgz", f"sha256:{sha(good)}", "refused", "a.tgz"),
        Source(server.url + "/wrong.bin", f"sha256:{sha(good)}", "wrong bytes", "a.tgz"),
        Source(server.url + "/good.bin", f"md5:{hashlib.md5(good).hexdigest()}", "the copy", "b.tgz"),
    ]
    said = []
    got = fetch(sources, tmp_path / "dl", progress=False, log=said.append)
    assert got.source is sources[3] and got.downloaded
    assert got.path == tmp_path / "dl" / "b.tgz" and got.path.read_bytes() == good
    # A wrong checksum is not fatal any more; its download is deleted, nothing else left.
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["b.tgz"]
    assert said[0] == ("a.tgz: dead name (http://lfw.host.invalid/a.tgz) failed (name not resolved "
                       "(lfw.host.invalid)); trying refused "
                       f"({sources[1].url})")
    assert "wrong bytes" in said[2] and "sha256 mismatch" in said[2]

    # Next time the verified file is used without any request.
    server.requests.clear()
    again = fetch(sources, tmp_path / "dl", progress=False)
    assert again.source is sources[3] and not again.downloaded and server.requests == []


def test_every_source_failing_is_one_line_naming_each(tmp_path, server):
    server.files["/wrong.bin"] = b"x" * 1000
    refused = f"http://127.0.0.1:{closed_port()}/f.tgz"
    sources = [Source("http://gone.invalid/f.tgz", "md5:" + "1" * 32, "original site"),
               Source(server.url + "/missing.tgz", "md5:" + "1" * 32, "mirror"),
               Source(server.url + "/wrong.bin", "sha256:" + "2" * 64, "copy", "f.tgz"),
               Source(refused, None, "")]
    with pytest.raises(DownloadError) as info:
        fetch(sources, tmp_path / "dl", desc="F", progress=False, hint="get F by hand")
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        "could not download F from its 4 sources: "
        "1) original site (http://gone.invalid/f.tgz): name not resolved (gone.invalid); "
        f"2) mirror ({server.url}/missing.tgz): HTTP 404 Not Found; "
        f"3) copy ({server.url}/wrong.bin): sha256 mismatch: expected {'2' * 64}, got "
        f"{sha(b'x' * 1000)} (the download was deleted); "
        f"4) {refused}: connection refused; "
        "your network itself may be fine: download addresses move and close; get F by hand")
    assert [p.name for p in (tmp_path / "dl").iterdir()] == []


def test_download_takes_sha256_and_checks_the_checksum_text(tmp_path, server):
    data = os.urandom(3000)
    server.files["/f"] = data
    assert download(server.url + "/f", tmp_path / "f", sha256=sha(data), progress=False).read_bytes() == data
    assert sha256sum(tmp_path / "f") == sha(data)
    with pytest.raises(ValueError, match="checksum must be 'md5:<32 hex digits>' or 'sha256:"):
        Source("http://x.invalid/f", "sha1:abc")
    assert Source("http://x.invalid/f", "A" * 64).checksum == "sha256:" + "a" * 64


def test_disk_full_while_downloading_names_the_file(tmp_path, server, monkeypatch):
    server.files["/f"] = os.urandom(3000)

    def full(f, chunk):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(download_module, "_write", full)
    with pytest.raises(DataError) as info:
        download(server.url + "/f", tmp_path / "d" / "f", progress=False)
    assert str(info.value) == (f"cannot write {tmp_path / 'd' / 'f.part'}: no space left on device "
                               "(errno 28); free some space there, or set "
                               "TINYGAN_CACHE=/folder/on/another/disk")


# ---------------------------------------------------------------------------
# LFW: the deep-funneled archive, else the funneled copy, with a note
# ---------------------------------------------------------------------------

def face_tgz(top, colours):
    """A .tgz of one folder per person, each holding one 40x40 colour photo."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for i, colour in enumerate(colours):
            image = io.BytesIO()
            Image.new("RGB", (40, 40), colour).save(image, "PNG")
            info = tarfile.TarInfo(f"{top}/Person_{i}/Person_{i}_0001.png")
            info.size = len(image.getvalue())
            tf.addfile(info, io.BytesIO(image.getvalue()))
    return buffer.getvalue()


def test_lfw_falls_back_to_the_funneled_copy_and_says_so(tmp_path, server, monkeypatch):
    funneled = face_tgz("lfw_funneled", [(200, 0, 0), (0, 200, 0), (0, 0, 200)])
    server.files["/files/5976015"] = funneled
    server.files["/lfw/lfw-deepfunneled.tgz"] = b"an error page, not the archive"
    deep, fun = faces_module.LFW_SOURCES
    monkeypatch.setattr(faces_module, "LFW_SOURCES", (
        Source(server.url + "/lfw/lfw-deepfunneled.tgz", deep.checksum, deep.what, deep.filename),
        Source(server.url + "/files/5976015", f"sha256:{sha(funneled)}", fun.what, fun.filename)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images, stats = load_faces(None, size=8, crop=None, cache_dir=tmp_path / "c",
                                   progress=False, return_stats=True)
    assert images.shape == (3, 3, 8, 8) and stats.kept == 3
    assert stats.source == (f"LFW funneled, scikit-learn's copy on figshare: {server.url}/files/5976015 "
                            f"(cached as {tmp_path / 'c' / 'lfw-funneled.tgz'})")
    note = (f"LFW deep-funneled could not be downloaded; using LFW funneled, scikit-learn's copy on "
            f"figshare ({server.url}/files/5976015): the same photos aligned by the earlier "
            "funneling method, 3 colour images")
    assert stats.notes == [note]
    assert [(w.category, str(w.message)) for w in caught] == [(DataWarning, note)]
    # The warning shows as one line: no Python source line under it.
    shown = warnings.formatwarning(caught[0].message, caught[0].category, caught[0].filename,
                                   caught[0].lineno)
    assert shown.count("\n") == 1 and shown.endswith(f"{note}\n")

    # Offline now: the cached funneled copy is used, with the same note, and no request.
    server.requests.clear()
    _, stats2 = load_faces(None, size=8, crop=None, cache_dir=tmp_path / "c", progress=False,
                           return_stats=True, warn=False)
    assert stats2.from_cache and stats2.notes == [note] and server.requests == []


def test_lfw_deep_funneled_first_when_it_verifies(tmp_path, server, monkeypatch):
    deep_bytes = face_tgz("lfw-deepfunneled", [(200, 0, 0), (0, 200, 0)])
    server.files["/deep.tgz"] = deep_bytes
    monkeypatch.setattr(faces_module, "LFW_SOURCES", (
        Source(server.url + "/deep.tgz", f"md5:{hashlib.md5(deep_bytes).hexdigest()}", "deep",
               "lfw-deepfunneled.tgz"),
        Source("http://never.invalid/x", "sha256:" + "0" * 64, "funneled", "lfw-funneled.tgz")))
    _, stats = load_faces(None, size=8, crop=None, cache_dir=tmp_path / "c", progress=False,
                          return_stats=True)
    assert stats.kept == 2 and stats.notes == [] and stats.source.startswith("deep: ")


# ---------------------------------------------------------------------------
# MNIST: every mirror verified, named when it fails, and a complete message
# ---------------------------------------------------------------------------

def test_mnist_mirrors_are_verified_and_the_message_is_complete(tmp_path, server, monkeypatch):
    name = "t10k-images-idx3-ubyte.gz"
    server.files["/m1/" + name] = b"<html>moved</html>"
    monkeypatch.setattr(mnist_module, "MNIST_MIRRORS", [server.url + "/m1/", "http://mnist.invalid/"])
    with pytest.raises(DownloadError) as info:
        load_mnist(split="test", progress=False)
    message = str(info.value)
    assert message.startswith(
        f"could not download {name} from its 2 sources: 1) {server.url}/m1/{name}: md5 mismatch: "
        f"expected {mnist_module.MNIST_MD5[name]}, got ")
    assert f"; 2) http://mnist.invalid/{name}: name not resolved (mnist.invalid); " in message
    assert "your network itself may be fine" in message
    # It says once, completely, what to do: no caller needs to add a hint.
    assert message.endswith(
        "get the four MNIST files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz; gzipped or not) by hand from a "
        "public dataset site that mirrors MNIST, and pass their folder with --data FOLDER "
        "(load_mnist(root=FOLDER) in Python)")
    assert message.count("--data") == 1 and "\n" not in message


def test_mnist_labels_outside_0_to_9_are_refused(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((6, 28, 28)))))
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes([0, 3, 10, 255, 10, 9]))
    with pytest.raises(DataError) as info:
        load_mnist(folder)
    assert str(info.value) == (f"{folder / 'train-labels-idx1-ubyte'}: MNIST labels must be digits "
                               "0..9, found 3 outside that range (values 10, 255)")


# ---------------------------------------------------------------------------
# Faces: tiny photos left out and counted; cache write failures name the path
# ---------------------------------------------------------------------------

def test_tiny_photos_are_left_out_and_counted(tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    Image.new("RGB", (40, 40), (200, 0, 0)).save(folder / "a.png")
    Image.new("RGB", (1, 1), (0, 200, 0)).save(folder / "b.png")      # the 1x1 photo
    Image.new("RGB", (31, 100), (0, 0, 200)).save(folder / "c.png")   # under 64/2 on one side
    Image.new("RGB", (32, 32), (0, 100, 200)).save(folder / "d.png")  # exactly half: kept
    images, stats = load_faces(folder, size=64, crop=None, cache_dir=tmp_path / "c", progress=False,
                               return_stats=True, warn=False)
    assert (stats.found, stats.too_small, stats.kept) == (4, 2, 2) and len(images) == 2
    assert stats.too_small_examples == ["b.png: 1x1", "c.png: 31x100"]
    assert stats.notes == [f"left out 2 images under {folder} smaller than 32 px on a side (they "
                           "would be enlarged more than twice to 64x64), e.g. b.png: 1x1"]
    assert faces_module.min_side(64) == 32 and faces_module.min_side(8) == 8

    only_tiny = tmp_path / "tiny"
    only_tiny.mkdir()
    Image.new("RGB", (1, 1), (0, 200, 0)).save(only_tiny / "b.png")
    with pytest.raises(DataError, match=r"no usable colour images under .*tiny: found 1 image files, "
                                        r"0 grayscale \(excluded\), 0 unreadable, 1 smaller than 32 px"):
        load_faces(only_tiny, size=64, cache_dir=tmp_path / "c", progress=False)


def test_read_only_cache_names_the_path_and_tinygan_cache(tmp_path, monkeypatch):
    folder = tmp_path / "faces"
    folder.mkdir()
    Image.new("RGB", (40, 40), (200, 0, 0)).save(folder / "a.png")
    cache = tmp_path / "ro-cache"
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):  # chmod cannot stop root: refuse writes here
        if str(path).startswith(str(cache)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(DataError) as info:
        load_faces(folder, size=8, cache_dir=cache, progress=False)
    message = str(info.value)
    assert message.startswith(f"cannot write {cache}") and "permission denied (errno 13)" in message
    assert message.endswith("set TINYGAN_CACHE=/writable/folder to keep the cache elsewhere, or "
                            "pass --data PATH to use a local copy of the data")

    monkeypatch.setenv("TINYGAN_CACHE", str(cache))
    with pytest.raises(DataError, match=r"cannot write .*ro-cache.*permission denied .*TINYGAN_CACHE="):
        mnist_judge.save_judge(mnist_judge.MNISTJudge(mnist_judge.JudgeNet()))


def test_disk_full_while_caching_faces_names_the_file(tmp_path, monkeypatch):
    folder = tmp_path / "faces"
    folder.mkdir()
    Image.new("RGB", (40, 40), (200, 0, 0)).save(folder / "a.png")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(faces_module.np, "save", full)
    with pytest.raises(DataError, match=r"^cannot write .*c/faces-8px-crop128-[0-9a-f]+\.npy: no space "
                                        r"left on device \(errno 28\); free some space there"):
        load_faces(folder, size=8, cache_dir=tmp_path / "c", progress=False)
    assert not [p for p in (tmp_path / "c").iterdir() if p.suffix in (".npy", ".tmp")]


# ---------------------------------------------------------------------------
# fingerprint
# ---------------------------------------------------------------------------

def test_fingerprint_changes_with_any_image_and_only_then():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 3, 8, 8), dtype=np.uint8)
    labels = rng.integers(0, 10, 20)
    base = fingerprint(images, labels)
    assert isinstance(base, str) and len(base) == 16
    assert fingerprint(images.copy(), labels.copy()) == base           # deterministic
    assert fingerprint(np.asfortranarray(images), labels) == base      # layout does not matter
    changed = images.copy()
    changed[13, 2, 7, 7] ^= 1                                          # one bit of one image
    others = [fingerprint(changed, labels), fingerprint(images[:-1], labels[:-1]),
              fingerprint(np.concatenate([images, images[:1]]), np.append(labels, 0)),
              fingerprint(images[::-1], labels[::-1]), fingerprint(images),
              fingerprint(images.reshape(20, 3, 64)), fingerprint(images.astype(np.int16), labels)]
    assert len(set(others + [base])) == len(others) + 1
    assert fingerprint(np.arange(5, dtype=">i4")) == fingerprint(np.arange(5, dtype="<i4"))
