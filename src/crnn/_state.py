"""What a model's state must be before compiled code sees it: its settings
(sizes and options), its parameter arrays, and the door every call passes.

Three users, one set of rules:

- ``models`` (``__setstate__``: a pickled state is checked like a file; the
  read-only settings; the per-call guard, ``Door``);
- ``io`` (``load`` checks a file's settings and array headers against each
  other before it allocates anything, then builds the model through
  ``__setstate__``, without random initialisation).

Every refusal is a ValueError or TypeError naming what was expected and what
was given.  Imports no crnn module that imports this one.
"""
import functools
import inspect
import operator

import numpy as np

from . import _inputs, _registry

__all__ = ["Door", "check_params", "check_settings", "check_state",
           "read_only_message", "settings_names"]

# Settings that are sizes: checked as positive ints, and replaced by 1 in the
# probe model that checks the other settings.
_SIZES = ("input_size", "hidden_size", "num_layers")
# Entries of a model's __dict__ that are rebuilt, never restored.
_TRANSIENT = ("_workspace", "_lock", "_driver_cache", "_door", "_door_network")


# ---------------------------------------------------------------- settings
def registered_class(cls):
    """The crnn class `cls` is (itself or its nearest registered base)."""
    for base in cls.__mro__:
        if _registry.model_class(base.__name__) is base:
            return base
    raise TypeError(f"{cls.__name__} is not a crnn model class")


@functools.lru_cache(maxsize=None)
def settings_names(cls):
    """The settings of a model of class `cls`: its crnn class's constructor
    arguments but the seed (fixed once the model exists, read-only)."""
    signature = inspect.signature(registered_class(cls).__init__)
    return tuple(name for name, parameter in signature.parameters.items()
                 if name not in ("self", "seed")
                 and parameter.kind not in (parameter.VAR_POSITIONAL,
                                            parameter.VAR_KEYWORD))


def read_only_message(model, name, value):
    base = registered_class(type(model))
    return (
        f"{type(model).__name__}.{name} is read-only (it is {getattr(model, name)!r}; "
        f"got {value!r}): a model's sizes and settings are fixed when it is "
        f"built, because its parameter arrays and the compiled code rely on "
        f"them.  For a model with {name}={value!r}, build a new one, e.g. "
        f"crnn.{base.__name__}(..., {name}={value!r}), and copy over the "
        f"parameters that fit with set_params")


def _filled(cls, source, what):
    """`source`'s value of every setting of `cls` (and the seed), with the
    registry's defaults for settings added after a file or pickle was made."""
    signature = inspect.signature(registered_class(cls).__init__).parameters
    settings = {}
    for name in settings_names(cls) + ("seed",):
        if name in source:
            settings[name] = source[name]
        elif name in _registry.SETTING_DEFAULTS or name == "seed":
            settings[name] = signature[name].default if name in signature else None
        else:
            raise ValueError(f"{what} has no {name!r} setting")
    return settings


def check_settings(cls, source, what="the state", available=None):
    """(settings, parameter shapes) for a model of class `cls` with the
    settings in the dict `source`, checked as the constructor checks them.

    Sizes must be positive ints and no parameter may exceed BLAS's 32-bit
    sizes; the other settings are checked by building a one-unit model of
    the same class (a few dozen numbers), so every rule of the constructor
    applies.  With `available` (the number of parameter arrays a file or
    state really holds), settings that imply more arrays are refused before
    the shapes are listed.  Nothing of the size the settings claim is
    allocated."""
    if not isinstance(source, dict):
        raise TypeError(f"{what} must be a dict, got {type(source).__name__}")
    settings = _checked_sizes(_filled(cls, source, what), what)
    # the probe's sizes are 1, but an LSTM's projection needs hidden_size
    # above proj_size (checked against the real one by _checked_sizes)
    probe = registered_class(cls)(**{
        **settings, **dict.fromkeys(_SIZES, 1),
        "hidden_size": settings.get("proj_size", 0) + 1,
        "output_size": None if settings["output_size"] is None else 1})
    for name in settings_names(cls):
        if name not in _SIZES and name != "output_size":
            settings[name] = getattr(probe, name)     # as the constructor stores it
    if available is not None:
        _check_count(probe, settings["num_layers"], available, what)
    return settings, _shapes(cls, settings)


