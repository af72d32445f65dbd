"""bench --torch: the PyTorch side-by-side, with a stand-in for the reference script (no torch here).

The real reference lives in benchmarks/torch_ref/ and needs torch; these tests give torch_reference a
script of the same output format, and check what reaches the user when the interpreter or script fails.
"""
import sys

import pytest

from tinygan.tools import bench, bench_torch

pytestmark = pytest.mark.backend_agnostic


def _ref(tmp_path, body):
    (tmp_path / "bench.py").write_text(body)
    return str(tmp_path)


def test_reads_the_reference_rows_for_our_configurations(tmp_path):
    rows = [{"config": "gemm", "cpu": "x"},
            {"config": "began", "image_size": 32, "n": 32, "s_med": 0.25},
            {"config": "began", "image_size": 32, "n": 64, "s_med": 0.9},     # not one of ours
            {"config": "began", "image_size": 64, "n": 64, "s_med": 4.5},
            {"config": "mlp_gan", "image_size": 28, "n": 256, "s_med": 0.02}]
    ref = _ref(tmp_path, "import sys, json\nassert sys.argv[1:3] == ['--threads', '2'], sys.argv\n"
                         + "".join(f"print(json.dumps({r!r}))\n" for r in rows))
    got = bench_torch.torch_reference(sys.executable, 2, 3, 1, ref=ref)
    assert got == {"began32_n32": 0.25, "began64_n64": 4.5, "mlp_mnist": 0.02}


def test_a_failing_reference_says_why_in_one_line(tmp_path):
    ref = _ref(tmp_path, "raise ModuleNotFoundError(\"No module named 'torch'\")\n")
    with pytest.raises(RuntimeError, match=r"--torch: .* failed: ModuleNotFoundError: No module named 'torch'"):
        bench_torch.torch_reference(sys.executable, 1, 1, 0, ref=ref)


def test_other_output_is_skipped_and_broken_json_named(tmp_path):
    ref = _ref(tmp_path, "print('a warning from torch')\nprint('{\"config\": \"mlp_gan\", \"image_size\": 28, "
                         "\"n\": 256, \"s_med\": 0.02}')\n")
    assert bench_torch.torch_reference(sys.executable, 1, 1, 0, ref=ref) == {"mlp_mnist": 0.02}
    ref = _ref(tmp_path, "print('{not json')\n")
    with pytest.raises(RuntimeError, match=r"printed a line that is not JSON: '\{not json'"):
        bench_torch.torch_reference(sys.executable, 1, 1, 0, ref=ref)


def test_a_missing_interpreter_or_script_is_named(tmp_path):
    with pytest.raises(RuntimeError, match=r"--torch: cannot run '/no/such/python'"):
        bench_torch.torch_reference("/no/such/python", 1, 1, 0, ref=_ref(tmp_path, ""))
    with pytest.raises(RuntimeError, match=r"is not here"):
        bench_torch.torch_reference(sys.executable, 1, 1, 0, ref=str(tmp_path / "nowhere"))


def test_the_reference_is_asked_for_our_configurations_only(tmp_path):
    assert bench_torch.reference_configs(["began64_n64", "mlp_mnist", "dcgan_mnist"]) == \
        "began:64:64,mlp_gan:28:256"
    ref = _ref(tmp_path, "import sys, json\nassert sys.argv[-2:] == ['--configs', 'began:64:64'], sys.argv\n"
                         "print(json.dumps({'config': 'began', 'image_size': 64, 'n': 64, 's_med': 4.5}))\n")
    assert bench_torch.torch_reference(sys.executable, 1, 1, 0, ref=ref, configs="began:64:64") == \
        {"began64_n64": 4.5}


def test_rounds_alternate_the_sides_abba():
    calls = []
    ours, theirs = bench_torch.round_robin(
        4, lambda r: calls.append(("ours", r)) or {"a": 1.0 + r},
        lambda r: calls.append(("torch", r)) or {"a": 2.0})
    assert calls == [("ours", 0), ("torch", 0), ("torch", 1), ("ours", 1),
                     ("ours", 2), ("torch", 2), ("torch", 3), ("ours", 3)]
    assert [o["a"] for o in ours] == [1.0, 2.0, 3.0, 4.0] and len(theirs) == 4


def test_compare_takes_the_median_of_per_round_ratios():
    # the machine slows by 2x in round 1 on both sides: per-round ratios stay 0.5, while the ratio of
    # the two sides' medians would not see the pairing
    ours = [{"x": 1.0, "y": 1.0}, {"x": 2.0, "y": 1.0}, {"x": 1.2, "y": 1.0}]
    theirs = [{"x": 2.0, "y": 1.0}, {"x": 4.0}, {"x": 2.0, "y": 1.0}]
    cmp = bench_torch.compare(ours, theirs)
    assert list(cmp) == ["x"]          # y is missing from a round of PyTorch's: not compared
    c = cmp["x"]
    assert c["ratio"] == 0.5 and c["ratio_min"] == 0.5 and c["ratio_max"] == 0.6 and c["rounds"] == 3
    assert c["ours_s"] == 1.2 and c["torch_s"] == 2.0


def test_the_side_by_side_table_divides_like_for_like():
    cmp = bench_torch.compare([{"began64_n64": 4.0, "dcgan_mnist": 0.1}], [{"began64_n64": 5.0}])
    table = bench_torch.table(cmp, "1")
    assert "began64_n64" in table and "0.80" in table and "dcgan_mnist" not in table
    assert "ratio per round" not in table
    cmp = bench_torch.compare([{"b": 4.0}, {"b": 3.0}], [{"b": 5.0}, {"b": 2.0}])
    assert "0.80 - 1.50" in bench_torch.table(cmp, "2") and "2 rounds" in bench_torch.table(cmp, "2")


def test_rounds_without_torch_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--rounds", "3"])
    assert e.value.code == 2 and "--rounds alternates tinygan with PyTorch" in capsys.readouterr().err
