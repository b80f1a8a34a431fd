"""crnn.io: model files (save/load), checkpoints, and pickling.

Round trips must be exact (same class, settings, parameter bits and outputs)
for every model kind and dtype; every kind of bad file must raise a
ValueError naming the file; an interrupted save must leave the previous file
as it was and no temporary file behind.
"""
import concurrent.futures
import copy
import inspect
import io as stdlib_io
import json
import multiprocessing
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import crnn
import crnn.io

DTYPES = ["float32", "float64"]
KINDS = ["RNN", "RNN-relu", "LSTM", "GRU"]
# (num_layers, bidirectional, output, return_sequences)
SHAPES = [(1, False, "softmax", True), (2, True, "linear", False),
          (2, False, None, True), (1, True, "softmax", False)]


def make_model(kind, dtype="float32", num_layers=1, bidirectional=False,
               output="softmax", return_sequences=True, seed=0):
    options = dict(num_layers=num_layers, bidirectional=bidirectional,
                   output=output, return_sequences=return_sequences,
                   dtype=dtype, seed=seed)
    if kind.startswith("RNN"):
        options["nonlinearity"] = "relu" if kind == "RNN-relu" else "tanh"
    cls = getattr(crnn, kind.split("-")[0])
    return cls(4, 5, None if output is None else 3, **options)


def batch(dtype="float32"):
    rng = np.random.default_rng(1)
    return rng.standard_normal((3, 6, 4)).astype(dtype), np.array([6, 2, 4])


def assert_same_model(a, b):
    assert type(a) is type(b)
    assert repr(a) == repr(b)
    for name in inspect.signature(type(a).__init__).parameters:
        if name != "self":
            assert getattr(a, name) == getattr(b, name), name
    assert sorted(a.params) == sorted(b.params)
    for name, value in a.params.items():
        assert b.params[name].dtype == value.dtype
        assert b.params[name].flags.c_contiguous
        np.testing.assert_array_equal(b.params[name], value, err_msg=name)
    X, lengths = batch(a.dtype)
    np.testing.assert_array_equal(a.forward(X, lengths), b.forward(X, lengths))


def perturb(model):
    """Give the model weights its seed does not produce (as after training)."""
    rng = np.random.default_rng(99)
    for value in model.params.values():
        value += rng.standard_normal(value.shape).astype(value.dtype) * 0.1


