"""crnn.from_onnx on ONNX files that someone else wrote.

External data is read only from regular files inside the model file's own
folder, within their real sizes; a tensor's dims may not claim more data
than its file (or external range) holds.  Every refusal is a ValueError
naming the tensor, the location and why, and an audit hook records every
file that Python opens during the call (crnn reads external data through
os.open, which the hook sees): nothing outside the model's folder is ever
opened.  The files are built here with onnx's helpers."""
import contextlib
import os
import sys

import numpy as np
import pytest

import crnn

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, external_data_helper, helper  # noqa: E402

N, T, D, H, K = 3, 5, 4, 6, 3
_OPENED = []          # paths opened while `opened_files` records


def _record_opens(event, args):
    if _OPENED and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED[-1].append(os.path.realpath(os.fsdecode(args[0])))


sys.addaudithook(_record_opens)


@contextlib.contextmanager
def opened_files():
    """The real paths of the files Python opens inside the block."""
    _OPENED.append([])
    try:
        yield _OPENED[-1]
    finally:
        _OPENED.pop()


def assert_opened_only_inside(opened, folder):
    folder = os.path.realpath(folder)
    assert opened, "the audit hook recorded no open at all"
    outside = [path for path in opened if os.path.commonpath([folder, path]) != folder]
    assert outside == [], outside


def model_and_files(tmp_path, location="weights.bin", one_file=True):
    """An LSTM, its ONNX file with all weights in it, and the same graph
    with every tensor's data in external file(s) at `location`, in
    tmp_path/model/."""
    model = crnn.LSTM(D, H, K, num_layers=2, bidirectional=True, peepholes=True,
                      dtype="float64", seed=3)
    folder = tmp_path / "model"
    folder.mkdir()
    inline = folder / "inline.onnx"
    model.to_onnx(inline)
    proto = onnx.load(inline)
    os.makedirs(folder / os.path.dirname(location), exist_ok=True)
    external_data_helper.convert_model_to_external_data(
        proto, all_tensors_to_one_file=one_file, location=location, size_threshold=0)
    path = folder / "external.onnx"
    onnx.save(proto, path)
    return model, inline, path


def tampered(path, tensor_prefix, **external):
    """The file at `path` with the external-data entries of its tensor named
    `tensor_prefix`* set to `external` (None deletes an entry); the tensor's
    name."""
    proto = onnx.load(path, load_external_data=False)
    tensor = next(t for t in proto.graph.initializer if t.name.startswith(tensor_prefix))
    entries = {entry.key: entry.value for entry in tensor.external_data}
    entries.update(external)
    del tensor.external_data[:]
    for key, value in entries.items():
        if value is not None:
            tensor.external_data.add(key=key, value=str(value))
    path.write_bytes(proto.SerializeToString())
    return tensor.name


def refused(path, *fragments):
    """from_onnx(path) raises a ValueError whose message holds every
    fragment, having opened nothing outside the model's folder."""
    with opened_files() as opened, pytest.raises(ValueError) as error:
        crnn.from_onnx(path)
    for fragment in fragments:
        assert fragment in str(error.value), (fragment, str(error.value))
    assert_opened_only_inside(opened, os.path.dirname(path))
    return str(error.value)


@pytest.mark.parametrize("location,one_file", [
    ("weights.bin", True), ("data/weights.bin", True), ("weights.bin", False)])
def test_external_data_beside_the_model_loads_like_the_inline_model(
        tmp_path, location, one_file):
    model, inline, path = model_and_files(tmp_path, location, one_file)
    assert os.path.getsize(path) < os.path.getsize(inline) / 2   # really external
    with opened_files() as opened:
        back = crnn.from_onnx(path)
    assert_opened_only_inside(opened, path.parent)
    # the check of the check: the hook sees crnn open the external data
    data_files = {os.path.realpath(p) for p in path.parent.rglob("*")
                  if p.is_file() and p.suffix != ".onnx"}
    assert data_files and data_files <= set(opened), (data_files, opened)
    again = crnn.from_onnx(inline)
    assert repr(back) == repr(again) == repr(model)
    for name, array in model.params.items():
        np.testing.assert_array_equal(back.params[name], array, err_msg=name)
        np.testing.assert_array_equal(again.params[name], array, err_msg=name)
    X = np.random.default_rng(0).normal(size=(N, T, D))
    np.testing.assert_array_equal(back.forward(X), model.forward(X))


