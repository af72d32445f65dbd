"""Several processes filling one cache at the same moment: one does the work, the others wait.

Each test starts a few Python processes that all wait for a "go" file, then
do the same thing into one shared cache folder: train the MNIST judge (on a
tiny MNIST written here), decode a face archive, download a file from a local
server. All must succeed, the result must be whole, the work must be done
exactly once, and nothing temporary may be left behind. No network: the only
server listens on 127.0.0.1.
"""

import gzip
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinygan.eval import mnist_judge
from tinygan.train.runlog import read_csv_log

from fakes import idx_bytes

ROOT = Path(__file__).resolve().parents[1]
PROCESSES = 3

PRELUDE = """
import json, os, sys, time
go = sys.argv[1]
if os.environ.get("TINYGAN_TEST_NO_FCNTL"):
    import tinygan.data.cache
    tinygan.data.cache.fcntl = None   # the O_EXCL lock-file fallback
messages = []
deadline = time.monotonic() + 120      # a safety net, not a timing assertion
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("no go file")
    time.sleep(0.01)
"""


def run_together(tmp_path, body, args=(), env=None):
    """Start PROCESSES copies of PRELUDE + body, release them at once, return their JSON outputs.

    The children get ``sys.argv[1]`` = the go file, then ``args``.
    """
    go = tmp_path / "go"
    script = PRELUDE + textwrap.dedent(body)
    environment = dict(os.environ, TINYGAN_CACHE=str(tmp_path / "cache"), OPENBLAS_NUM_THREADS="1",
                       PYTHONPATH=str(ROOT), **(env or {}))
    children = [subprocess.Popen([sys.executable, "-c", script, str(go), *args], cwd=tmp_path,
                                 env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(PROCESSES)]
    go.touch()
    results = []
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, f"a process failed:\n{err}"
        assert "Traceback" not in err
        results.append((json.loads(out.strip().splitlines()[-1]), err))
    return results


def leftovers(folder):
    """Temporary files, partial folders and cache lock files anywhere under folder.

    (A run folder's own ``.lock``, the training loop's, is not the cache's business.)
    """
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.name.endswith((".tmp", ".part", ".partial", ".lock")) and p.name != ".lock"
                  or p.name.startswith(".mnist_judge_run"))


def test_judge_trained_once_while_the_others_wait(tmp_path):
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 128), ("t10k", 32)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        images[np.arange(n), 2 * labels + 3, :] = 255  # a bar whose row says the digit
        (mnist / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (mnist / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    results = run_together(tmp_path, f"""
        from tinygan.eval import mnist_judge
        judge = mnist_judge.get_judge({str(mnist)!r}, progress=False, log=messages.append, shipped=False)
        print(json.dumps({{"messages": messages, "accuracy": judge.test_accuracy}}))
    """)
    trained = [r for r, _ in results if any("training it" in m for m in r["messages"])]
    assert len(trained) == 1, [r["messages"] for r, _ in results]
    # The others waited for the lock, or came after and found the cached judge.
    for r, _ in results:
        waits = [m for m in r["messages"] if m.startswith("waiting for another process")]
        assert all(m == "waiting for another process to train the MNIST judge (lock "
                   f"{tmp_path / 'cache' / 'mnist_judge.npz.lock'})" for m in waits)
    assert len({r["accuracy"] for r, _ in results}) == 1  # all use the one judge

    cache = tmp_path / "cache"
    judge = mnist_judge.load_judge(cache / "mnist_judge.npz")
    assert judge is not None and judge.test_accuracy == results[0][0]["accuracy"]
    # The judge's training run is whole: one run, its log readable to the last row.
    run = cache / "mnist_judge_run"
    rows = read_csv_log(run / "log.csv")
    assert rows["step"].tolist() == [1, 2, 3, 4]  # 2 epochs of 128 // 64 steps
    assert leftovers(cache) == []


FACES = """
    from tinygan.data import fingerprint, load_faces
    images, stats = load_faces(sys.argv[2], size=8, crop=None, cache_dir=sys.argv[3],
                               progress=False, return_stats=True)
    print(json.dumps({"from_cache": stats.from_cache, "fingerprint": fingerprint(images),
                      "folder": stats.folder, "kept": stats.kept}))
"""


@pytest.mark.parametrize("lock", ["flock", "lock-file"])
def test_faces_extracted_and_decoded_once(tmp_path, lock):
    photos = tmp_path / "photos"
    for i in range(6):
        (photos / f"p{i}").mkdir(parents=True)
        Image.new("RGB", (20 + i, 24), (40 * i, 255 - 40 * i, 90)).save(photos / f"p{i}" / "1.png")
    archive = tmp_path / "faces.tgz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(photos, arcname="faces")
    cache = tmp_path / "cache" / "faces"
    results = run_together(tmp_path, FACES, [str(archive), str(cache)],
                                env={"TINYGAN_TEST_NO_FCNTL": "1"} if lock == "lock-file" else None)
    assert len({r["fingerprint"] for r, _ in results}) == 1
    assert {r["kept"] for r, _ in results} == {6}
    assert sum(not r["from_cache"] for r, _ in results) == 1  # decoded once
    assert len(list((cache / "extracted").iterdir())) == 1     # extracted once
    assert leftovers(tmp_path / "cache") == []
    from tinygan.data import fingerprint, load_faces
    mine = load_faces(archive, size=8, crop=None, cache_dir=cache, progress=False)
    assert fingerprint(mine) == results[0][0]["fingerprint"]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append(self.path)
        data = self.server.data
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("lock", ["flock", "lock-file"])
def test_download_done_once(tmp_path, lock):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.data, httpd.requests = os.urandom(400_000), []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/f.bin"
        digest = hashlib.sha256(httpd.data).hexdigest()
        dest = tmp_path / "cache" / "f.bin"
        results = run_together(tmp_path, """
            from tinygan.data import download, sha256sum
            path = download(sys.argv[2], sys.argv[3], sha256=sys.argv[4], progress=False,
                            log=messages.append)
            print(json.dumps({"sha256": sha256sum(path), "messages": messages}))
        """, [url, str(dest), digest],
            env={"TINYGAN_TEST_NO_FCNTL": "1"} if lock == "lock-file" else None)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert {r["sha256"] for r, _ in results} == {digest}
    assert dest.read_bytes() == httpd.data
    assert httpd.requests == ["/f.bin"]  # downloaded once; the others waited and used it
    for r, _ in results:
        assert all(m == f"waiting for another process to download f.bin (lock {dest}.lock)"
                   for m in r["messages"])
    assert leftovers(tmp_path / "cache") == []
