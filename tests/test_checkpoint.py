"""Tests of tinygan.train.checkpoint: exact round trips, atomic writes, safe and clear loading."""
import json
import os
import pickle
import sys

import numpy as np
import pytest

from tinygan.train import checkpoint as ckpt
from tinygan.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tinygan.nn import StateDictError, check_state_matches


def _arrays():
    rng = np.random.default_rng(0)
    return {
        "G/layers.0.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "G/layers.0.bias": np.zeros(4, np.float32),
        "D/fc.weight": rng.standard_normal((2, 5)),             # float64
        "opt/G/m.layers.0.weight": np.full((2, 2), -0.5, np.float16),
        "a..b/./c": np.array(7, dtype=np.int64),                 # 0-d, odd name
        "counts": np.arange(5, dtype=np.uint8),
        "mask": np.array([True, False]),
        "empty": np.zeros((0, 3), np.float32),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "ünïcode name": np.array([1.5]),
    }


def _listing(directory):
    return sorted(os.listdir(directory))


def test_round_trip_is_exact(tmp_path):
    path = tmp_path / "ckpt.npz"
    arrays = _arrays()
    gen = np.random.default_rng(123)
    gen.random(7)  # move the state away from the seed
    meta = {
        "step": np.int64(1200), "epoch": 3, "lr": 8e-5, "loss": float("nan"),
        "rng": gen.bit_generator.state,               # holds 128-bit Python ints
        "schedule": {"k_t": 0.031, "stalls": [1, 2]},
        "config": {"filters": 64, "size": (64, 64), "data": "lfw", "skip": None, "cond": False},
    }
    save_checkpoint(path, arrays, meta)
    loaded, got_meta = load_checkpoint(path)

    assert sorted(loaded) == sorted(arrays)
    for name, value in arrays.items():
        assert loaded[name].dtype == value.dtype, name
        assert loaded[name].shape == value.shape, name
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)

    assert got_meta["step"] == 1200 and type(got_meta["step"]) is int
    assert got_meta["config"]["size"] == [64, 64]          # tuples come back as lists
    assert np.isnan(got_meta["loss"])
    assert got_meta["schedule"] == meta["schedule"]
    assert got_meta["rng"]["state"]["state"] == gen.bit_generator.state["state"]["state"]
    # The restored generator continues exactly where the saved one was.
    restored = np.random.default_rng()
    restored.bit_generator.state = got_meta["rng"]
    np.testing.assert_array_equal(restored.random(5), gen.random(5))


def test_meta_is_json_in_a_uint8_array_under_reserved_key(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, {"w": np.ones(2)}, {"step": 5})
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["__meta__", "w"]
        raw = npz["__meta__"]
    assert raw.dtype == np.uint8 and raw.ndim == 1
    assert json.loads(raw.tobytes().decode("utf-8")) == {"step": 5}


def test_mt19937_state_with_array_round_trips(tmp_path):
    gen = np.random.Generator(np.random.MT19937(5))
    save_checkpoint(tmp_path / "c.npz", {}, {"rng": gen.bit_generator.state})
    _, meta = load_checkpoint(tmp_path / "c.npz")
    restored = np.random.Generator(np.random.MT19937())
    restored.bit_generator.state = meta["rng"]
    np.testing.assert_array_equal(restored.random(3), gen.random(3))


def test_path_used_as_given_and_overwritten(tmp_path):
    path = tmp_path / "latest.ckpt"          # np.savez would append ".npz"
    save_checkpoint(path, {"w": np.zeros(1)}, {"step": 1})
    save_checkpoint(path, {"w": np.ones(1)}, {"step": 2})
    assert _listing(tmp_path) == ["latest.ckpt"]
    arrays, meta = load_checkpoint(str(path))
    assert meta["step"] == 2 and arrays["w"][0] == 1.0


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_new_file_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "c.npz", {}, {})
    finally:
        os.umask(old)
    assert (tmp_path / "c.npz").stat().st_mode & 0o777 == 0o644


