"""crnn's files on disk: models (``model.save`` / ``crnn.load``) and training
checkpoints (``save_checkpoint`` / ``load_checkpoint``).

One format for both: a numpy ``.npz`` archive holding the arrays plus one
entry, ``crnn_header``, the UTF-8 bytes of a JSON document that says what the
archive is (format name and version, model kind, every constructor argument,
dtype, the crnn version that wrote it, and the name and shape of every array).
A checkpoint is a model file whose header also describes an optimizer state,
an epoch and free-form extra data, so ``crnn.load`` reads a checkpoint's model
too.

Safety rules:

- Writes are atomic (crnn._files.atomic_write): an interrupted save leaves
  the old file (or no file) at ``path``, never half of a new one, and
  removes its temporary file.
- Reading never unpickles, and checks before it allocates: the archive's
  members and every array's .npy header (crnn._archive), then the header's
  settings and the parameter shapes they imply (crnn._state), and only then
  reads the arrays and builds the model around them, without random
  initialisation.  Refusing a file costs time and memory in proportion to
  its real contents, never to what its header claims.  Every problem with
  the file's contents (truncated, corrupt, hostile, not a crnn file, a newer
  format, arrays that do not match the header) is a ``ValueError`` naming
  the file and the problem.  A missing file stays FileNotFoundError.
"""
import inspect
import json
import math
import numbers
import os

import numpy as np

from . import _archive, _registry, _state
from ._files import atomic_write
from ._version import __version__

FORMAT_NAME = "crnn"
FORMAT_VERSION = 1
_HEADER_KEY = "crnn_header"
_PARAM_PREFIX = "params/"
_STATE_PREFIX = "state/"    # optimizer state and extra data arrays

__all__ = ["FORMAT_VERSION", "load", "load_checkpoint", "save", "save_checkpoint"]


# ---------------------------------------------------------------- model kinds
def _model_kind(model):
    """The crnn class a model is saved as (the nearest one in its MRO),
    from the table of model kinds."""
    return _registry.kind_of(model).class_name


