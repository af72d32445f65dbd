"""safe_extract on archives built here, and download() against a local HTTP server.

Nothing here reaches the internet: the only server is one on 127.0.0.1 started
by the tests, and urlopen is wrapped to refuse any other host.
"""

import hashlib
import io
import os
import socket
import stat
import tarfile
import threading
import time
import urllib.parse
import urllib.request
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tinygan.data import DataError, DownloadError, default_cache_dir, download, md5sum, safe_extract


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def local_network_only(monkeypatch):
    real_urlopen = urllib.request.urlopen

    def guarded(request, *args, **kwargs):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        host = urllib.parse.urlsplit(url).hostname
        assert host == "127.0.0.1", f"a test tried to reach {host}"
        return real_urlopen(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)


def add_file(tf, name, data=b"x", mode=0o644, mtime=1_600_000_000):
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, mtime
    tf.addfile(info, io.BytesIO(data))


def add_special(tf, name, kind, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    tf.addfile(info)


def make_tar(path, build, mode="w:gz"):
    with tarfile.open(path, mode) as tf:
        build(tf)
    return path


def zip_symlink(zf, name, target):
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zf.writestr(info, target)


def make_zip(path, build):
    with zipfile.ZipFile(path, "w") as zf:
        build(zf)
    return path


def leftovers(folder):
    """Names in folder other than the archive files the test made."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("archive"))


# ---------------------------------------------------------------------------
# safe_extract
# ---------------------------------------------------------------------------

def test_extract_good_tgz(tmp_path):
    def build(tf):
        add_special(tf, "top", tarfile.DIRTYPE)
        add_file(tf, "top/a.txt", b"alpha")
        add_file(tf, "top/sub/run.sh", b"#!/bin/sh\n", mode=0o4755)  # setuid is dropped
        add_special(tf, "top/link", tarfile.SYMTYPE, "sub/run.sh")
        add_special(tf, "top/hard", tarfile.LNKTYPE, "top/a.txt")
    archive = make_tar(tmp_path / "archive.tgz", build)

    dest = safe_extract(archive, tmp_path / "out")
    assert dest == tmp_path / "out"
    assert (dest / "top" / "a.txt").read_bytes() == b"alpha"
    assert (dest / "top" / "hard").read_bytes() == b"alpha"
    assert (dest / "top" / "link").is_symlink()
    assert (dest / "top" / "link").read_bytes() == b"#!/bin/sh\n"
    mode = (dest / "top" / "sub" / "run.sh").stat().st_mode
    assert stat.S_IMODE(mode) == 0o755
    assert (dest / "top" / "a.txt").stat().st_mtime == 1_600_000_000
    assert leftovers(tmp_path) == ["out"]  # no temporary folder left behind


def test_extract_good_zip_and_plain_tar(tmp_path):
    def build(zf):
        zf.writestr("pics/", b"")
        zf.writestr("pics/one.txt", b"1")
        zip_symlink(zf, "pics/alias", "one.txt")
    # Recognised by content, whatever the name says.
    archive = make_zip(tmp_path / "archive.dat", build)
    dest = safe_extract(archive, tmp_path / "z")
    assert (dest / "pics" / "one.txt").read_bytes() == b"1"
    assert os.readlink(dest / "pics" / "alias") == "one.txt"

    tar = make_tar(tmp_path / "archive.tar", lambda tf: add_file(tf, "f", b"plain"), mode="w")
    assert (safe_extract(tar, tmp_path / "t") / "f").read_bytes() == b"plain"


def test_extract_dot_slash_names(tmp_path):
    # `tar -C folder -czf x.tgz .` stores "./" and "./name": the root is not an error.
    def build(tf):
        add_special(tf, "./", tarfile.DIRTYPE)
        add_file(tf, "./face.jpg", b"jpeg")
    archive = make_tar(tmp_path / "archive.tgz", build)
    dest = safe_extract(archive, tmp_path / "out")
    assert [p.name for p in dest.iterdir()] == ["face.jpg"]


def test_extract_into_existing_empty_folder_but_not_a_full_one(tmp_path):
    archive = make_tar(tmp_path / "archive.tgz", lambda tf: add_file(tf, "f", b"1"))
    (tmp_path / "empty").mkdir()
    assert (safe_extract(archive, tmp_path / "empty") / "f").read_bytes() == b"1"
    with pytest.raises(FileExistsError, match="already exists"):
        safe_extract(archive, tmp_path / "empty")


UNSAFE_TARS = {
    "dotdot": (lambda tf: (add_file(tf, "ok.txt"), add_file(tf, "../evil", b"pwned")),
               r"member '../evil' contains a '..' component"),
    "dotdot-inside": (lambda tf: add_file(tf, "a/../../evil"),
                      r"member 'a/../../evil' contains a '..' component"),
    "absolute": (lambda tf: add_file(tf, "/tmp/tinygan-abs-evil"),
                 r"member '/tmp/tinygan-abs-evil' has an absolute path"),
    "symlink-out": (lambda tf: add_special(tf, "link", tarfile.SYMTYPE, "../../outside"),
                    r"member 'link' is a symlink to '../../outside', which leaves the destination"),
    "symlink-absolute": (lambda tf: add_special(tf, "passwd", tarfile.SYMTYPE, "/etc/passwd"),
                         r"member 'passwd' is a symlink to '/etc/passwd', which leaves"),
    "hardlink-out": (lambda tf: add_special(tf, "hard", tarfile.LNKTYPE, "../outside"),
                     r"member 'hard' is a hard link to '../outside', which leaves"),
    "device": (lambda tf: add_special(tf, "dev/null", tarfile.CHRTYPE),
               r"member 'dev/null' is a device file"),
    "fifo": (lambda tf: add_special(tf, "pipe", tarfile.FIFOTYPE),
             r"member 'pipe' is a special file"),
    # Writing through a link that points elsewhere: refused even when the link is harmless.
    "under-link": (lambda tf: (add_special(tf, "dir", tarfile.SYMTYPE, "."),
                               add_file(tf, "dir/file")),
                   r"member 'dir/file' is stored under the link 'dir'"),
    # Each link stays inside on paper; together they point to dest's parent.
    "link-chain": (lambda tf: (add_special(tf, "b", tarfile.SYMTYPE, "a/.."),
                               add_special(tf, "a", tarfile.SYMTYPE, ".")),
                   r"member 'b' is a symlink to 'a/..', which leaves the destination"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE_TARS))
def test_unsafe_tar_members_are_refused(tmp_path, case):
    build, message = UNSAFE_TARS[case]
    work = tmp_path / "work"
    work.mkdir()
    archive = make_tar(work / "archive.tgz", build)
    if case == "absolute":  # make sure tarfile really stored the absolute name
        with tarfile.open(archive) as tf:
            assert tf.getnames() == ["/tmp/tinygan-abs-evil"]

    with pytest.raises(DataError, match="refusing to extract .*archive.tgz: " + message):
        safe_extract(archive, work / "dest")
    # Nothing was written: no destination, no temporary folder, no escaped file.
    assert leftovers(work) == []
    assert not (tmp_path / "evil").exists() and not Path("/tmp/tinygan-abs-evil").exists()


UNSAFE_ZIPS = {
    "dotdot": (lambda zf: zf.writestr("../evil", b"pwned"), r"member '../evil' contains a '..'"),
    "absolute": (lambda zf: zf.writestr("/tmp/tinygan-abs-evil", b"pwned"),
                 r"member '/tmp/tinygan-abs-evil' has an absolute path"),
    "backslash": (lambda zf: zf.writestr("..\\evil", b"pwned"), r"member .*evil' contains a '..'"),
    "symlink-out": (lambda zf: zip_symlink(zf, "link", "../outside"),
                    r"member 'link' is a symlink to '../outside', which leaves"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE_ZIPS))
def test_unsafe_zip_members_are_refused(tmp_path, case):
    build, message = UNSAFE_ZIPS[case]
    work = tmp_path / "work"
    work.mkdir()
    archive = make_zip(work / "archive.zip", build)
    with zipfile.ZipFile(archive) as zf:  # the hostile name really is in the archive
        assert zf.namelist()[0] in ("../evil", "/tmp/tinygan-abs-evil", "..\\evil", "link")
    with pytest.raises(DataError, match="refusing to extract .*archive.zip: " + message):
        safe_extract(archive, work / "dest")
    assert leftovers(work) == []
    assert not (tmp_path / "evil").exists()


def test_corrupt_and_foreign_archives(tmp_path):
    good = make_tar(tmp_path / "archive-good.tgz",
                    lambda tf: add_file(tf, "big.bin", os.urandom(200_000)))
    cut = tmp_path / "archive-cut.tgz"
    cut.write_bytes(good.read_bytes()[:50_000])
    with pytest.raises(DataError, match=r"archive-cut.tgz is corrupt or truncated"):
        safe_extract(cut, tmp_path / "out")

    text = tmp_path / "archive.txt"
    text.write_text("not an archive")
    with pytest.raises(DataError, match=r"archive.txt is not a supported archive: expected a .tar"):
        safe_extract(text, tmp_path / "out")

    with pytest.raises(DataError, match="archive not found: .*missing.zip"):
        safe_extract(tmp_path / "missing.zip", tmp_path / "out")
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------
# download
# ---------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    """Serves server.files; honours Range unless server.honour_range is False."""

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        data = server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        range_header = self.headers.get("Range")
        status, start = 200, 0
        if range_header and server.honour_range:
            start = int(range_header.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.drop_after is not None:  # simulate a connection that dies midway
            body = body[: server.drop_after]
            self.close_connection = True
        # counted before writing: the client may finish reading, and the test assert,
        # before this thread runs again after the write
        server.bytes_sent += len(body)
        self.wfile.write(body)

    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests, httpd.bytes_sent = {}, [], 0
    httpd.honour_range, httpd.drop_after = True, None
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def payload():
    data = os.urandom(300_000)
    return data, hashlib.md5(data).hexdigest()


def closed_port():
    """A local port with nothing listening: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_md5sum(tmp_path, payload):
    data, digest = payload
    (tmp_path / "f").write_bytes(data)
    assert md5sum(tmp_path / "f") == digest


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYGAN_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("TINYGAN_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "tinygan"


def test_download_success(tmp_path, server, payload):
    data, digest = payload
    server.files["/f.bin"] = data
    dest = download(server.url + "/f.bin", tmp_path / "sub" / "f.bin", md5=digest, progress=False)
    assert dest == tmp_path / "sub" / "f.bin"
    assert dest.read_bytes() == data
    assert not (tmp_path / "sub" / "f.bin.part").exists()


def test_download_md5_mismatch_deletes_part(tmp_path, server, payload):
    data, digest = payload
    server.files["/f.bin"] = data
    wrong = "0" * 32
    with pytest.raises(DownloadError, match=f"could not download f.bin from its source: .*/f.bin: "
                                            f"md5 mismatch: expected {wrong}, got {digest} "
                                            r"\(the download was deleted\)"):
        download(server.url + "/f.bin", tmp_path / "f.bin", md5=wrong, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_resumes_with_range(tmp_path, server, payload):
    data, digest = payload
    server.files["/f.bin"] = data
    (tmp_path / "f.bin.part").write_bytes(data[:100_000])
    download(server.url + "/f.bin", tmp_path / "f.bin", md5=digest, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == data
    assert server.requests == [("/f.bin", "bytes=100000-")]
    assert server.bytes_sent == len(data) - 100_000  # only the missing tail was sent


def test_download_restarts_when_server_ignores_range(tmp_path, server, payload):
    data, digest = payload
    server.files["/f.bin"] = data
    server.honour_range = False
    (tmp_path / "f.bin.part").write_bytes(b"garbage" * 100)  # would corrupt an append
    download(server.url + "/f.bin", tmp_path / "f.bin", md5=digest, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == data


def test_download_complete_part_is_not_fetched_again(tmp_path, server, payload):
    data, digest = payload
    server.files["/f.bin"] = data
    (tmp_path / "f.bin.part").write_bytes(data)  # died between last byte and rename
    download(server.url + "/f.bin", tmp_path / "f.bin", md5=digest, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == data
    assert server.bytes_sent == 0


def test_interrupted_download_keeps_part_and_resumes(tmp_path, server, payload):
    data, digest = payload
    server.files["/f.bin"] = data
    server.drop_after = 120_000
    with pytest.raises(DownloadError, match=r"could not download f.bin from its source: "
                                            r".*180000 of 300000 bytes still to come; the partial "
                                            r"download was kept, run again to resume; .*; pass --data"):
        download(server.url + "/f.bin", tmp_path / "f.bin", md5=digest, progress=False)
    assert (tmp_path / "f.bin.part").read_bytes() == data[:120_000]
    server.drop_after = None
    download(server.url + "/f.bin", tmp_path / "f.bin", md5=digest, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == data
    assert server.requests[-1] == ("/f.bin", "bytes=120000-")


def test_download_falls_back_to_next_mirror(tmp_path, server, payload):
    data, digest = payload
    server.files["/mirror2/f.bin"] = data
    urls = [f"http://127.0.0.1:{closed_port()}/f.bin", server.url + "/mirror1/f.bin",
            server.url + "/mirror2/f.bin"]
    download(urls, tmp_path / "f.bin", md5=digest, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == data
    assert [path for path, _ in server.requests] == ["/mirror1/f.bin", "/mirror2/f.bin"]


def test_download_http_errors_on_every_mirror(tmp_path, server):
    urls = [server.url + "/a/f.bin", server.url + "/b/f.bin"]
    with pytest.raises(DownloadError) as info:
        download(urls, tmp_path / "f.bin", progress=False)
    message = str(info.value)
    assert message.startswith(f"could not download f.bin from its 2 sources: 1) {urls[0]}: HTTP 404")
    assert f"; 2) {urls[1]}: HTTP 404" in message
    assert message.count("HTTP 404") == 2 and message.endswith("pass --data PATH to use a local copy")


def test_unreachable_network_gives_one_line_with_data_hint(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/lfw-deepfunneled.tgz"
    start = time.perf_counter()
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path / "lfw-deepfunneled.tgz", md5="0" * 32, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"could not download lfw-deepfunneled.tgz from its source: {url}: "
                              "connection refused; your network itself may be fine")
    assert message.endswith("; pass --data PATH to use a local copy")
    assert time.perf_counter() - start < 10
    assert list(tmp_path.iterdir()) == []


def test_existing_verified_file_is_not_downloaded_again(tmp_path, server, payload):
    data, digest = payload
    (tmp_path / "f.bin").write_bytes(data)
    # An unreachable URL proves no connection is attempted.
    url = f"http://127.0.0.1:{closed_port()}/f.bin"
    assert download(url, tmp_path / "f.bin", md5=digest, progress=False).read_bytes() == data

    # A damaged copy is replaced by a fresh, verified download.
    (tmp_path / "f.bin").write_bytes(b"damaged")
    server.files["/f.bin"] = data
    download(server.url + "/f.bin", tmp_path / "f.bin", md5=digest, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == data