def test_failed_rename_keeps_old_checkpoint_and_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, {"w": np.arange(3.0)}, {"step": 1})
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(ckpt.os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(path, {"w": np.zeros(1000)}, {"step": 2})
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["ckpt.npz"]
    arrays, meta = load_checkpoint(path)
    assert meta["step"] == 1
    np.testing.assert_array_equal(arrays["w"], np.arange(3.0))


def test_interrupt_mid_write_keeps_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, {"a": np.ones(4), "b": np.ones(4)}, {"step": 1})
    before = path.read_bytes()
    real_write = np.lib.format.write_array
    calls = []

    def write_then_die(fp, array, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the first array is already in the temp file
            raise KeyboardInterrupt
        return real_write(fp, array, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"a": np.zeros(4), "b": np.zeros(4)}, {"step": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["ckpt.npz"]


def test_object_arrays_refused_on_save_without_writing(tmp_path):
    with pytest.raises(CheckpointError, match=r"arrays\['bad'\].*object.*pickle"):
        save_checkpoint(tmp_path / "c.npz", {"bad": np.array([{"x": 1}], dtype=object)}, {})
    assert _listing(tmp_path) == []


def test_pickled_content_refused_on_load(tmp_path):
    npz = tmp_path / "objects.npz"
    np.savez(npz, __meta__=np.frombuffer(b"{}", np.uint8), w=np.array([None, 1], dtype=object))
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(npz)

    plain = tmp_path / "model.pt"
    plain.write_bytes(pickle.dumps({"w": [1, 2]}, protocol=4))
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(plain)


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.npz")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)

    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"hello, not a zip")
    with pytest.raises(CheckpointError, match="not a tinygan .npz checkpoint.*ZIP"):
        load_checkpoint(junk)

    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(empty)

    npy = tmp_path / "single.npz"
    with open(npy, "wb") as fh:
        np.save(fh, np.zeros(3))
    with pytest.raises(CheckpointError, match=r"single \.npy array"):
        load_checkpoint(npy)

    no_meta = tmp_path / "plain.npz"
    np.savez(no_meta, w=np.zeros(2))
    with pytest.raises(CheckpointError, match=r"no '__meta__' entry.*\['w'\]"):
        load_checkpoint(no_meta)


def test_truncated_and_corrupted_files(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, {"w": np.arange(1000.0)}, {"step": 1})
    data = path.read_bytes()

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(truncated)

    # Flip a byte inside the array data: the ZIP CRC check must catch it.
    corrupt = bytearray(data)
    corrupt[len(data) // 3] ^= 0xFF
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(bytes(corrupt))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)


@pytest.mark.parametrize("key, message", [
    ("__meta__", "reserved"),
    ("w.npy", "must not end in '.npy'"),
    ("", "non-empty"),
    ("a\\b", "backslash"),
    (3, "must be str"),
])
def test_bad_array_names_refused(tmp_path, key, message):
    with pytest.raises(CheckpointError, match=message):
        save_checkpoint(tmp_path / "c.npz", {key: np.zeros(1)}, {})
    assert _listing(tmp_path) == []


def test_bad_meta_refused_naming_the_entry(tmp_path):
    with pytest.raises(CheckpointError, match=r"meta\['config'\]\['fn'\].*function"):
        save_checkpoint(tmp_path / "c.npz", {}, {"config": {"fn": len}})
    with pytest.raises(CheckpointError, match=r"key 0 of type int"):
        save_checkpoint(tmp_path / "c.npz", {}, {"per_class": {0: 1.0}})
    with pytest.raises(TypeError, match="meta must be a dict"):
        save_checkpoint(tmp_path / "c.npz", {}, [1, 2])
    assert _listing(tmp_path) == []


def test_check_state_matches_messages():
    expected = {"layers.0.weight": (32, 3, 3, 3), "layers.0.bias": (32,)}
    good = {"layers.0.weight": np.zeros((32, 3, 3, 3)), "layers.0.bias": np.zeros(32)}
    check_state_matches(expected, good)  # no error

    wrong = dict(good, **{"layers.0.weight": np.zeros((64, 3, 3, 3))})
    with pytest.raises(StateDictError) as info:
        check_state_matches(expected, wrong, what="generator")
    assert str(info.value) == (
        "checkpoint does not match the generator: parameter 'layers.0.weight' has shape "
        "(64, 3, 3, 3) in the checkpoint, expected (32, 3, 3, 3) — was it saved with other "
        "--filters/--size?")

    missing = {"layers.0.weight": np.zeros((32, 3, 3, 3))}
    with pytest.raises(StateDictError, match=r"discriminator: parameter 'layers.0.bias' with "
                                              r"shape \(32,\) is missing"):
        check_state_matches(expected, missing, what="discriminator")

    extra = dict(good, extra=np.zeros(2))
    with pytest.raises(StateDictError, match=r"unexpected entry 'extra' with shape \(2,\)"):
        check_state_matches(expected, extra, hint=None)

    # The first problem in the model's order is reported, with a count of the rest.
    several = {"layers.0.weight": np.zeros((1,)), "other": np.zeros(1)}
    with pytest.raises(StateDictError) as info:
        check_state_matches(expected, several, hint=None)
    message = str(info.value)
    assert "parameter 'layers.0.weight' has shape (1,)" in message
    assert message.endswith("(and 2 more mismatches)")
