"""The models users build: crnn.RNN, crnn.LSTM and crnn.GRU.

Each is a RecurrentModel (``_model``) with its cell: the gate blocks, the
state, the cell's kind in the engine's table, and its own constructor
arguments.  ``_registry`` learns each class here (io and interop read it).
"""
import numbers

import numpy as np

from . import _registry
from ._cells import CellKind
from ._model import RecurrentModel

__all__ = ["RecurrentModel", "RNN", "LSTM", "GRU"]


def _model_doc(intro, examples, setting="", setting_after_bidirectional=False):
    """A model class's docstring: its `intro`, the constructor's parameters
    every model shares (with the class's own `setting` among them) and its
    `examples` (all indented as inside a class)."""
    middle = setting if setting_after_bidirectional else ""
    end = "" if setting_after_bidirectional else setting
    return (intro + _SHARED_PARAMETERS[0] + middle + _SHARED_PARAMETERS[1] + end
            + "\n" + _SHARED_ATTRIBUTES + examples)


_SHARED_PARAMETERS = ("""\
    Parameters
    ----------
    input_size : int
        D, the features of each time step; for token inputs, the size of
        the vocabulary.
    hidden_size : int
        H, the units of every layer's hidden state.
    output_size : int, optional
        K, the outputs of the output layer.  Left at None with an output
        layer, it is `input_size` (a next-token model over its own
        vocabulary).  Must be None when ``output=None``.
    num_layers : int, default 1
        Stacked layers; each layer above the first reads the hidden states
        of the layer below.
    bidirectional : bool, default False
        Give every layer a second direction that reads each sequence
        backwards (within its own length); the two hidden states are
        concatenated, so a layer passes up ``2 * hidden_size`` values.
""",
    """\
    output : {"softmax", "linear", None}, default "softmax"
        The output layer o = V h + c and its loss.  ``"softmax"``: class
        probabilities, trained by cross-entropy.  ``"linear"``: real
        values, trained by squared error ½‖o − y‖².  None: no output layer;
        the outputs are the top layer's hidden states and there is no loss.
    return_sequences : bool, default True
        True: an output, and a target, at every time step (many-to-many).
        False: one per sequence (many-to-one), from the top layer's state at
        the sequence's last real step; with `bidirectional`, concatenated
        with the backward direction's final state (at step 0), as PyTorch's
        ``h_n``.
    dropout : float, default 0
        Probability of dropping each unit of a layer's input x(t), in
        [0, 1).  Like every dropout here it acts only in training
        (``loss_and_grad(..., training=True)``, which `crnn.Trainer`
        uses): one mask per sequence and layer, held for every time step
        (variational dropout), kept units scaled by 1/(1 − p).
    recurrent_dropout : float, default 0
        Probability of dropping each unit of h(t-1) inside the recurrent
        product W h(t-1) (the state carried on is not dropped), in [0, 1).
        ``GRU(reset_after=False)`` drops h(t-1) in all three blocks'
        products, r ⊙ h(t-1) becoming r ⊙ h̃(t-1), as Keras does.
    output_dropout : float, default 0
        Probability of dropping each unit of the top layer's h(t) before
        the output layer, in [0, 1).
    dropout_first_layer : bool, default True
        Whether `dropout` also acts on the first layer's input (the
        model's input).  False drops only the inputs of layers 2 and up,
        as PyTorch's ``dropout`` does (`crnn.from_torch` sets it).
    dtype : {"float32", "float64"} or numpy.dtype, default "float32"
        The dtype of the parameters, of the arithmetic and of every result.
        Inputs of any real dtype are cast to it.
    seed : int, optional
        Seeds the initial weights (uniform on (−1/√H, 1/√H), PyTorch's
        rule, drawn with ``numpy.random.default_rng(seed)``): the same seed
        gives the same weights, in either dtype.  None draws fresh
        randomness.
""")
_SHARED_ATTRIBUTES = """\
    Attributes
    ----------
    params : dict of numpy.ndarray
        The parameter arrays (see `RecurrentModel.params`).
    directions : int
        2 when bidirectional, else 1.
    input_size, hidden_size, output_size, num_layers, bidirectional, output, return_sequences, seed
        The constructor's arguments (`output_size` filled in).
    dropout, recurrent_dropout, output_dropout, dropout_first_layer
        The constructor's dropout settings (floats, and a bool).
    dtype : numpy.dtype
        float32 or float64.

    See Also
    --------
    crnn.Trainer : trains a model.
    crnn.load : reads a model that `save` wrote.

"""


