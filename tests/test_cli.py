"""The examples' shared command-line plumbing."""
import json

import pytest

from tinygan import cli


def make_parser():
    p = cli.parser("test")
    cli.add_common_args(p, epochs=150, batch_size=16, lr=1e-4, out="runs/x", data_help="data")
    p.add_argument("--filters", type=int, default=128)
    return p


def saved_run(tmp_path, **extra):
    (tmp_path / "config.json").write_text(json.dumps({"extra": extra}))
    return str(tmp_path)


def test_resume_takes_the_saved_settings_unless_given_again(tmp_path):
    run = saved_run(tmp_path, epochs=8, filters=32, lr=5e-5, batch_size=16, out="elsewhere", resume=None)
    p = make_parser()
    args = cli.resolve_resume(p, p.parse_args(["--resume", run]), fixed=("filters",))
    assert (args.epochs, args.filters, args.lr, args.out) == (8, 32, 5e-5, run)
    args = cli.resolve_resume(p, p.parse_args(["--resume", run, "--epochs", "30", "--filters", "64"]), fixed=("filters",))
    assert args.epochs == 30            # extends the run
    assert args.filters == 32           # the model is the saved one, whatever the command line says


def test_resume_of_a_folder_that_is_not_a_run_is_one_line(tmp_path, capsys):
    p = make_parser()
    with pytest.raises(SystemExit) as e:
        cli.resolve_resume(p, p.parse_args(["--resume", str(tmp_path)]), fixed=())
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: --resume: {tmp_path} has no config.json; is it a run folder?"


def test_help_shows_defaults_but_not_empty_ones():
    text = make_parser().format_help()
    assert "(default: 150)" in text and "(default: None)" not in text