def _checked_sizes(settings, what):
    for name in _SIZES:
        settings[name] = _inputs.check_positive_int(settings[name], name)
    output_size = settings.get("output_size")
    if output_size is not None:
        settings["output_size"] = _inputs.check_positive_int(output_size, "output_size")
    proj_size = settings.get("proj_size", 0)
    if proj_size != 0:      # an LSTM's projection: an int in [1, hidden_size)
        proj_size = settings["proj_size"] = _inputs.check_positive_int(proj_size,
                                                                       "proj_size")
        if proj_size >= settings["hidden_size"]:
            raise ValueError(f"{what} has proj_size={proj_size}; it must be below "
                             f"hidden_size={settings['hidden_size']}")
    if (settings.get("output") is None) != (output_size is None):
        raise ValueError(
            f"{what} has output={settings.get('output')!r} and output_size="
            f"{output_size!r}; output_size is None exactly when output is None")
    return settings


def _check_count(probe, num_layers, available, what):
    """Refuse `num_layers` implying more parameter arrays than `available`
    (from the one-layer `probe`'s count: nothing is listed per layer)."""
    layer_arrays = sum(map(len, probe._lane_keys()))
    implied = num_layers * layer_arrays + len(probe.params) - layer_arrays
    if implied > available:
        raise ValueError(f"{what} imply {implied} parameters (num_layers="
                         f"{num_layers}), it holds {available}")


def _shapes(cls, settings):
    """The model's own _param_shapes for `settings` (on an empty instance),
    each within BLAS's 32-bit sizes."""
    shell = object.__new__(cls)
    shell.__dict__.update(settings)
    shapes = shell._param_shapes()
    for name, shape in shapes.items():
        if int(np.prod(shape, dtype=object)) > _inputs.INT32_MAX:
            raise ValueError(
                f"parameter {name} would have shape {shape}, more elements "
                f"than the 32-bit sizes BLAS takes ({_inputs.INT32_MAX})")
    return shapes


# ---------------------------------------------------------------- arrays
def check_array(array, name, shape, dtype):
    """One parameter array as the kernels read it: an ndarray of exactly
    `dtype` (native byte order) and `shape`, C-contiguous, aligned and
    writeable."""
    if not isinstance(array, np.ndarray) or isinstance(array, np.ma.MaskedArray):
        raise TypeError(
            f"parameter {name!r} must be a numpy array, got {type(array).__name__}")
    if array.dtype != dtype or array.shape != tuple(shape):
        raise ValueError(
            f"parameter {name!r} must be {dtype} of shape {tuple(shape)}, got "
            f"{array.dtype} of shape {array.shape}")
    if not (array.flags.c_contiguous and array.flags.aligned and array.flags.writeable):
        raise ValueError(
            f"parameter {name!r} must be a C-contiguous, aligned, writeable "
            f"array, got one with strides {array.strides}, aligned="
            f"{array.flags.aligned}, writeable={array.flags.writeable}")


def check_params(params, shapes, dtype):
    """A model's parameter dict: exactly the keys of `shapes`, each array
    checked by check_array."""
    if not isinstance(params, dict):
        raise TypeError(f"the parameters must be a dict, got {type(params).__name__}")
    missing, extra = sorted(set(shapes) - set(params)), sorted(set(params) - set(shapes))
    if missing or extra:
        raise ValueError(
            f"the parameters must be exactly {sorted(shapes)}; missing {missing}, "
            f"unexpected {extra}")
    for name, shape in shapes.items():
        check_array(params[name], name, shape, dtype)


def _own_layout(params, dtype):
    """The arrays of a pickled state in the layout the kernels read: one of
    the right dtype that arrived unaligned, read-only or strided (pickle
    protocol 5's out-of-band buffers, as Dask and multiprocessing send
    them; shared memory) becomes a copy of its own.  Shapes and dtypes are
    still checked as they came (check_params)."""
    owned = {}
    for name, array in params.items():
        if (type(array) is np.ndarray and array.dtype == dtype
                and not (array.flags.c_contiguous and array.flags.aligned
                         and array.flags.writeable)):
            array = np.array(array, order="C")
        owned[name] = array
    return owned