def _check_lstm_options(model_name, peepholes, proj_size):
    """The LSTM-only options of an RNN or GRU: refused unless left at their
    defaults (PyTorch refuses proj_size on its RNN and GRU alike)."""
    if peepholes is not False:
        raise ValueError(f"peepholes must be False for a crnn.{model_name} (only "
                         f"crnn.LSTM has peepholes), got {peepholes!r}")
    if isinstance(proj_size, (bool, np.bool_)) or proj_size != 0:
        raise ValueError(f"proj_size must be 0 for a crnn.{model_name} (only "
                         f"crnn.LSTM has a projection), got {proj_size!r}")


def _check_proj_size(proj_size, hidden_size):
    """proj_size as an int in [0, hidden_size) (PyTorch's rule)."""
    if isinstance(proj_size, (bool, np.bool_)) or not isinstance(proj_size, numbers.Integral):
        raise TypeError(f"proj_size must be an integer, got {proj_size!r}")
    if not (isinstance(hidden_size, numbers.Integral) and 0 <= proj_size < hidden_size):
        raise ValueError(f"proj_size must be in [0, hidden_size) = [0, {hidden_size}) "
                         f"(0: no projection), got {proj_size}")
    return int(proj_size)


_LSTM_ONLY_PARAMETERS = """\
    peepholes, proj_size : False, 0
        crnn.LSTM's options; any other value is a ValueError.
"""


@_registry.register
class RNN(RecurrentModel):
    __doc__ = _model_doc(
        """A vanilla (Elman) recurrent network, with an optional output layer.

    At every time step, each layer computes
    ``h(t) = tanh(U x(t) + W h(t-1) + b)`` (or a rectifier with
    ``nonlinearity="relu"``), and the output layer ``o(t) = V h(t) + c``.
    Forward passes, back-propagation through time and streaming run in
    compiled code; the methods are described on `RecurrentModel`.

""",
        """\
    Examples
    --------
    A many-to-one regressor over sequences of 3 features:

    >>> model = crnn.RNN(3, 16, 1, output="linear", return_sequences=False, seed=0)
    >>> X = np.random.default_rng(0).normal(size=(5, 10, 3))
    >>> model.forward(X).shape
    (5, 1)
    >>> loss, grads = model.loss_and_grad(X, np.zeros(5))
    >>> sorted(grads)
    ['U0', 'V', 'W0', 'b0', 'c']
""",
        """\
    nonlinearity : {"tanh", "relu"}, default "tanh"
        The activation of the hidden state.
""" + _LSTM_ONLY_PARAMETERS, setting_after_bidirectional=True)

    _gate_blocks = 1

    def __init__(self, input_size, hidden_size, output_size=None, *,
                 num_layers=1, bidirectional=False, nonlinearity="tanh",
                 output="softmax", return_sequences=True, dropout=0.0,
                 recurrent_dropout=0.0, output_dropout=0.0,
                 dropout_first_layer=True, dtype="float32", seed=None,
                 peepholes=False, proj_size=0):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        _check_lstm_options("RNN", peepholes, proj_size)
        self.nonlinearity = nonlinearity
        self.peepholes, self.proj_size = False, 0
        super().__init__(input_size, hidden_size, output_size,
                         num_layers=num_layers, bidirectional=bidirectional,
                         output=output, return_sequences=return_sequences,
                         dropout=dropout, recurrent_dropout=recurrent_dropout,
                         output_dropout=output_dropout,
                         dropout_first_layer=dropout_first_layer,
                         dtype=dtype, seed=seed)

    def _cell_kind(self):
        return (CellKind.CELL_RNN_RELU if self.nonlinearity == "relu"
                else CellKind.CELL_RNN_TANH)


