"""The table of model kinds: what each crnn model is called in a file, in
PyTorch and in ONNX.  ``io`` (file headers) and ``interop`` (PyTorch, ONNX)
read this table and nothing else to tell kinds apart; ``models`` registers
its classes here.  This module imports nothing of crnn.

A row is one kind.  A class may have several rows told apart by its
settings (``GRU(reset_after=True)`` and ``GRU(reset_after=False)``): a
row's ``settings`` are the values the model's attributes must have, read
with the defaults of ``SETTING_DEFAULTS`` for models and files from before
the setting existed.  Adding a kind is one row here (plus its class,
registered with ``register``).
"""
from dataclasses import dataclass, field

__all__ = ["Kind", "KINDS", "SETTING_DEFAULTS", "kind_of", "kind_named",
           "model_class", "register"]


@dataclass(frozen=True)
class Kind:
    """One model kind.

    name            how messages call it
    class_name      the crnn class (also the "kind" of a file header)
    settings        attribute values that select this row among the class's rows
    recurrent_bias  True when each lane has a ``bn{l}`` bias inside the
                    recurrent product (PyTorch's b_hn, ONNX's Rb of the h gate)
    torch           the torch.nn class name, or None when PyTorch has none
    no_torch        why not, when ``torch`` is None
    onnx_op         the ONNX operator
    onnx_gates      crnn's gate blocks in ONNX's order
    onnx_attributes fixed attributes of the ONNX operator
    """
    name: str
    class_name: str
    settings: dict = field(default_factory=dict)
    recurrent_bias: bool = False
    torch: str = None
    no_torch: str = ""
    onnx_op: str = ""
    onnx_gates: tuple = (0,)
    onnx_attributes: dict = field(default_factory=dict)


# ONNX orders the gate blocks differently from crnn (= PyTorch):
#   LSTM  crnn i, f, a, o   ONNX i, o, f, c (c = crnn's candidate a)
#   GRU   crnn r, z, n      ONNX z, r, h
KINDS = (
    Kind("RNN", "RNN", torch="RNN", onnx_op="RNN", onnx_gates=(0,)),
    Kind("LSTM", "LSTM", {"peepholes": False}, torch="LSTM", onnx_op="LSTM",
         onnx_gates=(0, 3, 1, 2)),
    Kind("LSTM(peepholes=True)", "LSTM", {"peepholes": True},
         no_torch="PyTorch's LSTM has no peephole connections",
         onnx_op="LSTM", onnx_gates=(0, 3, 1, 2)),
    Kind("GRU", "GRU", {"reset_after": True}, recurrent_bias=True, torch="GRU",
         onnx_op="GRU", onnx_gates=(1, 0, 2),
         onnx_attributes={"linear_before_reset": 1}),
    Kind("GRU(reset_after=False)", "GRU", {"reset_after": False},
         no_torch=("PyTorch has no GRU with reset_after=False (its torch.nn.GRU "
                   "applies the reset gate after the recurrent product, "
                   "reset_after=True)"),
         onnx_op="GRU", onnx_gates=(1, 0, 2),
         onnx_attributes={"linear_before_reset": 0}),
)

# The value a setting has when a model or a file does not say (written
# before the setting existed).
SETTING_DEFAULTS = {"reset_after": True, "peepholes": False, "proj_size": 0,
                    "dropout": 0.0, "recurrent_dropout": 0.0,
                    "output_dropout": 0.0, "dropout_first_layer": True}

_classes = {}    # class name -> the registered crnn class


def register(cls):
    """Class decorator: `cls` is the crnn class of the rows named after it."""
    if not any(kind.class_name == cls.__name__ for kind in KINDS):
        raise ValueError(f"no row of the model table names the class {cls.__name__}")
    _classes[cls.__name__] = cls
    return cls


def model_class(class_name):
    """The registered class called `class_name`, or None."""
    return _classes.get(class_name)


def _known():
    names = [f"crnn.{name}" for name in _classes]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)


def _setting(source, name):
    """A setting read from a model (attribute) or a config (dict)."""
    if isinstance(source, dict):
        return source.get(name, SETTING_DEFAULTS.get(name))
    return getattr(source, name, SETTING_DEFAULTS.get(name))


def kind_named(class_name, source):
    """The row of class `class_name` whose settings `source` (a model or a
    config dict) has; None when the class has no row for them."""
    for kind in KINDS:
        if kind.class_name == class_name and all(
                _setting(source, key) == value for key, value in kind.settings.items()):
            return kind
    return None


def kind_of(model):
    """The row of `model`: its nearest registered class along the MRO (a
    subclass of crnn.LSTM is an LSTM), then its settings."""
    for cls in type(model).__mro__:
        if _classes.get(cls.__name__) is cls:
            kind = kind_named(cls.__name__, model)
            if kind is None:
                raise ValueError(f"this {cls.__name__}'s settings match no model kind")
            return kind
    raise TypeError(f"expected a {_known()} model, got {type(model).__name__}")

