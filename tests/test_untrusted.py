"""Untrusted files and inconsistent state (issue 21).

- Hostile files: each refused with a ValueError, within 1 s, by a process
  whose address space is limited to what it already uses plus the file's
  size plus 300 MB (``RLIMIT_AS``; Linux): refusing a file costs time and
  memory in proportion to its real contents, never to what its header
  claims.  Run in a subprocess, so a crash or a MemoryError is a failure.
- Read-only settings, a checked ``__setstate__``, and the guard at the door:
  states a Python user can reach (private attributes included) give a
  result or a ValueError/TypeError/AttributeError, never a crash (also run
  in a subprocess).
"""
import json
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import crnn
import crnn.io

ERR = (ValueError, TypeError)
LIMIT_HEADROOM = 300 << 20


# ---------------------------------------------------------------- hostile files
def _arrays_of(path):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    return arrays, json.loads(arrays["crnn_header"].tobytes().decode("utf-8"))


def _with_header(arrays, header):
    arrays = dict(arrays)
    arrays["crnn_header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    return arrays


def _npy_bytes(array):
    import io
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _write_zip(path, members, compression=zipfile.ZIP_STORED):
    """A zip of (name, bytes) members, in order, duplicates allowed."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # "Duplicate name"
        with zipfile.ZipFile(path, "w", compression) as archive:
            for name, data in members:
                archive.writestr(name, data)


def _zip_bomb(path, good_arrays, gigabytes=1):
    """params/W0.npy: a valid .npy header for `gigabytes` GB of float64
    zeros, deflated into a few MB; the other members are the good file's."""
    count = (gigabytes << 30) // 8
    header = _npy_bytes(np.zeros(0))[:-0 or None]
    import io
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f8", "fortran_order": False, "shape": (count,)})
    header = np.lib.format.magic(1, 0) + buffer.getvalue()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for key, value in good_arrays.items():
            if key != "params/W0":
                archive.writestr(key + ".npy", _npy_bytes(value))
        with archive.open("params/W0.npy", "w", force_zip64=True) as member:
            member.write(header)
            block = bytes(1 << 20)
            for _ in range(count * 8 >> 20):
                member.write(block)


def _hostile_files(folder):
    """{name: (path, reader)} of hostile files made from a good LSTM(4, 8, 3)."""
    good = os.path.join(folder, "good.npz")
    crnn.LSTM(4, 8, 3, seed=0).save(good)
    checkpoint = os.path.join(folder, "checkpoint.npz")
    crnn.io.save_checkpoint(checkpoint, crnn.LSTM(4, 8, 3, seed=0),
                            {"m": np.ones(3)}, epoch=1, extra={"e": np.zeros(4)})
    arrays, header = _arrays_of(good)
    files = {}

    def add(name, make, reader="load"):
        path = os.path.join(folder, name + ".npz")
        make(path)
        files[name] = (path, reader)

    def claimed(path, listing=False):
        h = json.loads(json.dumps(header))
        h["config"]["hidden_size"] = 20000
        if listing:
            h["params"] = {k: [20000 * 4 if v[0] == 32 else v[0]] + v[1:] for k, v in h["params"].items()}
        np.savez(path, **_with_header(arrays, h))

    add("claimed-sizes", claimed)
    add("claimed-sizes-and-listing", lambda p: claimed(p, listing=True))
    add("claimed-layers", lambda p: np.savez(p, **_with_header(
        arrays, {**header, "config": {**header["config"], "num_layers": 10**6}})))
    add("zip-bomb", lambda p: _zip_bomb(p, arrays))
    add("nested-json", lambda p: np.savez(p, **{**arrays, "crnn_header": np.frombuffer(
        b"[" * 200000 + b"]" * 200000, np.uint8)}))
    add("deep-config", lambda p: np.savez(p, **{**arrays, "crnn_header": np.frombuffer(
        json.dumps(header).replace('"dropout"', '"x"').encode()[:-1]
        + b', "deep": ' + b"[" * 100000 + b"]" * 100000 + b"}", np.uint8)}))
    add("huge-json", lambda p: np.savez(p, **{**arrays, "crnn_header": np.frombuffer(
        json.dumps({**header, "pad": "x" * (16 << 20)}).encode(), np.uint8)}))
    add("duplicate-members", lambda p: _write_zip(
        p, [(k + ".npy", _npy_bytes(v)) for k, v in arrays.items()]
        + [("params/W0.npy", _npy_bytes(np.zeros((1, 1), np.float32)))]))
    add("dotdot-member", lambda p: _write_zip(
        p, [(k + ".npy", _npy_bytes(v)) for k, v in arrays.items()]
        + [("../../etc/passwd.npy", _npy_bytes(np.zeros(1)))]))
    add("absolute-member", lambda p: _write_zip(
        p, [("/" + k + ".npy", _npy_bytes(v)) for k, v in arrays.items()]))
    add("nan-in-listed-shape", lambda p: np.savez(p, **_with_header(
        arrays, {**header, "params": {**header["params"], "W0": [float("nan"), 8]}})))
    add("nan-in-config", lambda p: np.savez(p, **_with_header(
        arrays, {**header, "config": {**header["config"], "hidden_size": float("nan")}})))
    add("npy-header-claims-more", lambda p: _write_zip(
        p, [(k + ".npy", _npy_bytes(v) if k != "params/W0" else
             _npy_bytes(np.zeros((32, 8), np.float32))[:128].replace(b"(32, 8)", b"(9999999, 8)"))
            for k, v in arrays.items()]))

    c_arrays, c_header = _arrays_of(checkpoint)
    state_key = c_header["checkpoint"]["extra"]["dict"][0][1]["array"]

    def state_bomb(path):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            for key, value in c_arrays.items():
                if key != state_key:
                    archive.writestr(key + ".npy", _npy_bytes(value))
            archive.writestr(state_key + ".npy", _npy_bytes(np.zeros(50 << 20, np.uint8)))

    add("checkpoint-extra-bomb", state_bomb, "load_checkpoint")
    add("checkpoint-state-claims-more", lambda p: _write_zip(
        p, [(k + ".npy", _npy_bytes(v) if k != state_key else
             _npy_bytes(np.zeros(4))[:128].replace(b"(4,)", b"(99999999,)"))
            for k, v in c_arrays.items()]), "load_checkpoint")
    return good, files


_LIMITED_LOADER = textwrap.dedent("""
    import json, resource, sys, time
    import crnn, crnn.io

    def vm_bytes():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024

    jobs = json.loads(sys.argv[1])
    results = {}
    for name, (path, reader, size) in jobs.items():
        limit = vm_bytes() + size + %d
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
        start = time.perf_counter()
        try:
            getattr(crnn.io, reader)(path)
            outcome, message = "loaded", ""
        except BaseException as error:
            outcome, message = type(error).__name__, str(error)
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        results[name] = [outcome, message, time.perf_counter() - start]
    print(json.dumps(results))
""" % LIMIT_HEADROOM)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return _hostile_files(str(tmp_path_factory.mktemp("hostile")))


def _load_limited(jobs):
    arguments = {name: [path, reader, os.path.getsize(path)]
                 for name, (path, reader) in jobs.items()}
    result = subprocess.run([sys.executable, "-c", _LIMITED_LOADER, json.dumps(arguments)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc")
def test_hostile_files_are_refused_cheaply(hostile):
    good, files = hostile
    results = _load_limited({"good": (good, "load"), **files})
    assert results["good"][0] == "loaded", results["good"]
    for name, (outcome, message, seconds) in results.items():
        if name == "good":
            continue
        assert outcome == "ValueError", (name, outcome, message)
        assert files[name][0] in message, (name, message)
        assert seconds < 1.0, (name, seconds)


def test_hostile_file_messages_say_what_is_wrong(hostile):
    _, files = hostile
    expected = {
        "claimed-sizes": "parameter 'U0'",
        "claimed-sizes-and-listing": "parameter 'U0' is float32 of shape (32, 4), expected "
                                     "float32 of shape (80000, 4)",
        "claimed-layers": "imply 3000002 parameters",
        "zip-bomb": "claims",
        "nested-json": "nested too deeply",
        "deep-config": "nested too deeply",
        "huge-json": "more than the",
        "duplicate-members": "twice",
        "dotdot-member": "plain relative names",
        "absolute-member": "plain relative names",
        "nan-in-listed-shape": "does not match the header's shape",
        "nan-in-config": "settings are invalid",
        "npy-header-claims-more": "member holds",
        "checkpoint-extra-bomb": "claims",
        "checkpoint-state-claims-more": "member holds",
    }
    assert set(expected) == set(files)
    for name, (path, reader) in files.items():
        with pytest.raises(ValueError) as error:
            getattr(crnn.io, reader)(path)
        assert expected[name] in str(error.value), (name, str(error.value))


def test_loading_does_not_initialise_randomly(tmp_path, monkeypatch):
    """Only the one-unit probe that checks the settings is initialised."""
    model = crnn.GRU(4, 64, 3, num_layers=2, seed=0)
    model.save(tmp_path / "m")
    real, drawn = crnn.models.RecurrentModel._initial_params, []

    def counting(self, rng):
        params = real(self, rng)
        drawn.append(sum(value.size for value in params.values()))
        return params

    monkeypatch.setattr(crnn.models.RecurrentModel, "_initial_params", counting)
    loaded = crnn.load(tmp_path / "m")
    assert sum(drawn) < 100 < sum(value.size for value in model.params.values())
    for name, value in model.params.items():
        np.testing.assert_array_equal(loaded.params[name], value)


def test_a_file_without_reset_after_is_a_reset_after_gru(tmp_path):
    """Files from before GRU(reset_after=...) load as reset_after=True."""
    crnn.GRU(4, 8, 3, seed=0).save(tmp_path / "m")
    arrays, header = _arrays_of(tmp_path / "m")
    header["config"].pop("reset_after", None)
    np.savez(tmp_path / "old.npz", **_with_header(arrays, header))
    loaded = crnn.load(tmp_path / "old.npz")
    assert getattr(loaded, "reset_after", True) is True
    assert "bn0" in loaded.params


# ---------------------------------------------------------------- read-only settings
MODELS = {"RNN": lambda: crnn.RNN(4, 8, 3, seed=0),
          "LSTM": lambda: crnn.LSTM(4, 8, 3, seed=0),
          "GRU": lambda: crnn.GRU(4, 8, 3, seed=0)}
SETTINGS = ["input_size", "hidden_size", "output_size", "num_layers", "bidirectional",
            "output", "return_sequences", "dtype"]


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("name", SETTINGS)
def test_settings_are_read_only(kind, name):
    model = MODELS[kind]()
    X = np.random.default_rng(0).normal(size=(2, 5, 4))
    before = model.forward(X)
    value = getattr(model, name)
    with pytest.raises(AttributeError) as error:
        setattr(model, name, 4096)
    message = str(error.value)
    assert name in message and "4096" in message, message
    assert f"crnn.{kind}(" in message and "set_params" in message, message
    with pytest.raises(AttributeError):
        delattr(model, name)
    assert getattr(model, name) == value
    np.testing.assert_array_equal(model.forward(X), before)


def test_nonlinearity_is_read_only_and_other_attributes_are_not():
    model = crnn.RNN(4, 8, 3, seed=0)
    with pytest.raises(AttributeError, match="nonlinearity"):
        model.nonlinearity = "relu"
    model.seed = 5               # not a setting of the built model
    model.note = "mine"          # users' own attributes
    assert (model.seed, model.note) == (5, "mine")


# ---------------------------------------------------------------- __setstate__
def _state(kind="LSTM", **changes):
    state = MODELS[kind]().__getstate__()
    state["_params"] = dict(state["_params"])
    for key, value in changes.items():
        if key in state["_params"]:
            state["_params"][key] = value
        else:
            state[key] = value
    return state


def _restore(kind, state):
    model = getattr(crnn, kind).__new__(getattr(crnn, kind))
    model.__setstate__(state)
    return model


@pytest.mark.parametrize("changes,error,needle", [
    ({"W0": np.zeros((1, 1), np.float32)}, ValueError, "(32, 8)"),
    ({"W0": np.zeros((4, 4), np.float32)}, ValueError, "(4, 4)"),
    ({"W0": np.zeros((32, 8), np.float64)}, ValueError, "float64"),
    ({"W0": np.zeros((32, 8), np.float32).tolist()}, TypeError, "list"),
    ({"hidden_size": 4096}, ValueError, "(16384, 4)"),
    ({"hidden_size": -1}, ValueError, "hidden_size"),
    ({"hidden_size": 8.0}, TypeError, "hidden_size"),
    ({"num_layers": 2}, ValueError, "imply 8 parameters"),
    ({"dtype": "float16"}, ValueError, "float16"),
    ({"output": "sigmoid"}, ValueError, "sigmoid"),
    ({"output": None}, ValueError, "output_size"),
    ({"bidirectional": "yes"}, TypeError, "bidirectional"),
    ({"_params": None}, TypeError, "dict"),
    ({"extra_param": np.zeros(3, np.float32)}, ValueError, "unexpected"),
])
def test_pickled_state_is_checked(changes, error, needle):
    state = _state(**changes)
    if "extra_param" in changes:
        state.pop("extra_param")
        state["_params"]["extra_param"] = changes["extra_param"]
    with pytest.raises(error) as raised:
        _restore("LSTM", state)
    assert needle in str(raised.value), str(raised.value)


def test_pickled_state_missing_a_setting_or_not_a_dict():
    state = _state()
    del state["hidden_size"]
    with pytest.raises(ValueError, match="hidden_size"):
        _restore("LSTM", state)
    with pytest.raises(TypeError, match="dict"):
        _restore("LSTM", [("hidden_size", 8)])


def test_unpickling_a_tampered_model_refuses_it():
    model = crnn.LSTM(4, 2048, 3, seed=0)
    model._params["W0"] = np.zeros((1, 1), np.float32)
    data = pickle.dumps(model)
    with pytest.raises(ValueError, match="W0"):
        pickle.loads(data)


def test_a_state_without_reset_after_restores_a_reset_after_gru():
    state = _state("GRU")
    state.pop("reset_after", None)
    model = _restore("GRU", state)
    assert getattr(model, "reset_after", True) is True


# ---------------------------------------------------------------- the door
_STATE_SCENARIOS = textwrap.dedent("""
    import json, pickle
    import numpy as np
    import crnn

    X = np.random.default_rng(0).normal(size=(2, 5, 4))
    y = np.zeros((2, 5), dtype=np.int64)

    def tamper(name):
        m = crnn.LSTM(4, 8, 3, seed=0)
        m.forward(X)                       # the door is built
        if name == "dict-hidden-size":
            m.__dict__["hidden_size"] = 4096
        elif name == "dict-input-size":
            m.__dict__["input_size"] = 40
        elif name == "object-setattr-layers":
            object.__setattr__(m, "num_layers", 3)
        elif name == "dict-output-size":
            m.__dict__["output_size"] = 300
        elif name == "params-V-replaced":
            m._params["V"] = np.zeros((1, 1), np.float32)
        elif name == "params-dict-replaced":
            m._params = {k: np.zeros((1, 1), np.float32) for k in m._params}
            m._driver_cache = None
        elif name == "cache-replaced":
            m._driver_cache = (["U0"], [(np.zeros((1, 1), np.float32),) * 3], 1)
        elif name == "cache-lane-replaced":
            m._driver_layout()[1][0] = (np.zeros((1, 1), np.float32),) * 3
            m.__dict__.pop("_door")
        elif name == "in-place-shape":
            m._params["U0"].shape = (1, 128)
        elif name == "in-place-dtype":
            m._params["W0"].dtype = np.float64
        elif name == "fresh-model-in-place-shape":
            m = crnn.LSTM(4, 8, 3, seed=0)
            m._params["U0"].shape = (1, 128)
        elif name == "fresh-model-in-place-dtype":
            m = crnn.LSTM(4, 8, 3, seed=0)
            m._params["V"].dtype = np.float64
        return m

    names = ["dict-hidden-size", "dict-input-size", "object-setattr-layers",
             "dict-output-size", "params-V-replaced", "params-dict-replaced",
             "cache-replaced", "cache-lane-replaced", "in-place-shape",
             "in-place-dtype", "fresh-model-in-place-shape", "fresh-model-in-place-dtype"]
    results = {}
    for name in names:
        outcomes = []
        for call in ("forward", "loss_and_grad", "stream"):
            m = tamper(name)
            try:
                if call == "forward":
                    m.forward(X)
                elif call == "loss_and_grad":
                    m.loss_and_grad(X, y)
                else:
                    m.stream(1).step(X[0, 0])
                outcomes.append("result")
            except (ValueError, TypeError, AttributeError) as error:
                outcomes.append(type(error).__name__)
        results[name] = outcomes
    print(json.dumps(results))
""")


def test_tampered_models_give_a_result_or_an_error_never_a_crash():
    result = subprocess.run([sys.executable, "-c", _STATE_SCENARIOS],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    results = json.loads(result.stdout.strip().splitlines()[-1])
    # settings changed behind the read-only check: refused
    for name in ("dict-hidden-size", "dict-input-size", "object-setattr-layers",
                 "dict-output-size", "params-V-replaced", "params-dict-replaced",
                 "cache-replaced", "fresh-model-in-place-shape",
                 "fresh-model-in-place-dtype"):
        assert results[name][:2] == ["ValueError", "ValueError"], (name, results[name])
    assert results["params-V-replaced"][2] == "ValueError"
    # changes the door's own views do not see: results from the checked arrays
    for name in ("in-place-shape", "in-place-dtype"):
        assert results[name][:2] == ["result", "result"], (name, results[name])


def test_the_door_hands_over_checked_views_of_the_models_arrays():
    model = crnn.LSTM(4, 8, 3, seed=0)
    X = np.random.default_rng(0).normal(size=(2, 5, 4))
    before = model.forward(X)
    lanes, V, c = model._door.views
    assert lanes[0][0] is not model._params["U0"]
    assert np.shares_memory(lanes[0][0], model._params["U0"])
    model.set_params({k: v * 0.5 for k, v in model.params.items()})   # writes are seen
    assert not np.array_equal(model.forward(X), before)


def test_a_stream_keeps_its_checked_arrays():
    model = crnn.GRU(4, 8, 3, seed=0)
    stream = model.stream(1)
    x = np.ones(4)
    first = stream.step(x)
    model._params["W0"] = np.zeros((1, 1), np.float32)       # swapped
    with pytest.raises(ValueError):                             # numpy: still referenced
        model._params["U0"].resize((1000, 1000))
    stream.reset()
    np.testing.assert_array_equal(stream.step(x), first)


def test_pickled_arrays_in_another_layout_become_arrays_of_their_own():
    """A pickled state's array of the right shape and dtype that arrives
    strided, read-only or unaligned (pickle protocol 5's out-of-band
    buffers, as Dask sends models) is copied into the kernels' layout, not
    refused; the copy holds the same values."""
    import pickle
    model = crnn.LSTM(4, 8, 3, seed=0)
    X = np.random.default_rng(0).normal(size=(2, 5, 4))
    expected = model.forward(X)
    state = _state(W0=np.repeat(model.params["W0"], 2, axis=1)[:, ::2])
    assert not state["_params"]["W0"].flags.c_contiguous
    restored = _restore("LSTM", state)
    W0 = restored.params["W0"]
    assert W0.flags.c_contiguous and W0.flags.aligned and W0.flags.writeable
    np.testing.assert_array_equal(restored.forward(X), expected)
    # out-of-band buffers: read-only views of bytes, possibly unaligned
    buffers = []
    data = pickle.dumps(model, protocol=5, buffer_callback=buffers.append)
    raw = [bytes(1) + bytes(b.raw()) for b in buffers]       # shift by one byte
    views = [memoryview(r)[1:] for r in raw]
    clone = pickle.loads(data, buffers=views)
    assert all(a.flags.writeable and a.flags.aligned for a in clone.params.values())
    np.testing.assert_array_equal(clone.forward(X), expected)