@_registry.register
class LSTM(RecurrentModel):
    __doc__ = _model_doc(
        """A long short-term memory network, with an optional output layer.

    Each layer has four gates, stacked in one ``(4H, ·)`` matrix for U and
    one for W in PyTorch's order: input i, forget f, candidate a (PyTorch's
    g) and output o.  It keeps a cell state C besides h:
    ``C(t) = f ⊙ C(t-1) + i ⊙ a`` and ``h(t) = o ⊙ tanh(C(t))``.  States
    (initial, final, a stream's) are pairs ``(h, c)``, each
    ``(num_layers * directions, N, hidden_size)``.  The methods are
    described on `RecurrentModel`.

""",
        """\
    Examples
    --------
    A next-character model over a vocabulary of 10 symbols (token inputs,
    ``output_size`` defaults to ``input_size``):

    >>> model = crnn.LSTM(input_size=10, hidden_size=32, seed=0)
    >>> tokens = np.random.default_rng(0).integers(0, 10, size=(4, 12))
    >>> probabilities, (h, c) = model.forward(tokens, return_state=True)
    >>> probabilities.shape, h.shape, c.shape
    ((4, 12, 10), (1, 4, 32), (1, 4, 32))
    >>> loss, grads = model.loss_and_grad(tokens[:, :-1], tokens[:, 1:])
    >>> grads["W0"].shape
    (128, 32)

    ONNX's peephole LSTM, whose gates also read the cell state:

    >>> model = crnn.LSTM(4, 8, 3, peepholes=True, seed=0)
    >>> model.params["P0"].shape        # rows P_i, P_o, P_f
    (3, 8)

    PyTorch's LSTM with a projection of h to 4 values:

    >>> model = crnn.LSTM(4, 8, 3, proj_size=4, seed=0)
    >>> model.params["W0"].shape, model.params["R0"].shape
    ((32, 4), (4, 8))
""",
        """\
    peepholes : bool, default False
        ONNX's peephole connections: ``i = σ(z_i + P_i ⊙ C(t-1))``,
        ``f = σ(z_f + P_f ⊙ C(t-1))`` and ``o = σ(z_o + P_o ⊙ C(t))``, with
        one more parameter per lane, ``P{l}`` ``(3, hidden_size)``, whose
        rows are P_i, P_o, P_f (ONNX's order).  PyTorch has no such LSTM,
        so ``to_torch`` refuses it.
    proj_size : int, default 0
        PyTorch's projection: with P = ``proj_size`` > 0 (and < H), each
        layer's h is ``h(t) = R (o ⊙ tanh(C(t)))`` with one more parameter
        per lane, ``R{l}`` ``(P, hidden_size)`` (PyTorch's
        ``weight_hr_l{l}``): h has P entries, ``W{l}`` is ``(4H, P)``, the
        layer above and the output layer read ``P * directions`` values,
        and the state's h is ``(num_layers * directions, N, P)`` while C
        stays ``(…, N, hidden_size)``.
""", setting_after_bidirectional=True)

    _gate_blocks = 4
    _cell_state = True
    peepholes = False       # (models pickled before the option existed)
    proj_size = 0

    def __init__(self, input_size, hidden_size, output_size=None, *,
                 num_layers=1, bidirectional=False, peepholes=False, proj_size=0,
                 output="softmax", return_sequences=True, dropout=0.0,
                 recurrent_dropout=0.0, output_dropout=0.0,
                 dropout_first_layer=True, dtype="float32", seed=None):
        if not isinstance(peepholes, (bool, np.bool_)):
            raise TypeError(f"peepholes must be True or False, got {peepholes!r}")
        self.peepholes = bool(peepholes)
        self.proj_size = _check_proj_size(proj_size, hidden_size)
        super().__init__(input_size, hidden_size, output_size,
                         num_layers=num_layers, bidirectional=bidirectional,
                         output=output, return_sequences=return_sequences,
                         dropout=dropout, recurrent_dropout=recurrent_dropout,
                         output_dropout=output_dropout,
                         dropout_first_layer=dropout_first_layer,
                         dtype=dtype, seed=seed)

    @property
    def _state_width(self):
        # h's width: the projection's, or the cell's
        return self.proj_size or self.hidden_size

    @property
    def _peephole_blocks(self):
        # P_i, P_o, P_f: one row of H per gate that reads C
        return 3 if self.peepholes else 0

    def _cell_kind(self):
        return CellKind.CELL_LSTM_PEEPHOLE if self.peepholes else CellKind.CELL_LSTM

    def __repr__(self):
        # the defaults (no peepholes, no projection) are not spelled out
        base = super().__repr__()[:-1]
        if self.peepholes:
            base += ", peepholes=True"
        if self.proj_size:
            base += f", proj_size={self.proj_size}"
        return base + ")"