def _json_value(value, name):
    """A constructor argument as a JSON value (numpy scalars and dtypes
    become Python ones)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.dtype):
        return str(value)
    raise TypeError(
        f"cannot save constructor argument {name}={value!r} "
        f"({type(value).__name__}); only None, bool, int, float and str are stored")


def model_config(model):
    """Every constructor argument of `model`, as JSON values, read from the
    attributes the constructor stores them in."""
    kind = _model_kind(model)
    signature = inspect.signature(_registry.model_class(kind).__init__)
    config = {}
    for name, parameter in signature.parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL,
                                                parameter.VAR_KEYWORD):
            continue
        if not hasattr(model, name):
            raise TypeError(
                f"cannot save {kind}: constructor argument {name!r} is not kept "
                f"as an attribute of the model")
        config[name] = _json_value(getattr(model, name), name)
    return kind, config


# ---------------------------------------------------------------- writing
def _encode_header(header):
    text = json.dumps(header, sort_keys=True, allow_nan=True)
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _write(path, model, contents):
    """Write `model` and the optional checkpoint `contents` (a dict of
    already-encoded trees, with their arrays) to `path`."""
    kind, config = model_config(model)
    params = model.params
    arrays = {}
    for name, value in params.items():
        arrays[_PARAM_PREFIX + name] = np.asarray(value)
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "crnn_version": __version__,
        "kind": kind,
        "config": config,
        "dtype": str(model.dtype),
        "params": {name: list(value.shape) for name, value in params.items()},
    }
    if contents is not None:
        state_arrays, trees = contents
        header["checkpoint"] = trees
        arrays.update(state_arrays)
    arrays[_HEADER_KEY] = _encode_header(header)
    atomic_write(path, lambda file: np.savez(file, **arrays))


def save(model, path):
    """Write a model to a file (what ``model.save(path)`` does).

    The file is a numpy ``.npz`` archive: the parameters plus a JSON header
    with everything needed to rebuild the model.  `load` gives it back with
    identical parameters and outputs.  The write is atomic: on any failure,
    Ctrl-C included, the previous file at `path`, if any, is left as it was
    and no temporary file remains.

    Parameters
    ----------
    model : crnn.RNN, crnn.LSTM or crnn.GRU
        The model (a subclass is saved as its crnn class).
    path : str or os.PathLike
        The file to write, exactly that name: no suffix is added.

    Raises
    ------
    TypeError
        `model` is not a crnn model.
    OSError
        The file cannot be written.
    """
    _write(path, model, None)


# ---------------------------------------------------------------- state trees
# An optimizer state dict (nested dicts, lists and tuples of numpy arrays and
# scalars) is stored as a JSON tree in the header plus its arrays in the
# archive.  Every node is a one-key dict naming its type, so a user's dict
# can never be mistaken for a node.

class _TreeEncoder:
    def __init__(self, prefix):
        self.prefix = prefix
        self.arrays = {}

    def _array(self, value, where):
        if value.dtype.kind not in "biufc" or value.dtype.hasobject:
            raise TypeError(
                f"{where} is an array of dtype {value.dtype}; only boolean and "
                f"numeric arrays can be saved")
        key = f"{_STATE_PREFIX}{self.prefix}{len(self.arrays)}"
        self.arrays[key] = np.asarray(value)
        return key

    def encode(self, value, where):
        if value is None or isinstance(value, (bool, str)):
            return {"value": value}
        if isinstance(value, np.ndarray):
            return {"array": self._array(value, where)}
        if isinstance(value, np.generic):   # numpy scalar: keeps its dtype
            return {"scalar": self._array(np.asarray(value), where)}
        if isinstance(value, numbers.Integral):
            return {"value": int(value)}
        if isinstance(value, float):
            if math.isfinite(value):
                return {"value": value}
            return {"float": repr(value)}    # nan, inf, -inf: not JSON
        if isinstance(value, dict):
            items = []
            for key, item in value.items():
                if isinstance(key, bool) or not isinstance(key, (str, int)):
                    raise TypeError(
                        f"{where} has a key {key!r} of type {type(key).__name__}; "
                        f"only str and int keys can be saved")
                items.append([key, self.encode(item, f"{where}[{key!r}]")])
            return {"dict": items}
        if isinstance(value, (list, tuple)):
            kind = "list" if isinstance(value, list) else "tuple"
            return {kind: [self.encode(item, f"{where}[{i}]")
                           for i, item in enumerate(value)]}
        raise TypeError(
            f"{where} is a {type(value).__name__}; checkpoints hold numpy arrays, "
            f"numbers, strings, None, and dicts, lists and tuples of them")


def _decode_tree(node, archive, where):
    """Inverse of _TreeEncoder.encode; `where` is used in error messages."""
    if not isinstance(node, dict) or len(node) != 1:
        raise _Corrupt(f"its {where} is not a valid state tree")
    (kind, value), = node.items()
    if kind == "value":
        return value
    if kind == "float":
        if value not in ("nan", "inf", "-inf"):
            raise _Corrupt(f"its {where} holds an invalid float {value!r}")
        return float(value)
    if kind in ("array", "scalar"):
        if not isinstance(value, str) or not value.startswith(_STATE_PREFIX):
            raise _Corrupt(f"its {where} names an invalid array {value!r}")
        array = _read_array(archive, value)
        return array[()] if kind == "scalar" else array
    if kind == "dict":
        if not isinstance(value, list) or not all(
                isinstance(item, list) and len(item) == 2 for item in value):
            raise _Corrupt(f"its {where} is not a valid state tree")
        return {key: _decode_tree(item, archive, f"{where}[{key!r}]")
                for key, item in value}
    if kind in ("list", "tuple"):
        if not isinstance(value, list):
            raise _Corrupt(f"its {where} is not a valid state tree")
        items = [_decode_tree(item, archive, f"{where}[{i}]")
                 for i, item in enumerate(value)]
        return items if kind == "list" else tuple(items)
    raise _Corrupt(f"its {where} has an unknown node type {kind!r}")


def save_checkpoint(path, model, optimizer_state=None, epoch=None, extra=None):
    """Write a training checkpoint: a model and what resuming needs.

    The same format and guarantees as `save`; `load_checkpoint` gives
    everything back, and `crnn.load` reads just the model.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write, exactly that name.
    model : crnn.RNN, crnn.LSTM or crnn.GRU
        The model.
    optimizer_state : dict, optional
        An optimizer's ``state_dict()``.
    epoch : int, optional
        The number of completed epochs.
    extra : optional
        Anything built of dicts (str or int keys), lists, tuples, numpy
        arrays and scalars, Python numbers, strings, booleans and None: a
        history, settings, a vocabulary.

    Raises
    ------
    TypeError
        A value of another kind in `optimizer_state` or `extra`, or an
        `epoch` that is not an int.
    OSError
        The file cannot be written.

    Examples
    --------
    >>> import os, tempfile
    >>> from crnn.io import save_checkpoint, load_checkpoint
    >>> path = os.path.join(tempfile.mkdtemp(), "run.npz")
    >>> model = crnn.RNN(3, 4, 2, seed=0)
    >>> save_checkpoint(path, model, epoch=3, extra={"vocabulary": "abc"})
    >>> checkpoint = load_checkpoint(path)
    >>> checkpoint["epoch"], checkpoint["extra"], checkpoint["optimizer_state"]
    (3, {'vocabulary': 'abc'}, None)
    """
    if epoch is not None and (isinstance(epoch, (bool, np.bool_))
                              or not isinstance(epoch, numbers.Integral)):
        raise TypeError(f"epoch must be an int or None, got {epoch!r}")
    encoder = _TreeEncoder("")
    trees = {
        "optimizer_state": encoder.encode(optimizer_state, "optimizer_state"),
        "epoch": None if epoch is None else int(epoch),
        "extra": encoder.encode(extra, "extra"),
    }
    _write(path, model, (encoder.arrays, trees))


# ---------------------------------------------------------------- reading
# A file is checked before anything of the size it claims is allocated:
# the archive's members and every array's .npy header (_archive), the
# header's settings and the parameter shapes they imply (_state), and only
# then are the arrays read and the model built from them, without random
# initialisation (through the checks of RecurrentModel.__setstate__).
_Corrupt = _archive.Corrupt
MAX_HEADER_BYTES = 8 << 20     # the JSON header; a checkpoint's is a few KB


def _read_array(archive, key):
    if key not in archive.files:
        raise _Corrupt(f"its header lists an array {key!r} that is missing")
    return archive.read(key)


def _parse_json(raw):
    try:
        return json.loads(raw.tobytes().decode("utf-8"))
    except RecursionError:
        raise _Corrupt("its header is not valid JSON (nested too deeply)") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise _Corrupt(f"its header is not valid JSON ({error})") from None


def _read_header(archive):
    if _HEADER_KEY not in archive.files:
        raise _Corrupt("it is an .npz archive but not a crnn file (no "
                       f"{_HEADER_KEY!r} entry)")
    shape, dtype = archive.describe(_HEADER_KEY)
    if dtype != np.uint8 or len(shape) != 1:
        raise _Corrupt("its header is not UTF-8 JSON bytes")
    if shape[0] > MAX_HEADER_BYTES:
        raise _Corrupt(f"its header is {shape[0]} bytes, more than the "
                       f"{MAX_HEADER_BYTES} a crnn header may have")
    header = _parse_json(_read_array(archive, _HEADER_KEY))
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise _Corrupt("its header does not describe a crnn file")
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _Corrupt(f"its header has an invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise _Corrupt(
            f"it uses file format version {version} (written by crnn "
            f"{header.get('crnn_version', '?')}); this crnn ({__version__}) "
            f"reads format version {FORMAT_VERSION} and older: upgrade crnn")
    for key, kind in (("kind", str), ("config", dict), ("dtype", str),
                      ("params", dict)):
        if not isinstance(header.get(key), kind):
            raise _Corrupt(f"its header has no valid {key!r} entry")
    return header


def _model_settings(header, archive):
    """(class, settings, parameter shapes) of the header's model, checked;
    nothing of the sizes they claim is allocated."""
    kind = header["kind"]
    cls = _registry.model_class(kind)
    if cls is None:
        known = sorted({row.class_name for row in _registry.KINDS})
        raise _Corrupt(f"it holds a model of unknown kind {kind!r} "
                       f"(this crnn knows {known})")
    config = header["config"]
    accepted = {name for name in inspect.signature(cls.__init__).parameters
                if name != "self"}
    unknown = sorted(set(config) - accepted)
    if unknown:
        raise _Corrupt(
            f"its {kind} has constructor arguments {unknown} this crnn "
            f"({__version__}) does not know; it was written by crnn "
            f"{header.get('crnn_version', '?')}")
    try:
        stored = sum(key.startswith(_PARAM_PREFIX) for key in archive.files)
        settings, shapes = _state.check_settings(cls, config, "its settings", stored)
    except (TypeError, ValueError) as error:
        raise _Corrupt(f"its model settings are invalid ({error})") from None
    if str(settings["dtype"]) != header["dtype"]:
        raise _Corrupt(f"its dtype {header['dtype']!r} does not match its "
                       f"settings' dtype {str(settings['dtype'])!r}")
    return cls, settings, shapes


def _check_param_headers(header, archive, shapes, dtype):
    """Every parameter's listing in the header and .npy header in the
    archive against the shapes the settings imply, before reading any."""
    kind = header["kind"]
    stored = {key[len(_PARAM_PREFIX):] for key in archive.files
              if key.startswith(_PARAM_PREFIX)}
    listed = set(header["params"])
    if stored != set(shapes) or listed != set(shapes):
        raise _Corrupt(
            f"its parameters {sorted(stored)} are not those of its {kind} "
            f"settings, {sorted(shapes)}")
    for name, shape in shapes.items():
        if header["params"][name] != list(shape):
            raise _Corrupt(f"its parameter {name!r} does not match the header's "
                           f"shape {header['params'][name]!r}")
        found, found_dtype = archive.describe(_PARAM_PREFIX + name)
        # kind and size, not dtype equality: an archive written on a machine
        # of the other byte order holds the same numbers
        if (found != shape or found_dtype.kind != "f"
                or found_dtype.itemsize != dtype.itemsize):
            raise _Corrupt(
                f"its parameter {name!r} is {found_dtype} of shape {found}, "
                f"expected {dtype} of shape {shape}")


def _build_model(header, archive):
    cls, settings, shapes = _model_settings(header, archive)
    _check_param_headers(header, archive, shapes, settings["dtype"])
    # Only now that every array's header has been checked: read them, and
    # build the model around them (a saved model whose weights went NaN
    # loads as it was).
    params = {name: np.ascontiguousarray(_read_array(archive, _PARAM_PREFIX + name),
                                         dtype=settings["dtype"])
              for name in shapes}
    model = cls.__new__(cls)
    try:
        model.__setstate__({**settings, "_params": params})
    except (TypeError, ValueError) as error:
        raise _Corrupt(f"its model cannot be restored ({error})") from None
    return model


def _open(path, read):
    """Open `path` as an .npz, check its members (_archive.Archive) and
    call ``read(archive)``, turning every problem with the contents into one
    ValueError."""
    shown = os.fspath(path)
    try:
        with open(shown, "rb") as file:
            # Check the zip magic first for a clearer message.
            magic = file.read(4)
            if magic != b"PK\x03\x04":
                kind = ("empty" if not magic else
                        "a single .npy array, not an .npz archive"
                        if magic == b"\x93NUM" else "not an .npz archive")
                raise _Corrupt(f"it is {kind}")
            try:
                archive = _archive.Archive(file)
            except (FileNotFoundError, PermissionError, IsADirectoryError):
                raise
            except _archive.READ_ERRORS as error:
                raise _Corrupt(f"it is truncated or corrupt ({error})") from None
            with archive:
                return read(archive)
    except _Corrupt as problem:
        raise ValueError(f"cannot load {shown!r}: {problem}") from None


def load(path):
    """Read a model that ``model.save`` (or `save_checkpoint`) wrote.

    Loading never unpickles, so it runs no code from the file.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    crnn.RNN, crnn.LSTM or crnn.GRU
        The model, with the saved class, settings and weights.

    Raises
    ------
    FileNotFoundError
        There is no such file.
    ValueError
        The file is not a valid crnn file (empty, truncated, corrupt, not
        an archive, another program's archive, a newer format, arrays that
        do not match the header); the message names the file and the
        problem.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "lstm.npz")
    >>> crnn.LSTM(3, 4, seed=0).save(path)
    >>> crnn.load(path)
    LSTM(3, 4, 3, num_layers=1, bidirectional=False, output='softmax', return_sequences=True, dtype='float32')
    """
    return _open(path, lambda archive: _build_model(_read_header(archive), archive))


def load_checkpoint(path):
    """Read a checkpoint that `save_checkpoint` wrote.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint to read, as `save_checkpoint` wrote it.

    Returns
    -------
    dict
        ``"model"``, ``"optimizer_state"``, ``"epoch"`` and ``"extra"``,
        each None when it was not saved (a plain model file gives None for
        all but the model).  Tuples, dicts, numpy arrays and numpy scalars
        come back with the types they were saved with.

    Raises
    ------
    FileNotFoundError
        There is no such file.
    ValueError
        The file is not a valid crnn file.
    """
    def read(archive):
        header = _read_header(archive)
        model = _build_model(header, archive)
        trees = header.get("checkpoint")
        if trees is None:
            return {"model": model, "optimizer_state": None, "epoch": None,
                    "extra": None}
        if not isinstance(trees, dict) or set(trees) != {
                "optimizer_state", "epoch", "extra"}:
            raise _Corrupt("its checkpoint entry is not valid")
        epoch = trees["epoch"]
        if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int)):
            raise _Corrupt(f"its epoch {epoch!r} is not an int")
        return {
            "model": model,
            "optimizer_state": _decode_tree(trees["optimizer_state"], archive,
                                            "optimizer state"),
            "epoch": epoch,
            "extra": _decode_tree(trees["extra"], archive, "extra data"),
        }
    return _open(path, read)
