"""Every command in the README's bash blocks runs, as written, on tiny data (a new user's first steps).

Each block is a scenario run in a fresh working folder, its commands in order (a --resume follows the
run it continues). The data paths a reader fills in become tiny folders made here, and each example
gets flags that shrink its networks and its run (later flags win in argparse, so the README's own
flags stay in place). Commands that need a GPU must fail in one clear line where none answers.
The install lines (venv, pip, pytest) are what .ci/run itself does.
"""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakes import write_mnist

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.numpy_only  # programs on their default backend

#: Flags that make each program tiny; appended after the README's own.
TINY = {
    "began_faces.py": ["--filters", "4", "--hidden", "8", "--crop", "32", "--batch-size", "4", "--swd-samples", "8",
                       "--num-samples", "4", "--sample-every", "0", "--max-steps", "2", "--no-progress"],
    "minimal_gan.py": ["--max-steps", "2"],
    "minimal_began.py": ["--steps", "2"],
    "gan_toy2d.py": ["--train-size", "512", "--width", "8", "--depth", "1", "--epochs", "1", "--num-samples", "100",
                     "--no-progress"],
    "gan_mnist.py": ["--g-hidden", "16", "--d-hidden", "16", "--filters", "2", "--max-steps", "2", "--no-judge",
                     "--num-samples", "10", "--no-progress"],
    "cgan_mnist.py": ["--g-hidden", "16", "--d-hidden", "16", "--filters", "2", "--max-steps", "2", "--no-judge",
                      "--num-samples", "10", "--no-progress"],
    "mnist_classifier.py": ["--max-steps", "2", "--no-cache", "--no-progress"],
    "tinygan.bench": ["--only", "mlp_mnist", "--steps", "1", "--warmup", "0"],
}
#: On --resume a run's own flags may not be given again; only these shrink a resumed run.
TINY_RESUME = ["--no-progress"]
MNIST_EXAMPLES = ("minimal_gan.py", "gan_mnist.py", "cgan_mnist.py", "mnist_classifier.py")


def blocks():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = []
    for i, block in enumerate(re.findall(r"```bash\n(.*?)```", text, re.S)):
        commands = [" ".join(shlex.split(line, comments=True)) for line in block.splitlines()]
        commands = [c for c in commands if c.startswith(("python examples/", "python -m tinygan"))]
        if commands:
            found.append(pytest.param(commands, id=f"block{i}-{commands[0].split()[1].split('/')[-1]}"))
    return found


def tiny_data(folder):
    rng = np.random.default_rng(0)
    faces = folder / "lfw-deepfunneled"   # named as a user's LFW copy, so the default run folders match
    faces.mkdir(parents=True)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(faces / f"{i}.png")
    mnist = write_mnist(folder / "mnist")
    return faces, mnist


def fake_torch_python(folder):
    """An 'interpreter with torch' for bench --torch: prints the reference's JSON line for the MLP GAN
    (the library and its tests never import torch; tests/test_bench_torch.py checks the parsing)."""
    path = folder / "torch-python"
    path.write_text('#!/bin/sh\necho \'{"config": "mlp_gan", "image_size": 28, "n": 256, "s_med": 0.02}\'\n')
    path.chmod(0o755)
    return str(path)


def tiny(command, faces, mnist):
    argv = shlex.split(command)
    if "--torch" in argv:
        argv[argv.index("--torch") + 1] = fake_torch_python(faces.parent)
    program = argv[2] if argv[1] == "-m" else Path(argv[1]).name
    argv = [sys.executable] + [str(ROOT / a) if a.startswith("examples/") else a for a in argv[1:]]
    argv = [str(faces) if a in ("PATH/TO/FACES", "PATH", "~/data/lfw-deepfunneled") else
            str(mnist) if a in ("PATH/TO/MNIST", "~/data/mnist") else a for a in argv]
    if program in MNIST_EXAMPLES and "--data" not in argv and "--resume" not in argv:
        argv += ["--data", str(mnist)]
    return argv + (TINY_RESUME if "--resume" in argv or "--sample" in argv else TINY.get(program, []))


@pytest.mark.parametrize("commands", blocks())
def test_readme_block_runs(tmp_path, commands):
    faces, mnist = tiny_data(tmp_path / "data")
    env = dict(os.environ, TINYGAN_CACHE=str(tmp_path / "cache"), OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=str(ROOT))
    gpu_run_failed = False
    for command in commands:
        argv = tiny(command, faces, mnist)
        # in a fresh folder standing in for the clone's root: the runs/ folders go there
        r = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
        needs_gpu = "cupy" in argv or (gpu_run_failed and "runs/began-lfw-64" in command)
        if needs_gpu and r.returncode != 0:
            errors = [line for line in r.stderr.splitlines() if line.strip()]
            assert r.returncode == 2 and len(errors) == 1 and errors[0].startswith("error: "), (command, r.stderr)
            assert "Traceback" not in r.stderr
            gpu_run_failed = gpu_run_failed or "cupy" in argv
            continue
        assert r.returncode == 0, (command, r.stderr[-3000:])