def check_state(cls, state):
    """A pickled (or loaded) state of a model of class `cls`, checked: its
    settings (check_settings) and its ``_params`` (check_params).  Returns
    the state to put in the model's ``__dict__``, settings normalised,
    without the entries the model rebuilds."""
    if not isinstance(state, dict):
        raise TypeError(f"the pickled state must be a dict, got {type(state).__name__}")
    params = state.get("_params")
    if not isinstance(params, dict):
        raise TypeError(f"the pickled state's '_params' must be a dict, got "
                        f"{type(params).__name__}")
    settings, shapes = check_settings(cls, state, "the pickled state", len(params))
    params = _own_layout(params, settings["dtype"])
    check_params(params, shapes, settings["dtype"])
    restored = {key: value for key, value in state.items() if key not in _TRANSIENT}
    restored.update(settings)
    restored["_params"] = dict(params)
    return restored


# ---------------------------------------------------------------- the door
# The settings the engine's sizes come from, compared on every call.
DOOR_SETTINGS = ("input_size", "hidden_size", "output_size", "num_layers",
                 "bidirectional", "output", "return_sequences", "dtype")
door_settings_of = operator.attrgetter(*DOOR_SETTINGS)


class Door:
    """The guard before compiled code gets a pointer.

    ``Door(model, lanes, V, c)`` checks in full, against the model's
    settings, every array the model would hand over (check_array: shape,
    dtype, contiguity, alignment; and the lanes' count), then keeps its own
    views of them, ``views = (lanes, V, c)``: those are what compiled code
    gets.  ``Door(model)`` checks the model's ``_params`` first and takes
    the lanes from them (a stream's door).  Nothing else holds these views, so no later change to the
    model's arrays made through Python (``.shape`` or ``.dtype`` set in
    place, a ``_params`` entry or the lane cache replaced) can give
    compiled code a layout that was not checked; writes into the arrays'
    data (set_params, optimizers) are seen, as they share it.

    The per-call part is the model's (``RecurrentModel._check_door``): the
    same lane list and head arrays by identity and the same settings, else
    a new Door, which checks everything again."""

    __slots__ = ("lanes", "V", "c", "settings", "views")

    def __init__(self, model, lanes=None, V=None, c=None):
        settings, shapes = check_settings(type(model), _settings_dict(model), "the model")
        if tuple(settings[name] for name in DOOR_SETTINGS) != door_settings_of(model):
            raise ValueError("the model's settings are not in the form its constructor "
                             "stores them")
        if lanes is None:
            params = model.__dict__.get("_params")
            check_params(params, shapes, settings["dtype"])
            lanes, V, c = model._lanes(), params.get("V"), params.get("c")
        keys = model._lane_keys()
        if not isinstance(lanes, list) or len(lanes) != len(keys):
            raise ValueError(
                f"the model has {len(keys)} lanes (num_layers * directions), its "
                f"lane list has {len(lanes) if isinstance(lanes, list) else lanes!r}")
        views = []
        for lane, lane_keys in zip(lanes, keys):
            if not isinstance(lane, tuple) or len(lane) != len(lane_keys):
                raise ValueError(f"lane {lane_keys} must be a tuple of {len(lane_keys)} arrays")
            for array, key in zip(lane, lane_keys):
                check_array(array, key, shapes[key], settings["dtype"])
            views.append(tuple(array.view() for array in lane))
        head = []
        for array, key in ((V, "V"), (c, "c")):
            if (array is None) != (key not in shapes):
                raise ValueError(f"parameter {key!r} must be "
                                 f"{'present' if key in shapes else 'absent'}")
            if array is not None:
                check_array(array, key, shapes[key], settings["dtype"])
            head.append(None if array is None else array.view())
        self.lanes, self.V, self.c = lanes, V, c
        self.settings = door_settings_of(model)
        self.views = (views, head[0], head[1])


def _settings_dict(model):
    return {name: getattr(model, name) for name in settings_names(type(model)) + ("seed",)
            if hasattr(model, name)}
