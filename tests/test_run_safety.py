"""A run is never lost, --resume means what it says, and every bad input is one clear line.

Each test reproduces a defect a user met (issue "A run is never lost...") on the examples themselves,
on tiny data: a rerun that destroyed a run, a resume that spun forever on changed data, flags that
stuck or were dropped on resume, tracebacks for bad flags, outputs of an epoch lost to a kill,
a Ctrl-C that read as a failure, and the fault story (kill -9, bit-exact resume).
"""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tinygan import backend
from tinygan.train.checkpoint import load_checkpoint
from tinygan.train import LoopConfig, TrainingError, fit

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"
sys.path.insert(0, str(REPO / "examples"))

import began_faces  # noqa: E402
from tinygan.tools import mnist_gan  # noqa: E402
import gan_toy2d  # noqa: E402

TINY = ["--size", "32", "--filters", "4", "--hidden", "8", "--crop", "32", "--batch-size", "4",
        "--swd-samples", "8", "--num-samples", "4", "--sample-every", "0", "--log-every", "1", "--no-progress"]


def face_folder(path, n=12, seed=0):
    from PIL import Image
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path / f"{seed}-{i:03d}.png")
    return path


@pytest.fixture
def faces(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGAN_CACHE", str(tmp_path / "cache"))
    return face_folder(tmp_path / "faces")


def run_main(main, argv, capsys):
    """Run an example's main(); returns (exit status, stdout, stderr lines)."""
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def began(faces, out, *extra):
    return ["--data", str(faces), "--out", str(out), *TINY, *extra]


# ---- 1. a rerun never destroys a run -------------------------------------------------------------

def test_rerun_without_resume_is_refused_and_overwrite_keeps_the_old_run_whole(tmp_path, faces, capsys):
    out = tmp_path / "run"
    assert run_main(began_faces.main, began(faces, out, "--epochs", "2"), capsys)[0] == 0
    before = snapshot(out)
    code, _, err = run_main(began_faces.main, began(faces, out, "--epochs", "2"), capsys)
    assert code == 2 and err == [f"error: {out} already holds a run at step 6; continue it with --resume, "
                                 "or pass --overwrite to start over"]
    assert snapshot(out) == before                                    # nothing touched

    code, _, err = run_main(began_faces.main, began(faces, out, "--epochs", "1", "--overwrite"), capsys)
    assert code == 0 and any(f"moved the previous run (a run at step 6) to {out}.old-1" in line for line in err)
    assert snapshot(tmp_path / "run.old-1") == before                 # the old run, whole
    assert load_checkpoint(out / "checkpoint.npz")[1]["step"] == 3    # the new one
    code, _, err = run_main(began_faces.main, began(faces, out, "--epochs", "1", "--overwrite"), capsys)
    assert code == 0 and any(f"to {out}.old-2" in line for line in err)
    assert snapshot(tmp_path / "run.old-1") == before                 # never reused


class _NaNTrainer:
    """A trainer whose loss is NaN from the first step: no checkpoint exists when the run stops."""
    name, headline, curve_panels = "nan", (), [("loss", ["loss"])]

    def step(self, batch):
        return {"loss": backend.xp().asarray(float("nan"), dtype=np.float32)}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_a_nan_stop_never_names_a_checkpoint_that_does_not_exist(tmp_path):
    config = LoopConfig(out=str(tmp_path / "run"), epochs=2, batch_size=2, log_every=1, progress=False)
    with pytest.raises(TrainingError) as info:
        fit(_NaNTrainer(), (np.zeros((8, 3), np.float32),), config, lambda b: b)
    assert "loss became nan at step 1" in str(info.value) and "No checkpoint had been written yet" in str(info.value)
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


# ---- 2. changed data on resume -------------------------------------------------------------------

def subprocess_env(tmp_path):
    return dict(os.environ, TINYGAN_CACHE=str(tmp_path / "cache"), OPENBLAS_NUM_THREADS="1",
                PYTHONPATH=str(REPO))


@pytest.mark.parametrize("change, words", [("shrink", "trained on 12 examples, now there are 4"),
                                           ("grow", "trained on 12 examples, now there are 20"),
                                           ("replace", "other contents")])
def test_resume_on_changed_data_is_one_line_and_never_spins(tmp_path, faces, capsys, change, words):
    out = tmp_path / "run"
    assert run_main(began_faces.main, began(faces, out, "--epochs", "3", "--max-steps", "5"), capsys)[0] == 0
    files = sorted(faces.iterdir())
    if change == "shrink":
        for p in files[4:]:
            p.unlink()
    elif change == "grow":
        face_folder(faces, n=8, seed=1)
    else:
        files[0].unlink()
        face_folder(faces, n=1, seed=2)
    # in a subprocess with a time limit: the defect was a loop spinning at 100% CPU
    r = subprocess.run([sys.executable, str(REPO / "examples" / "began_faces.py"), "--resume", str(out),
                        "--no-progress"], capture_output=True, text=True, timeout=120, env=subprocess_env(tmp_path))
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(err) == 1 and "the data changed" in err[0] and words in err[0], r.stderr
    assert "Traceback" not in r.stderr


# ---- 3. what --resume keeps and what it takes from the command line -------------------------------

def test_resume_extends_a_run_past_its_saved_max_steps_and_says_where_it_continues(tmp_path, faces, capsys):
    out = tmp_path / "run"
    assert run_main(began_faces.main, began(faces, out, "--epochs", "2", "--max-steps", "2"), capsys)[0] == 0
    code, _, err = run_main(began_faces.main, ["--resume", str(out), "--epochs", "3", "--no-progress"], capsys)
    assert code == 0
    assert any(f"resuming {out} at step 2 of 9" in line for line in err), err
    assert load_checkpoint(out / "checkpoint.npz")[1]["step"] == 9
    code, _, err = run_main(began_faces.main, ["--resume", str(out), "--no-progress"], capsys)
    assert code == 0 and any("nothing to train" in line for line in err)


def test_resume_refuses_another_value_of_a_flag_that_fixes_the_model(tmp_path, faces, capsys):
    out = tmp_path / "run"
    assert run_main(began_faces.main, began(faces, out, "--epochs", "1"), capsys)[0] == 0
    code, _, err = run_main(began_faces.main, ["--resume", str(out), "--filters", "16"], capsys)
    assert code == 2 and err == [f"error: --resume: --filters is 4 in the run {out}, got 16; it fixes the model, "
                                 "its training or the data, so it cannot change on resume (start a new run "
                                 "with another --out)"]


TOY = ["--mixture", "ring", "--train-size", "256", "--batch-size", "64", "--width", "8", "--depth", "1",
       "--num-samples", "16", "--no-progress"]


@pytest.mark.parametrize("decay", ["linear", "none"])
def test_a_linear_lr_decay_fixes_epochs_on_resume_and_a_constant_lr_can_be_extended(tmp_path, capsys, decay):
    """--epochs is the length of a linear decay (lr reaches 0 at its end), so it is the run's own then."""
    out = tmp_path / "toy"
    assert run_main(gan_toy2d.main, TOY + ["--epochs", "1", "--lr-decay", decay, "--out", str(out)], capsys)[0] == 0
    code, _, err = run_main(gan_toy2d.main, ["--resume", str(out), "--epochs", "2", "--no-progress"], capsys)
    steps = load_checkpoint(out / "checkpoint.npz")[1]["step"]
    if decay == "linear":
        assert code == 2 and err == [f"error: --resume: --epochs is 1 in the run {out}, got 2; it sets the length "
                                     "of this run's linear lr decay (--lr-decay none runs can be extended), so it "
                                     "cannot change on resume (start a new run with another --out)"]
        assert steps == 4
    else:
        assert code == 0 and steps == 8


def test_mnist_gans_take_the_lr_decay_and_a_run_without_it_resumes_as_constant(tmp_path):
    args = mnist_gan.build_parser().parse_args(["--lr-decay", "linear", "--epochs", "3", "--batch-size", "50"])
    trainer = mnist_gan.build(args, train_size=1000)
    assert trainer.lr_decay_steps == 3 * 20
    args = mnist_gan.build_parser().parse_args([])
    assert args.lr_decay == "none" and mnist_gan.build(args).lr_decay_steps is None
    assert "lr_decay" in mnist_gan.RUN_OWN and mnist_gan.INTRODUCED["lr_decay"] == "none"


# ---- 5, 6, 7. bad input: one line, exit 2, before any work ---------------------------------------

@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if an example starts loading data: flags must be checked first."""
    def refuse(*a, **k):
        raise AssertionError("work started before the flags were checked")
    monkeypatch.setattr(began_faces, "load_faces", refuse)
    monkeypatch.setattr(mnist_gan, "load_mnist", refuse)
    monkeypatch.setattr(gan_toy2d, "sample_mixture", refuse)


def other_runs(tmp_path):
    """Folders a user might point a flag at by mistake."""
    toy = tmp_path / "toy-run"
    toy.mkdir()
    (toy / "config.json").write_text(json.dumps({"extra": {"example": "gan_toy2d"}}))
    from tinygan.train.checkpoint import save_checkpoint
    save_checkpoint(toy / "checkpoint.npz", {}, {"step": 1})
    corrupt = tmp_path / "corrupt-run"
    corrupt.mkdir()
    (corrupt / "config.json").write_text('{"extra": ')
    save_checkpoint(corrupt / "checkpoint.npz", {}, {"step": 1})
    (tmp_path / "a-file").write_text("x")
    return toy, corrupt, tmp_path / "a-file"


BAD_BEGAN = [
    (["--lr-window", "0"], "argument --lr-window: expected a positive integer, got 0"),
    (["--crop", "0"], "argument --crop: expected a positive integer, got 0"),
    (["--crop", "-5"], "argument --crop: expected a positive integer, got -5"),
    (["--swd-samples", "-5"], "argument --swd-samples: expected 0 (off) or an integer >= 2"),
    (["--seed", "-1"], "argument --seed: expected an integer >= 0, got -1"),
    (["--num-samples", "-3"], "argument --num-samples: expected an integer >= 0, got -3"),
    (["--lambda-k", "-1"], "argument --lambda-k: expected a finite number >= 0"),
    (["--lr-min", "-1"], "argument --lr-min: expected a finite number >= 0"),
    (["--lr-min", "0.01"], "--lr-min 0.01 is above --lr 0.0001"),
    (["--max-steps", "0"], "argument --max-steps: expected a positive integer, got 0"),
    (["--max-steps", "-4"], "argument --max-steps: expected a positive integer, got -4"),
    (["--sample-every", "-1"], "argument --sample-every: expected an integer >= 0, got -1"),
    (["--lr", "nan"], "argument --lr: expected a finite number > 0, got nan"),
    (["--gamma", "0"], "argument --gamma: expected a number in (0, 1]"),
    (["--out", "{file}"], "is a file; expected a folder"),
    (["--resume", "{toy}"], "holds a run of gan_toy2d, not of began_faces"),
    (["--resume", "{corrupt}"], "config.json is not readable JSON"),
    (["--sample", "{toy}"], "--sample: {toy} holds a run of gan_toy2d"),
    (["--sample", "{corrupt}"], "config.json is not readable JSON"),
    (["--resume", "{toy}", "--overwrite"], "contradict"),
]


@pytest.mark.parametrize("argv, words", BAD_BEGAN, ids=[" ".join(a) for a, _ in BAD_BEGAN])
def test_bad_began_command_lines_are_one_line_before_any_work(tmp_path, capsys, no_work, argv, words):
    toy, corrupt, file = other_runs(tmp_path)
    fill = {"toy": toy, "corrupt": corrupt, "file": file}
    argv = [a.format(**fill) for a in argv] + ([] if "--out" in argv else ["--out", str(tmp_path / "new")])
    code, _, err = run_main(began_faces.main, argv, capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert words.format(**fill) in err[0], err


BAD_OTHERS = [
    ("gan_toy2d", ["--train-size", "10"], "--train-size 10 is smaller than one step's batch"),
    ("gan_toy2d", ["--data", "x"], "reads no files"),
    ("gan_toy2d", ["--width", "0"], "argument --width: expected a positive integer"),
    ("gan_mnist", ["--resume", "{toy}"], "holds a run of gan_toy2d, not of gan_mnist"),
    ("gan_mnist", ["--dropout", "1"], "argument --dropout: expected a number in [0, 1)"),
    ("gan_mnist", ["--eval-samples", "1"], "argument --eval-samples: expected 0 (off) or an integer >= 2"),
    ("gan_mnist", ["--g-hidden", "0,5"], "argument --g-hidden"),
]


@pytest.mark.parametrize("module, argv, words", BAD_OTHERS, ids=[f"{m} {' '.join(a)}" for m, a, _ in BAD_OTHERS])
def test_bad_command_lines_of_the_other_examples(tmp_path, capsys, no_work, module, argv, words):
    toy, _, _ = other_runs(tmp_path)
    argv = [a.format(toy=toy) for a in argv] + ["--out", str(tmp_path / "new")]
    code, _, err = run_main(__import__(module).main, argv, capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and words.format(toy=toy) in err[0], err


def test_a_batch_larger_than_the_data_is_one_line_before_the_first_step(tmp_path, faces, capsys):
    out = tmp_path / "run"
    code, _, err = run_main(began_faces.main, began(faces, out, "--batch-size", "100000"), capsys)
    assert code == 2 and err[-1] == ("error: the data has 12 examples, fewer than one batch of 100,000; "
                                     "lower --batch-size or use more data")
    assert not (out / "checkpoint.npz").exists()


def test_sample_into_a_folder_that_cannot_be_written_names_the_file(tmp_path, faces, capsys, monkeypatch):
    out = tmp_path / "run"
    assert run_main(began_faces.main, began(faces, out, "--epochs", "1"), capsys)[0] == 0

    def read_only(path, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
    monkeypatch.setattr(began_faces, "save_grid", read_only)
    code, _, err = run_main(began_faces.main, ["--sample", str(out)], capsys)
    assert code == 2 and err == [f"error: {out / 'samples.png'}: permission denied (choose another --out, "
                                 "or TINYGAN_CACHE=DIR for the cache)"]


def test_a_full_disk_names_the_checkpoint_and_keeps_the_previous_one(tmp_path, faces, capsys, monkeypatch):
    out = tmp_path / "run"
    assert run_main(began_faces.main, began(faces, out, "--epochs", "1"), capsys)[0] == 0
    before = (out / "checkpoint.npz").read_bytes()
    import tinygan.train.checkpoint as ckpt

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")   # as write() raises it: no file name
    monkeypatch.setattr(ckpt.np.lib.format, "write_array", full)
    code, _, err = run_main(began_faces.main, ["--resume", str(out), "--epochs", "2", "--no-progress"], capsys)
    assert code == 2 and err[-1] == f"error: {out / 'checkpoint.npz'}: no space left on the device (free some space, or choose another --out)"
    assert (out / "checkpoint.npz").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_warnings_are_one_line_without_a_source_line(tmp_path, faces):
    # in a subprocess: pytest records warnings itself, a user's terminal does not
    script = (f"import sys, warnings; sys.path.insert(0, {str(REPO / 'examples')!r}); import began_faces\n"
              "real = began_faces.load_faces\n"
              "def load(*a, **k):\n"
              "    warnings.warn('3 images are smaller than the crop')\n"
              "    return real(*a, **k)\n"
              "began_faces.load_faces = load\n"
              "began_faces.main(sys.argv[1:])\n")
    r = subprocess.run([sys.executable, "-c", script, *began(faces, tmp_path / "run", "--max-steps", "1")],
                       capture_output=True, text=True, timeout=120, env=subprocess_env(tmp_path))
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert [line for line in lines if "smaller than the crop" in line] == ["warning: 3 images are smaller than the crop"]
    assert not any("warnings.warn" in line for line in lines), r.stderr


# ---- 8. an epoch's outputs survive a kill during its hooks ---------------------------------------

class _Killed(BaseException):
    """Stands for the process dying: not an Exception, so nothing on the way catches it."""


def test_hooks_cut_short_are_finished_on_resume_and_stale_temp_files_removed(tmp_path, faces, capsys, monkeypatch):
    straight = tmp_path / "straight"
    assert run_main(began_faces.main, began(faces, straight, "--epochs", "3"), capsys)[0] == 0

    out = tmp_path / "run"
    real, calls = began_faces.sliced_wasserstein, []

    def dies_in_epoch_2(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise _Killed
        return real(*a, **k)
    monkeypatch.setattr(began_faces, "sliced_wasserstein", dies_in_epoch_2)
    with pytest.raises(_Killed):
        began_faces.main(began(faces, out, "--epochs", "3"))
    monkeypatch.setattr(began_faces, "sliced_wasserstein", real)
    (out / ".checkpoint.npz.0123456789ab.tmp").write_bytes(b"half a checkpoint")
    assert (out / "swd.csv").read_text().count("\n") == 2            # header + epoch 1: epoch 2's row was lost

    code, _, err = run_main(began_faces.main, ["--resume", str(out), "--no-progress"], capsys)
    assert code == 0 and any("finishing epoch 2's grids and metrics" in line for line in err)
    assert (out / "swd.csv").read_text() == (straight / "swd.csv").read_text()   # every epoch, once
    for name in ("grid_epoch002.png", "grid_epoch003.png"):
        assert (out / name).read_bytes() == (straight / name).read_bytes(), name
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


# ---- 9. Ctrl-C reads as what it is ----------------------------------------------------------------

def wait_for(predicate, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def log_rows(path):
    return len(path.read_text().splitlines()) - 1 if path.exists() else 0


def test_ctrl_c_saves_says_so_once_and_redraws_the_curves(tmp_path, faces):
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, str(REPO / "examples" / "began_faces.py"),
                          *began(faces, out, "--epochs", "1000")], stderr=subprocess.PIPE, text=True,
                         env=subprocess_env(tmp_path))
    try:
        assert wait_for(lambda: log_rows(out / "log.csv") >= 2), "the run did not start"
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("interrupted at step ") and lines[-1].endswith("continue with --resume")
    assert not any(line.startswith("error") for line in lines), err
    assert (out / "curves.png").exists()
    step = load_checkpoint(out / "checkpoint.npz")[1]["step"]
    assert f"interrupted at step {step:,}:" in lines[-1]


# ---- the fault story: kill -9 at any moment, then resume, equals a straight run -------------------

def final_state(out):
    arrays, meta = load_checkpoint(out / "checkpoint.npz")
    return arrays, meta["step"]


def kill_then_resume(command, out, tmp_path, wait_rows):
    env = subprocess_env(tmp_path)
    p = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        assert wait_for(lambda: (out / "checkpoint.npz").exists() and log_rows(out / "log.csv") >= wait_rows)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
    finally:
        p.kill()
    resume = [sys.executable, command[1], "--resume", str(out), "--no-progress"]
    r = subprocess.run(resume, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr


def assert_same_state(a, b):
    arrays_a, step_a = final_state(a)
    arrays_b, step_b = final_state(b)
    assert step_a == step_b and sorted(arrays_a) == sorted(arrays_b)
    for name in arrays_a:
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=name)


def test_kill_9_during_began_training_resumes_bit_exact(tmp_path, faces):
    argv = [sys.executable, str(REPO / "examples" / "began_faces.py"), "--epochs", "4", "--checkpoint-every", "2"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(argv + began(faces, straight), check=True, capture_output=True, timeout=300,
                   env=subprocess_env(tmp_path))
    kill_then_resume(argv + began(faces, killed), killed, tmp_path, wait_rows=5)
    assert_same_state(straight, killed)
    np.testing.assert_array_equal(np.load(straight / "samples.npy"), np.load(killed / "samples.npy"))


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"MNIST is not in {SHARED_MNIST}")
def test_kill_9_during_mnist_gan_training_resumes_bit_exact(tmp_path):
    argv = [sys.executable, str(REPO / "examples" / "gan_mnist.py"), "--data", str(SHARED_MNIST),
            "--g-hidden", "16", "--d-hidden", "16", "--batch-size", "16", "--max-steps", "40",
            "--checkpoint-every", "7", "--log-every", "1", "--num-samples", "10", "--no-judge", "--no-progress"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(argv + ["--out", str(straight)], check=True, capture_output=True, timeout=300,
                   env=subprocess_env(tmp_path))
    kill_then_resume(argv + ["--out", str(killed)], killed, tmp_path, wait_rows=9)
    assert_same_state(straight, killed)