def test_external_data_is_found_beside_the_model_not_the_working_directory(
        tmp_path, monkeypatch):
    model, _, path = model_and_files(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "weights.bin").write_bytes(b"\0" * os.path.getsize(
        path.parent / "weights.bin"))                  # a decoy of the same size
    monkeypatch.chdir(elsewhere)
    back = crnn.from_onnx(os.path.join("..", "model", "external.onnx"))
    np.testing.assert_array_equal(back.params["W0"], model.params["W0"])


def outside_copy(tmp_path):
    """tmp_path/outside.bin: a copy of the weights, outside the model's
    folder, so that a refusal is for where it is, not for what it holds."""
    outside = tmp_path / "outside.bin"
    outside.write_bytes((tmp_path / "model" / "weights.bin").read_bytes())
    return outside


def test_a_location_up_and_out_of_the_folder_is_refused(tmp_path):
    _, _, path = model_and_files(tmp_path)
    outside_copy(tmp_path)
    name = tampered(path, "R0", location="../outside.bin")
    refused(path, repr(name), "'../outside.bin'", "outside the model's folder",
            os.path.realpath(tmp_path / "outside.bin"))
    name = tampered(path, "W0", location="sub/../../outside.bin")
    refused(path, repr(name), "outside the model's folder")


def test_an_absolute_location_is_refused(tmp_path):
    _, _, path = model_and_files(tmp_path)
    outside = outside_copy(tmp_path)
    name = tampered(path, "R0", location=str(outside))
    refused(path, repr(name), repr(str(outside)), "an absolute path")
    # even one that names a file inside the folder
    name = tampered(path, "R0", location=str(path.parent / "weights.bin"))
    refused(path, repr(name), "an absolute path")


@pytest.mark.parametrize("location", ["/etc/passwd", "../../../../../../../../etc/passwd",
                                      "../" * 40 + "etc/passwd"])
def test_etc_passwd_is_never_read(tmp_path, location):
    _, _, path = model_and_files(tmp_path)
    name = tampered(path, "B0", location=location, offset=0, length=None)
    message = refused(path, repr(name), repr(location))
    assert "absolute path" in message or "outside the model's folder" in message


def test_a_symlink_out_of_the_folder_is_refused(tmp_path):
    model, _, path = model_and_files(tmp_path)
    outside = outside_copy(tmp_path)
    try:
        os.symlink(outside, path.parent / "link.bin")
        os.symlink(tmp_path, path.parent / "up")
    except (OSError, NotImplementedError):
        pytest.skip("this file system has no symbolic links")
    name = tampered(path, "R0", location="link.bin")
    refused(path, repr(name), "'link.bin'", "outside the model's folder",
            os.path.realpath(outside))
    name = tampered(path, "R0", location="up/outside.bin")
    refused(path, repr(name), "outside the model's folder")
    # a symlink that stays inside the folder is followed
    os.symlink(path.parent / "weights.bin", path.parent / "inside.bin")
    tampered(path, "R0", location="inside.bin")
    back = crnn.from_onnx(path)
    np.testing.assert_array_equal(back.params["W0"], model.params["W0"])


def test_offsets_and_lengths_past_the_end_are_refused(tmp_path):
    _, _, path = model_and_files(tmp_path)
    size = os.path.getsize(path.parent / "weights.bin")
    name = tampered(path, "R0", offset=size + 8)
    refused(path, repr(name), f"offset {size + 8}", f"past the end of that file "
                                                    f"({size} bytes)")
    tampered(path, "R0", offset=size - 16)
    refused(path, repr(name), "past the end of that file")
    tampered(path, "R0", offset=0, length=size + 1)
    refused(path, repr(name), f"length {size + 1}", "past the end")


@pytest.mark.parametrize("field,value", [
    ("offset", "-8"), ("offset", "1e3"), ("offset", " 8"), ("length", "-1"),
    ("length", "0x10"), ("length", "\u0661\u0662")])
def test_offsets_and_lengths_must_be_non_negative_integers(tmp_path, field, value):
    _, _, path = model_and_files(tmp_path)
    name = tampered(path, "R0", **{field: value})
    refused(path, repr(name), f"{field}={value!r}", "non-negative integer")


def test_missing_or_odd_external_files_are_refused(tmp_path):
    _, _, path = model_and_files(tmp_path)
    name = tampered(path, "R0", location="nothing.bin")
    refused(path, repr(name), "'nothing.bin'", "cannot be read")
    (path.parent / "folder").mkdir()
    tampered(path, "R0", location="folder")
    refused(path, repr(name), "not a regular file")
    tampered(path, "R0", location=".")
    refused(path, repr(name), "not a regular file")
    tampered(path, "R0", location=None)
    refused(path, repr(name), "names no location")


