"""bench --torch: the PyTorch side-by-side, with a stand-in for the reference script (no torch here).

The real reference lives in benchmarks/torch_ref/ and needs torch; these tests give torch_reference a
script of the same output format, and check what reaches the user when the interpreter or script fails.
"""
import sys

import pytest

from tinygan.tools import bench

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
    got = bench.torch_reference(sys.executable, 2, 3, 1, ref=ref)
    assert got == {"began32_n32": 0.25, "began64_n64": 4.5, "mlp_mnist": 0.02}


def test_a_failing_reference_says_why_in_one_line(tmp_path):
    ref = _ref(tmp_path, "raise ModuleNotFoundError(\"No module named 'torch'\")\n")
    with pytest.raises(RuntimeError, match=r"--torch: .* failed: ModuleNotFoundError: No module named 'torch'"):
        bench.torch_reference(sys.executable, 1, 1, 0, ref=ref)


def test_other_output_is_skipped_and_broken_json_named(tmp_path):
    ref = _ref(tmp_path, "print('a warning from torch')\nprint('{\"config\": \"mlp_gan\", \"image_size\": 28, "
                         "\"n\": 256, \"s_med\": 0.02}')\n")
    assert bench.torch_reference(sys.executable, 1, 1, 0, ref=ref) == {"mlp_mnist": 0.02}
    ref = _ref(tmp_path, "print('{not json')\n")
    with pytest.raises(RuntimeError, match=r"printed a line that is not JSON: '\{not json'"):
        bench.torch_reference(sys.executable, 1, 1, 0, ref=ref)


def test_a_missing_interpreter_or_script_is_named(tmp_path):
    with pytest.raises(RuntimeError, match=r"--torch: cannot run '/no/such/python'"):
        bench.torch_reference("/no/such/python", 1, 1, 0, ref=_ref(tmp_path, ""))
    with pytest.raises(RuntimeError, match=r"is not here"):
        bench.torch_reference(sys.executable, 1, 1, 0, ref=str(tmp_path / "nowhere"))


def test_the_side_by_side_table_divides_like_for_like():
    rows = [{"config": "began64_n64", "s_med": 4.0}, {"config": "dcgan_mnist", "s_med": 0.1}]
    table = bench._torch_table(rows, {"began64_n64": 5.0}, "1")
    assert "began64_n64" in table and "0.80" in table and "dcgan_mnist" not in table
