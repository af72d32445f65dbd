"""The two sixty-line examples run, on tiny data, as a learner would run them, and write their grid."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakes import write_mnist

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.numpy_only  # they run as programs, on their default NumPy backend


def run(script, *args, cwd):
    env = dict(os.environ, TINYGAN_CACHE=str(Path(cwd) / "cache"), OPENBLAS_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], capture_output=True, text=True,
                       timeout=300, cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_minimal_gan_runs_algorithm_1_and_writes_a_grid(tmp_path):
    mnist = write_mnist(tmp_path / "mnist", counts=(("train", 256), ("t10k", 64)))
    out = run("minimal_gan.py", "--data", str(mnist), "--max-steps", "3", "--out", "grid.png", cwd=tmp_path)
    assert "epoch 1: step 3, loss_D" in out
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape[:2] == (8 * 56 + 9 * 4, 8 * 56 + 9 * 4) and grid.std() > 0   # 8x8 digits at scale 2


def test_minimal_began_runs_the_update_and_writes_a_grid(tmp_path):
    rng = np.random.default_rng(0)
    faces = tmp_path / "faces"
    faces.mkdir()
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(faces / f"{i}.png")
    run("minimal_began.py", "--data", str(faces), "--steps", "2", "--out", "grid.png", cwd=tmp_path)
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape[:2] == (8 * 64 + 9 * 4, 8 * 64 + 9 * 4) and grid.std() > 0   # 8x8 faces of 32 px at scale 2