def leftovers(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp"))


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_save_load_identical(tmp_path, kind, dtype, shape):
    model = make_model(kind, dtype, *shape)
    perturb(model)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = crnn.load(path)
    assert_same_model(model, loaded)
    assert leftovers(tmp_path) == []


def test_save_uses_the_exact_path_and_str_paths(tmp_path):
    model = make_model("LSTM")
    path = str(tmp_path / "weights")          # no suffix added
    model.save(path)
    assert os.listdir(tmp_path) == ["weights"]
    assert_same_model(model, crnn.load(path))


def test_save_replaces_an_existing_file(tmp_path):
    path = tmp_path / "model.npz"
    make_model("RNN", seed=1).save(path)
    newer = make_model("GRU", "float64", seed=2)
    newer.save(path)
    assert_same_model(newer, crnn.load(path))
    assert leftovers(tmp_path) == []


def test_loaded_model_is_independent(tmp_path):
    model = make_model("LSTM")
    model.save(tmp_path / "m")
    loaded = crnn.load(tmp_path / "m")
    loaded.params["U0"][...] = 0
    assert np.any(model.params["U0"] != 0)


def test_header_has_every_constructor_argument(tmp_path):
    model = make_model("RNN-relu", "float64", 2, True, "linear", False, seed=7)
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as archive:
        header = json.loads(archive["crnn_header"].tobytes().decode("utf-8"))
    assert header["format"] == "crnn"
    assert header["format_version"] == crnn.io.FORMAT_VERSION
    assert header["crnn_version"] == crnn.__version__
    assert header["kind"] == "RNN"
    assert header["dtype"] == "float64"
    expected = set(inspect.signature(crnn.RNN.__init__).parameters) - {"self"}
    assert set(header["config"]) == expected
    assert header["config"]["nonlinearity"] == "relu"
    assert header["config"]["seed"] == 7
    assert header["params"]["U1"] == [5, 10]


def test_nan_weights_round_trip(tmp_path):
    # a diverged model is saved and loaded as it is, for inspection
    model = make_model("LSTM", "float64")
    model.params["W0"][0, 0] = np.nan
    model.save(tmp_path / "m")
    assert np.isnan(crnn.load(tmp_path / "m").params["W0"][0, 0])


def test_subclass_saves_as_its_crnn_class(tmp_path):
    class MyLSTM(crnn.LSTM):
        pass

    model = MyLSTM(3, 4, 2, seed=0)
    model.save(tmp_path / "m")
    loaded = crnn.load(tmp_path / "m")
    assert type(loaded) is crnn.LSTM
    np.testing.assert_array_equal(loaded.params["U0"], model.params["U0"])


def test_save_refuses_other_objects(tmp_path):
    with pytest.raises(TypeError, match="crnn.RNN, crnn.LSTM or crnn.GRU"):
        crnn.io.save(object(), tmp_path / "m")
    assert os.listdir(tmp_path) == []


def test_save_into_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        make_model("RNN").save(tmp_path / "missing" / "m.npz")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        crnn.load(tmp_path / "nothing.npz")


# ---------------------------------------------------------------- bad files
_unpickled = []


def _record_unpickling():
    _unpickled.append(True)
    return "boom"


class _Boom:
    """Unpickling this calls _record_unpickling: a stand-in for code a
    malicious file would run."""

    def __reduce__(self):
        return (_record_unpickling, ())


def _saved_bytes(tmp_path):
    path = tmp_path / "good.npz"
    make_model("LSTM").save(path)
    return path.read_bytes()


def _rewrite(tmp_path, change_header=None, change_arrays=None):
    """A copy of a good file with its header and/or arrays changed."""
    good = tmp_path / "good.npz"
    make_model("LSTM").save(good)
    with np.load(good, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    header = json.loads(arrays["crnn_header"].tobytes().decode("utf-8"))
    if change_header:
        change_header(header)
    arrays["crnn_header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    if change_arrays:
        change_arrays(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


def _bad_file(tmp_path, kind):
    path = tmp_path / "bad.npz"
    good = _saved_bytes(tmp_path)
    if kind == "truncated-tail":
        path.write_bytes(good[:-1])
    elif kind.startswith("truncated"):
        fraction = float(kind.split("-")[1])
        path.write_bytes(good[:int(len(good) * fraction)])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "random-after-zip-magic":
        path.write_bytes(b"PK\x03\x04" + np.random.default_rng(0).bytes(4096))
    elif kind == "flipped-byte":
        # one byte in the middle of U0's stored data (not in a zip header
        # field that zipfile ignores): the member's CRC no longer matches
        with zipfile.ZipFile(stdlib_io.BytesIO(good)) as archive:
            info = archive.getinfo("params/U0.npy")
        name_length, extra_length = struct.unpack_from("<HH", good, info.header_offset + 26)
        start = info.header_offset + 30 + name_length + extra_length
        data = bytearray(good)
        data[start + info.file_size // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif kind == "foreign-npz":
        np.savez(path, weights=np.ones((3, 3)), bias=np.zeros(3))
    elif kind == "compressed-foreign-npz":
        np.savez_compressed(path, weights=np.ones((3, 3)))
    elif kind == "single-npy":
        with open(path, "wb") as file:
            np.save(file, np.ones(3))
    elif kind == "pickle-of-model":
        path.write_bytes(pickle.dumps(make_model("LSTM")))
    elif kind == "pickle-header":
        np.savez(path, crnn_header=np.array([_Boom()], dtype=object))
    elif kind == "pickle-param":
        path = _rewrite(tmp_path, change_arrays=lambda a: a.__setitem__(
            "params/V", np.array([_Boom()], dtype=object)))
    elif kind == "newer-format":
        path = _rewrite(tmp_path, change_header=lambda h: h.update(
            format_version=crnn.io.FORMAT_VERSION + 1, crnn_version="99.0"))
    elif kind == "header-not-json":
        path = _rewrite(tmp_path, change_arrays=lambda a: a.__setitem__(
            "crnn_header", np.frombuffer(b"{not json", np.uint8)))
    elif kind == "header-not-crnn":
        path = _rewrite(tmp_path, change_header=lambda h: h.update(format="other"))
    elif kind == "unknown-kind":
        path = _rewrite(tmp_path, change_header=lambda h: h.update(kind="Transformer"))
    elif kind == "unknown-argument":
        path = _rewrite(tmp_path, change_header=lambda h: h["config"].update(zoneout=0.5))
    elif kind == "invalid-argument":
        path = _rewrite(tmp_path, change_header=lambda h: h["config"].update(hidden_size=-1))
    elif kind == "missing-param":
        path = _rewrite(tmp_path, change_arrays=lambda a: a.pop("params/W0"))
    elif kind == "wrong-shape":
        path = _rewrite(tmp_path, change_arrays=lambda a: a.__setitem__(
            "params/W0", np.zeros((3, 3), np.float32)))
    elif kind == "wrong-dtype":
        path = _rewrite(tmp_path, change_arrays=lambda a: a.__setitem__(
            "params/W0", a["params/W0"].astype(np.float64)))
    elif kind == "integer-param":
        path = _rewrite(tmp_path, change_arrays=lambda a: a.__setitem__(
            "params/W0", a["params/W0"].astype(np.int32)))
    else:
        raise AssertionError(kind)
    return path


BAD_FILES = {
    "truncated-0.0": "empty",
    "truncated-0.001": "not an .npz archive",  # cut inside the zip magic
    "truncated-0.3": "truncated or corrupt",
    "truncated-0.7": "truncated or corrupt",
    "truncated-tail": "truncated or corrupt",
    "empty": "empty",
    "random-bytes": "not an .npz archive",
    "random-after-zip-magic": "truncated or corrupt",
    "flipped-byte": "truncated or corrupt",
    "foreign-npz": "not a crnn file",
    "compressed-foreign-npz": "not a crnn file",
    "single-npy": "single .npy array",
    "pickle-of-model": "not an .npz archive",
    "pickle-header": "pickled",
    "pickle-param": "pickled",
    "newer-format": "format version 2",
    "header-not-json": "not valid JSON",
    "header-not-crnn": "does not describe a crnn file",
    "unknown-kind": "unknown kind 'Transformer'",
    "unknown-argument": "does not know",
    "invalid-argument": "settings are invalid",
    "missing-param": "parameters",
    "wrong-shape": "parameter 'W0'",
    "wrong-dtype": "parameter 'W0'",
    "integer-param": "parameter 'W0'",
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
@pytest.mark.parametrize("reader", ["load", "load_checkpoint"])
def test_bad_files_raise_value_error(tmp_path, kind, reader):
    path = _bad_file(tmp_path, kind)
    _unpickled.clear()
    with pytest.raises(ValueError) as error:
        getattr(crnn.io, reader)(path)
    message = str(error.value)
    assert str(path) in message, message
    assert BAD_FILES[kind] in message, message
    assert _unpickled == [], "loading ran code from the file"


def test_newer_format_message_says_upgrade(tmp_path):
    path = _bad_file(tmp_path, "newer-format")
    with pytest.raises(ValueError, match="written by crnn 99.0.*upgrade crnn"):
        crnn.load(path)


def test_directory_is_an_os_error(tmp_path):
    with pytest.raises(OSError):
        crnn.load(tmp_path)


# ---------------------------------------------------------------- interrupted saves
class Interrupted(Exception):
    pass


def _half_write_then_fail(error):
    """A replacement for np.savez that writes half of the real archive to the
    open file, then raises `error` (a crash in the middle of writing)."""
    real_savez = np.savez

    def savez(file, *args, **arrays):
        buffer = stdlib_io.BytesIO()
        real_savez(buffer, *args, **arrays)
        data = buffer.getvalue()
        file.write(data[:len(data) // 2])
        file.flush()
        raise error

    return savez


@pytest.mark.parametrize("error", [Interrupted("disk on fire"), KeyboardInterrupt()],
                         ids=["exception", "KeyboardInterrupt"])
def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch, error):
    path = tmp_path / "model.npz"
    old = make_model("GRU", seed=1)
    old.save(path)
    before = path.read_bytes()
    monkeypatch.setattr(np, "savez", _half_write_then_fail(error))
    with pytest.raises(type(error)):
        make_model("LSTM", seed=2).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert_same_model(old, crnn.load(path))
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]


def test_interrupted_first_save_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(np, "savez", _half_write_then_fail(Interrupted()))
    with pytest.raises(Interrupted):
        make_model("RNN").save(tmp_path / "model.npz")
    assert os.listdir(tmp_path) == []


def test_failed_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    make_model("RNN", seed=1).save(path)
    before = path.read_bytes()

    def failing_replace(source, destination):
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        make_model("RNN", seed=2).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]


def test_interrupted_checkpoint_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    crnn.io.save_checkpoint(path, make_model("LSTM"), {"step": 1}, epoch=1)
    before = path.read_bytes()
    monkeypatch.setattr(np, "savez", _half_write_then_fail(Interrupted()))
    with pytest.raises(Interrupted):
        crnn.io.save_checkpoint(path, make_model("LSTM"), {"step": 2}, epoch=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert crnn.io.load_checkpoint(path)["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]


@pytest.mark.skipif(os.name != "posix", reason="umask is POSIX")
def test_saved_file_permissions_follow_the_umask(tmp_path):
    umask = os.umask(0o022)
    try:
        make_model("RNN").save(tmp_path / "m")
    finally:
        os.umask(umask)
    assert (os.stat(tmp_path / "m").st_mode & 0o777) == 0o644


# ---------------------------------------------------------------- checkpoints
def adam_like_state(dtype=np.float32):
    rng = np.random.default_rng(3)
    model = make_model("LSTM", dtype)
    return {
        "name": "adam",
        "lr": 1e-3,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "step": np.int64(120),
        "scale": np.float32(0.5),
        "amsgrad": False,
        "schedule": None,
        "m": {k: rng.standard_normal(v.shape).astype(dtype) for k, v in model.params.items()},
        "v": {k: rng.random(v.shape).astype(dtype) for k, v in model.params.items()},
        "history": [1.5, float("inf"), float("nan")],
        3: "int keys survive",
    }


def assert_same_tree(a, b, where="state"):
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_same_tree(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{where}[{i}]")
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and np.shape(a) == np.shape(b), where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), where
    else:
        assert a == b, where


@pytest.mark.parametrize("dtype", DTYPES)
def test_checkpoint_round_trip(tmp_path, dtype):
    model = make_model("GRU", dtype, 2, True)
    perturb(model)
    state = adam_like_state(np.dtype(dtype))
    extra = {"history": {"loss": [2.0, 1.0]}, "rng": np.random.default_rng(5).bit_generator.state}
    path = tmp_path / "ckpt.npz"
    crnn.io.save_checkpoint(path, model, state, epoch=7, extra=extra)
    checkpoint = crnn.io.load_checkpoint(path)
    assert set(checkpoint) == {"model", "optimizer_state", "epoch", "extra"}
    assert_same_model(model, checkpoint["model"])
    assert_same_tree(state, checkpoint["optimizer_state"])
    assert checkpoint["epoch"] == 7
    assert_same_tree(extra, checkpoint["extra"])
    # the restored RNG state continues the same stream
    rng = np.random.default_rng()
    rng.bit_generator.state = checkpoint["extra"]["rng"]
    assert rng.random() == np.random.default_rng(5).random()
    # crnn.load reads a checkpoint's model
    assert_same_model(model, crnn.load(path))
    assert leftovers(tmp_path) == []


def test_checkpoint_defaults_and_model_files(tmp_path):
    model = make_model("RNN")
    crnn.io.save_checkpoint(tmp_path / "c", model)
    checkpoint = crnn.io.load_checkpoint(tmp_path / "c")
    assert checkpoint["optimizer_state"] is None
    assert checkpoint["epoch"] is None and checkpoint["extra"] is None
    model.save(tmp_path / "m")
    checkpoint = crnn.io.load_checkpoint(tmp_path / "m")
    assert_same_model(model, checkpoint["model"])
    assert checkpoint["optimizer_state"] is None and checkpoint["epoch"] is None


@pytest.mark.parametrize("state, match", [
    ({"f": lambda: 0}, r"optimizer_state\['f'\] is a function"),
    ({"s": {1, 2}}, "is a set"),
    ({(1, 2): 0}, "key"),
    ({"o": np.array([object()], dtype=object)}, "dtype object"),
])
def test_checkpoint_refuses_unsavable_state(tmp_path, state, match):
    with pytest.raises(TypeError, match=match):
        crnn.io.save_checkpoint(tmp_path / "c", make_model("RNN"), state)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("epoch", [1.5, "3", True])
def test_checkpoint_refuses_bad_epoch(tmp_path, epoch):
    with pytest.raises(TypeError, match="epoch"):
        crnn.io.save_checkpoint(tmp_path / "c", make_model("RNN"), epoch=epoch)


def test_checkpoint_with_broken_state_reference(tmp_path):
    path = tmp_path / "c.npz"
    crnn.io.save_checkpoint(path, make_model("RNN"), {"m": np.ones(3)}, epoch=1)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    header = json.loads(arrays["crnn_header"].tobytes())
    del arrays[header["checkpoint"]["optimizer_state"]["dict"][0][1]["array"]]
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="missing"):
        crnn.io.load_checkpoint(path)
    crnn.load(path)   # the model itself is intact


# ---------------------------------------------------------------- pickling
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES[:2], ids=str)
def test_pickle_and_deepcopy_identical(kind, dtype, shape):
    model = make_model(kind, dtype, *shape)
    perturb(model)
    X, lengths = batch(dtype)
    model.forward(X, lengths)    # a used workspace is not carried over
    for clone in (pickle.loads(pickle.dumps(model)),
                  pickle.loads(pickle.dumps(model, protocol=2)),
                  copy.deepcopy(model)):
        assert_same_model(model, clone)
        assert clone._workspace is not model._workspace
        clone.params["W0"][...] = 0         # independent arrays
        assert np.any(model.params["W0"] != 0)


def test_pickle_does_not_contain_the_workspace():
    model = make_model("LSTM")
    model.forward(*batch())
    assert "_workspace" not in model.__getstate__()
    assert "_lock" not in model.__getstate__()


def test_models_cross_process_boundaries():
    model = make_model("LSTM", "float64", 2, True)
    perturb(model)
    X, lengths = batch("float64")
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        remote = pool.submit(model.forward, X, lengths).result(timeout=120)
    np.testing.assert_array_equal(remote, model.forward(X, lengths))


def test_import_crnn_loads_neither_torch_nor_onnx():
    code = ("import sys, crnn; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]"