@_registry.register
class GRU(RecurrentModel):
    __doc__ = _model_doc(
        """A gated recurrent unit network, with an optional output layer.

    Each layer has a reset gate r, an update gate z and a candidate n,
    stacked in one ``(3H, ·)`` matrix for U and one for W in PyTorch's
    order, and ``h(t) = (1 - z) ⊙ n + z ⊙ h(t-1)``.  By default
    (``reset_after=True``) it is PyTorch's GRU:
    ``n = tanh(U_n x + b_n + r ⊙ (W_n h(t-1) + bn))``, where ``bn{l}`` is
    PyTorch's ``b_hn``.  With ``reset_after=False`` it is the original GRU
    of Cho et al. (ONNX's default ``linear_before_reset=0``, Keras's
    ``reset_after=False``): ``n = tanh(U_n x + b_n + W_n (r ⊙ h(t-1)))``,
    without ``bn``; PyTorch has no such GRU, so ``to_torch`` refuses it.
    The methods are described on `RecurrentModel`.

""",
        """\
    Examples
    --------
    >>> model = crnn.GRU(input_size=4, hidden_size=8, output_size=2, seed=0)
    >>> sorted(model.params)
    ['U0', 'V', 'W0', 'b0', 'bn0', 'c']
    >>> model.forward(np.zeros((3, 7, 4))).shape
    (3, 7, 2)
""",
        """\
    reset_after : bool, default True
        Where the reset gate acts: on the recurrent product (True, PyTorch
        and ONNX ``linear_before_reset=1``) or on the previous state before
        it (False).
""" + _LSTM_ONLY_PARAMETERS + "\n")

    _gate_blocks = 3
    reset_after = True      # (models pickled before reset_after existed)

    def __init__(self, input_size, hidden_size, output_size=None, *,
                 num_layers=1, bidirectional=False, reset_after=True,
                 output="softmax", return_sequences=True, dropout=0.0,
                 recurrent_dropout=0.0, output_dropout=0.0,
                 dropout_first_layer=True, dtype="float32", seed=None,
                 peepholes=False, proj_size=0):
        if not isinstance(reset_after, (bool, np.bool_)):
            raise TypeError(f"reset_after must be True or False, got {reset_after!r}")
        _check_lstm_options("GRU", peepholes, proj_size)
        self.reset_after = bool(reset_after)
        self.peepholes, self.proj_size = False, 0
        super().__init__(input_size, hidden_size, output_size,
                         num_layers=num_layers, bidirectional=bidirectional,
                         output=output, return_sequences=return_sequences,
                         dropout=dropout, recurrent_dropout=recurrent_dropout,
                         output_dropout=output_dropout,
                         dropout_first_layer=dropout_first_layer,
                         dtype=dtype, seed=seed)

    @property
    def _recurrent_bias(self):
        # PyTorch's b_hn sits inside r ⊙ (W_n h + bn); the original GRU has none
        return self.reset_after

    def _cell_kind(self):
        return (CellKind.CELL_GRU if self.reset_after
                else CellKind.CELL_GRU_RESET_BEFORE)

    def __repr__(self):
        # the default (PyTorch's GRU) is not spelled out
        base = super().__repr__()
        return base if self.reset_after else base[:-1] + ", reset_after=False)"