def set_dims(path, tensor_prefix, dims):
    proto = onnx.load(path, load_external_data=False)
    tensor = next(t for t in proto.graph.initializer if t.name.startswith(tensor_prefix))
    del tensor.dims[:]
    tensor.dims.extend(dims)
    path.write_bytes(proto.SerializeToString())
    return tensor.name


def test_dims_that_claim_more_than_the_external_range_are_refused(tmp_path):
    _, _, path = model_and_files(tmp_path)
    proto = onnx.load(path, load_external_data=False)
    R0 = next(t for t in proto.graph.initializer if t.name.startswith("R0"))
    length = int(next(e.value for e in R0.external_data if e.key == "length"))
    name = set_dims(path, "R0", [2, 4 * H, 10 ** 9])
    refused(path, repr(name), f"dims [2, {4 * H}, 1000000000] (DOUBLE)",
            f"need {2 * 4 * H * 10 ** 9 * 8} bytes", f"holds {length} bytes")
    # without a length, the rest of the file is all it may take
    size = os.path.getsize(path.parent / "weights.bin")
    tampered(path, "R0", length=None, offset=0)
    refused(path, repr(name), f"holds {size} bytes")


def test_dims_that_claim_more_than_the_model_file_holds_are_refused(tmp_path):
    model, inline, _ = model_and_files(tmp_path)
    name = set_dims(inline, "W0", [2, 4 * H, 2 ** 40])
    refused(inline, repr(name), f"dims [2, {4 * H}, {2 ** 40}]",
            f"need {2 * 4 * H * 2 ** 40 * 8} bytes", f"holds {2 * 4 * H * D * 8} bytes")
    # a typed field (float_data) rather than raw bytes
    proto = onnx.load(inline)
    proto.graph.initializer.append(helper.make_tensor(
        "typed", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0]))
    inline.write_bytes(proto.SerializeToString())
    set_dims(inline, "W0", [2, 4 * H, D])
    set_dims(inline, "typed", [10 ** 12])
    refused(inline, "'typed'", "dims [1000000000000] (FLOAT)",
            "need 1000000000000 elements", "holds 3")


@pytest.mark.parametrize("dims,why", [
    ([-1, 4], "has a negative dim: [-1, 4]"),
    ([2 ** 40, 2 ** 40], "overflows int64"),
    ([2 ** 31, 2 ** 31, 4], "overflows int64")])
def test_absurd_dims_are_refused(tmp_path, dims, why):
    _, inline, path = model_and_files(tmp_path)
    for file in (inline, path):
        name = set_dims(file, "B0", dims)
        refused(file, repr(name), why)


@pytest.mark.parametrize("data_type,name", [(0, "UNDEFINED"), (999, "999")])
def test_unknown_data_types_are_refused(tmp_path, data_type, name):
    _, inline, _ = model_and_files(tmp_path)
    proto = onnx.load(inline)
    odd = proto.graph.initializer.add(name="odd", data_type=data_type, dims=[3],
                                      raw_data=b"abc")
    assert odd.data_type == data_type
    inline.write_bytes(proto.SerializeToString())
    refused(inline, "'odd'", f"has the data type {name}, which crnn cannot read")


def test_a_constant_nodes_external_data_is_checked_too(tmp_path):
    """The recurrent weights given by a Constant node rather than an
    initializer: the same checks."""
    model, _, path = model_and_files(tmp_path)
    outside_copy(tmp_path)
    proto = onnx.load(path, load_external_data=False)
    R0 = next(t for t in proto.graph.initializer if t.name.startswith("R0"))
    proto.graph.initializer.remove(R0)
    constant = helper.make_node("Constant", [], [R0.name], value=R0)
    proto.graph.node.insert(0, constant)
    path.write_bytes(proto.SerializeToString())
    back = crnn.from_onnx(path)                      # the untampered file loads
    np.testing.assert_array_equal(back.params["W0"], model.params["W0"])
    entry = next(e for e in proto.graph.node[0].attribute[0].t.external_data
                 if e.key == "location")
    entry.value = "../outside.bin"
    path.write_bytes(proto.SerializeToString())
    refused(path, repr(R0.name), "'../outside.bin'", "outside the model's folder")
