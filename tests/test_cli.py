"""The examples' shared command-line plumbing: checked flags, which flags were given, resume rules, errors."""
import errno
import json

import pytest

from tinygan.tools import cli


def make_parser():
    p = cli.parser("test")
    cli.add_common_args(p, epochs=150, batch_size=16, lr=1e-4, out="runs/x", data_help="data")
    p.add_argument("--filters", type=cli.positive_int, default=128)
    p.add_argument("--sample-every", type=cli.count, default=500)
    return p


def saved_run(tmp_path, example="test", step=3, **extra):
    """A folder that looks like a run: config.json and a checkpoint at ``step``."""
    from tinygan.train.checkpoint import save_checkpoint
    (tmp_path / "config.json").write_text(json.dumps({"extra": dict(extra, example=example)}))
    save_checkpoint(tmp_path / "checkpoint.npz", {}, {"step": step})
    return str(tmp_path)


def parse(argv):
    return cli.parse_args(make_parser(), argv)


def test_given_flags_are_known_even_when_given_with_their_default_value():
    args, given = parse(["--epochs", "150", "--lr", "0.001", "--no-progress"])
    assert {"epochs", "lr", "no_progress"} <= given
    assert not given & {"batch_size", "filters", "resume", "max_steps"}
    assert args.epochs == 150 and args.batch_size == 16


def test_resume_restores_saved_settings_unless_given_again(tmp_path):
    run = saved_run(tmp_path, epochs=8, filters=32, lr=5e-5, batch_size=16, sample_every=7, out="elsewhere")
    args, given = parse(["--resume", run])
    args = cli.prepare_run(args, given, example="test", run_own=("filters", "lr"))
    assert (args.epochs, args.filters, args.lr, args.sample_every, args.out) == (8, 32, 5e-5, 7, run)
    args, given = parse(["--resume", run, "--epochs", "30", "--sample-every", "0"])
    args = cli.prepare_run(args, given, example="test", run_own=("filters",))
    assert (args.epochs, args.sample_every, args.filters) == (30, 0, 32)   # how long and how often: the command line


def test_a_run_saved_before_a_flag_existed_resumes_with_the_value_it_trained_with(tmp_path):
    """A flag added later (began_faces' --flip): the old run lacks it and keeps its old behaviour."""
    p = make_parser()
    p.add_argument("--flip", action="store_true", default=True)
    run = saved_run(tmp_path, epochs=8, filters=32)
    args, given = cli.parse_args(p, ["--resume", run])
    args = cli.prepare_run(args, given, example="test", run_own=("filters", "flip"), introduced={"flip": False})
    assert args.flip is False and args.filters == 32
    args, given = cli.parse_args(p, ["--resume", run])
    with pytest.raises(SystemExit):  # without it, the old run is refused as not this example's
        cli.prepare_run(args, given, example="test", run_own=("filters", "flip"))


def test_a_saved_max_steps_does_not_cut_short_a_run_extended_with_epochs(tmp_path):
    run = saved_run(tmp_path, epochs=2, max_steps=5)
    args, given = parse(["--resume", run, "--epochs", "10"])
    args = cli.prepare_run(args, given, example="test", run_own=())
    assert (args.epochs, args.max_steps) == (10, None)
    args, given = parse(["--resume", run])
    assert cli.prepare_run(args, given, example="test", run_own=()).max_steps == 5


def test_resume_refuses_a_different_architecture_flag_naming_both_values(tmp_path, capsys):
    run = saved_run(tmp_path, filters=8)
    args, given = parse(["--resume", run, "--filters", "16"])
    with pytest.raises(SystemExit) as e:
        cli.prepare_run(args, given, example="test", run_own=("filters",))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--filters is 8 in the run" in err[0] and "got 16" in err[0]
    args, given = parse(["--resume", run, "--filters", "8"])       # the same value is fine
    assert cli.prepare_run(args, given, example="test", run_own=("filters",)).filters == 8


@pytest.mark.parametrize("setup, words", [
    (lambda d: None, "holds no run"),
    (lambda d: (d / "config.json").write_text("{not json"), "no checkpoint.npz yet"),
    (lambda d: (saved_run(d), (d / "config.json").write_text("{not json")), "is not readable JSON"),
    (lambda d: (saved_run(d), (d / "config.json").write_text('{"other": 1}')), "no 'extra' settings"),
    (lambda d: saved_run(d, example="began_faces"), "holds a run of began_faces, not of test"),
    (lambda d: saved_run(d), "lacks the setting 'filters'"),
    (lambda d: (saved_run(d, filters=8), (d / "checkpoint.npz").write_bytes(b"garbage")), "cannot be read"),
], ids=["empty", "no-checkpoint", "corrupt-config", "config-without-extra", "other-example", "missing-key",
        "corrupt-checkpoint"])
def test_resume_of_a_folder_that_is_not_a_resumable_run_is_one_line(tmp_path, capsys, setup, words):
    setup(tmp_path)
    args, given = parse(["--resume", str(tmp_path)])
    with pytest.raises(SystemExit) as e:
        cli.prepare_run(args, given, example="test", run_own=("filters",))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err


def test_a_new_run_in_a_folder_holding_one_is_refused(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    run = saved_run(tmp_path / "r", step=12)
    args, given = parse(["--out", run])
    with pytest.raises(SystemExit):
        cli.prepare_run(args, given, example="test", run_own=())
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {run} already holds a run at step 12; continue it with --resume, "
                   "or pass --overwrite to start over")
    args, given = parse(["--out", run, "--overwrite"])
    assert cli.prepare_run(args, given, example="test", run_own=()).out == run   # the loop moves it aside


@pytest.mark.parametrize("argv, words", [
    (["--epochs", "0"], "argument --epochs: expected a positive integer, got 0"),
    (["--lr", "nan"], "argument --lr: expected a finite number > 0, got nan"),
    (["--lr", "-1"], "expected a finite number > 0"),
    (["--seed", "-1"], "argument --seed: expected an integer >= 0, got -1"),
    (["--max-steps", "0"], "argument --max-steps: expected a positive integer"),
    (["--sample-every", "-1"], "argument --sample-every: expected an integer >= 0"),
    (["--filters", "x"], "argument --filters: expected a positive integer, got 'x'"),
    (["--nonsense"], "unrecognized arguments: --nonsense"),
])
def test_bad_flags_are_one_line_with_exit_2(capsys, argv, words):
    with pytest.raises(SystemExit) as e:
        parse(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err


def test_resume_and_overwrite_together_are_refused(tmp_path, capsys):
    args, given = parse(["--resume", saved_run(tmp_path), "--overwrite"])
    with pytest.raises(SystemExit):
        cli.prepare_run(args, given, example="test", run_own=())
    assert "contradict" in capsys.readouterr().err


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left"), (errno.EACCES, "permission denied"),
                                         (errno.EROFS, "read-only")])
def test_file_errors_name_the_file_and_the_cause(code, words):
    line = cli.describe_os_error(OSError(code, "x", "runs/a/checkpoint.npz"))
    assert line.startswith("runs/a/checkpoint.npz: ") and words in line


def test_help_shows_defaults_but_not_empty_ones():
    text = make_parser().format_help()
    assert "(default: 150)" in text and "(default: None)" not in text
