"""crnn models in and out of other frameworks: PyTorch (``from_torch``,
``to_torch``) and ONNX (``to_onnx``).

Neither torch nor onnx is a dependency of crnn: each is imported inside the
function that needs it, so ``import crnn`` never loads them.

Weight mapping (the model page of the documentation): crnn keeps one bias per gate, PyTorch two.
Importing folds them, ``b = b_ih + b_hh``; a GRU keeps PyTorch's ``b_hn``
apart (it sits inside ``r ⊙ (W_n h + b_hn)``), so its ``b`` is
``b_ih + b_hh`` for the r and z blocks and ``b_in`` for n, and ``bn = b_hn``.
Exporting puts ``b`` in ``b_ih`` and zeros in ``b_hh`` (a GRU's n block of
``b_hh`` is ``bn``), so crnn → torch → crnn is exact.
"""
import numbers

import warnings

import numpy as np

from . import _inputs, _registry
from ._files import atomic_write
from ._version import __version__

__all__ = ["from_torch", "to_onnx", "to_torch"]


def _import_torch(caller):
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"{caller} needs PyTorch, which is not installed "
            f"(crnn itself does not depend on it): pip install torch") from None
    return torch


def _suffixes(bidirectional):
    return ("", "_reverse") if bidirectional else ("",)


# ---------------------------------------------------------------- PyTorch
def _torch_kind(torch, module):
    """The row of the model table for `module`'s torch.nn class."""
    # LSTM and GRU are not subclasses of nn.RNN; all three of RNNBase.
    for row in _registry.KINDS:
        if row.torch and isinstance(module, getattr(torch.nn, row.torch)):
            return row
    raise TypeError(
        f"from_torch expects a torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU module, "
        f"got {type(module).__module__}.{type(module).__name__}"
        + ("; cells (RNNCell, LSTMCell, GRUCell) are not supported, use the "
           "whole-sequence module" if type(module).__name__.endswith("Cell") else ""))


def _numpy(tensor):
    return tensor.detach().cpu().numpy().copy()


def from_torch(module, linear=None, output="softmax", *, return_sequences=True):
    """The crnn model that computes what a PyTorch recurrent module computes.

    Needs PyTorch, imported only by this call.

    Parameters
    ----------
    module : torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU
        Any ``num_layers``, bidirectional or not, with or without biases,
        float32 or float64 (the crnn model gets its dtype); an LSTM with
        ``proj_size`` > 0 gives a crnn LSTM with that ``proj_size``
        (``weight_hr_l{k}`` is ``R{k}``).
        ``batch_first`` is only a layout flag (crnn is always batch first).
        PyTorch's ``dropout`` (on the outputs of every layer but the last)
        becomes crnn's ``dropout`` with ``dropout_first_layer=False``: on
        the inputs of layers 2 and up, in training only.  crnn's masks are
        variational (one per sequence, held for every step) where
        PyTorch draws one per step.
    linear : torch.nn.Linear, optional
        A head on the top layer's hidden state (``in_features`` =
        ``hidden_size * directions``, or ``proj_size * directions``); it
        becomes crnn's ``V`` and ``c``.
        Without it, the crnn model has no output layer (``output=None``).
    output : {"softmax", "linear"}, default "softmax"
        What the head computes: ``"softmax"`` makes crnn's `forward` return
        probabilities, ``"linear"`` values.
    return_sequences : bool, default True
        The crnn model's setting; PyTorch modules do not carry it.

    Returns
    -------
    crnn.RNN, crnn.LSTM or crnn.GRU
        PyTorch's two biases folded into one (``b = b_ih + b_hh``; for the
        GRU's candidate, ``b = b_in`` and ``bn = b_hn``).

    Raises
    ------
    ImportError
        PyTorch is not installed.
    TypeError, ValueError
        Not a supported module (cells), a head that does not
        fit, parameters that are not float32 or float64, or
        ``output="linear"`` without a head.

    See Also
    --------
    crnn.models.RecurrentModel.to_torch : the other way.
    """
    torch = _import_torch("crnn.from_torch")
    row = _torch_kind(torch, module)
    kind = row.torch
    proj_size = getattr(module, "proj_size", 0)
    if output not in ("softmax", "linear", None):
        raise ValueError(f"output must be 'softmax', 'linear' or None, got {output!r}")
    if linear is None and output == "linear":
        raise ValueError(
            "output='linear' needs the torch.nn.Linear head as `linear`; without "
            "a head, pass output=None (the model's outputs are then the top "
            "layer's h)")
    if linear is not None and output is None:
        raise ValueError(
            "a linear head was given with output=None; pass output='softmax' "
            "or 'linear' to say what the head computes, or leave the head out")
    if linear is None:
        output = None

    dirs = 2 if module.bidirectional else 1
    hidden, layers = module.hidden_size, module.num_layers
    width = proj_size or hidden      # h's, which the head reads
    dtypes = {p.dtype for p in module.parameters()}
    if linear is not None:
        if not isinstance(linear, torch.nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear or None, got "
                            f"{type(linear).__module__}.{type(linear).__name__}")
        if linear.in_features != width * dirs:
            raise ValueError(
                f"the linear head takes {linear.in_features} features, the "
                f"{kind}'s top layer gives {'proj_size' if proj_size else 'hidden_size'}"
                f" * directions = {width} * {dirs} = {width * dirs}")
        head_dtypes = {p.dtype for p in linear.parameters()}
        if head_dtypes and head_dtypes != dtypes:
            raise TypeError(
                f"the linear head's parameters are {sorted(map(str, head_dtypes))}, "
                f"the {kind}'s are {sorted(map(str, dtypes))}; convert one "
                f"(e.g. .double()) so they match")
    names = {torch.float32: "float32", torch.float64: "float64"}
    if len(dtypes) != 1 or next(iter(dtypes)) not in names:
        raise TypeError(
            f"crnn models are float32 or float64; the {kind}'s parameters are "
            f"{sorted(map(str, dtypes))} (convert with .float() or .double())")
    dtype = names[next(iter(dtypes))]

    options = dict(num_layers=layers, bidirectional=bool(module.bidirectional),
                   output=output, return_sequences=return_sequences, dtype=dtype)
    if kind == "RNN":
        options["nonlinearity"] = module.nonlinearity
    if proj_size:
        options["proj_size"] = proj_size
    if module.dropout:
        options.update(dropout=float(module.dropout), dropout_first_layer=False)
    model = _registry.model_class(row.class_name)(
        module.input_size, hidden,
        None if linear is None else linear.out_features, **options)

    gates = model._gate_blocks
    params = {}
    for layer in range(layers):
        for suffix in _suffixes(module.bidirectional):
            torch_suffix = f"_l{layer}{suffix}"
            params[f"U{layer}{suffix}"] = _numpy(getattr(module, "weight_ih" + torch_suffix))
            params[f"W{layer}{suffix}"] = _numpy(getattr(module, "weight_hh" + torch_suffix))
            if module.bias:
                b_ih = _numpy(getattr(module, "bias_ih" + torch_suffix))
                b_hh = _numpy(getattr(module, "bias_hh" + torch_suffix))
            else:
                b_ih = b_hh = np.zeros(gates * hidden, dtype=dtype)
            if row.recurrent_bias:
                # GRU: r, z: b_ih + b_hh; n: b_in alone, b_hn stays inside r ⊙ (·)
                params[f"b{layer}{suffix}"] = np.concatenate(
                    [b_ih[:2 * hidden] + b_hh[:2 * hidden], b_ih[2 * hidden:]])
                params[f"bn{layer}{suffix}"] = b_hh[2 * hidden:].copy()
            else:
                params[f"b{layer}{suffix}"] = b_ih + b_hh
            if proj_size:
                params[f"R{layer}{suffix}"] = _numpy(getattr(module, "weight_hr" + torch_suffix))
    if linear is not None:
        params["V"] = _numpy(linear.weight)
        params["c"] = (_numpy(linear.bias) if linear.bias is not None else
                       np.zeros(linear.out_features, dtype=dtype))
    model.set_params(params)
    return model


def _warn_dropout_left_out(model):
    """A UserWarning naming the model's dropout that torch.nn modules
    have no place for (to_torch)."""
    left_out = [f"{name}={getattr(model, name)}"
                for name in ("recurrent_dropout", "output_dropout")
                if getattr(model, name)]
    if model.dropout and model.dropout_first_layer:
        left_out.insert(0, f"dropout={model.dropout} on the first layer's input")
    if left_out:
        warnings.warn(
            f"to_torch: PyTorch's module has no place for {', '.join(left_out)}; "
            f"they are left out (training in PyTorch will not apply them)",
            UserWarning, stacklevel=3)


def to_torch(model):
    """PyTorch modules that compute what `model` computes.

    Needs PyTorch, imported only by this call.

    Parameters
    ----------
    model : crnn.RNN, crnn.LSTM or crnn.GRU
        The model to convert.

    Returns
    -------
    module : torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU
        With ``batch_first=True``, in the model's dtype (an LSTM with the
        model's ``proj_size``, ``R{l}`` in ``weight_hr_l{l}``).  ``b_ih`` holds
        crnn's bias and ``b_hh`` zeros (the GRU's ``bn`` goes into the
        candidate's block of ``b_hh``), so converting back is exact.
    linear : torch.nn.Linear or None
        The output layer, giving logits: apply ``torch.softmax(·, -1)`` for
        a softmax model's probabilities.  None without an output layer.
        For a many-to-one model, apply it to the top layer's final state
        (``h_n``'s last layer, both directions concatenated), as crnn does.

    Raises
    ------
    ImportError
        PyTorch is not installed.
    ValueError
        The model has no PyTorch counterpart (``GRU(reset_after=False)``:
        PyTorch's GRU resets after the recurrent product).

    Warns
    -----
    UserWarning
        The model has dropout that PyTorch's module cannot express:
        ``recurrent_dropout``, ``output_dropout``, or ``dropout`` on the
        first layer's input (``dropout_first_layer=True``).  The module
        carries the inter-layer part of ``dropout`` as its own ``dropout``
        (which draws a new mask at every step, where crnn's is variational).
    """
    row = _registry.kind_of(model)
    if row.torch is None:
        raise ValueError(f"cannot convert a crnn {row.name} to PyTorch: {row.no_torch}")
    torch = _import_torch("to_torch")
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[str(model.dtype)]
    options = dict(num_layers=model.num_layers, bias=True, batch_first=True,
                   bidirectional=model.bidirectional, dtype=torch_dtype)
    if row.torch == "RNN":
        options["nonlinearity"] = model.nonlinearity
    if getattr(model, "proj_size", 0):
        options["proj_size"] = model.proj_size
    if model.dropout and model.num_layers > 1:
        options["dropout"] = model.dropout      # between layers, as crnn's
    _warn_dropout_left_out(model)
    module = getattr(torch.nn, row.torch)(model.input_size, model.hidden_size, **options)
    params = model.params
    H = model.hidden_size

    def copy(parameter, array):
        parameter.copy_(torch.from_numpy(np.array(array, copy=True)))

    with torch.no_grad():
        for layer in range(model.num_layers):
            for suffix in _suffixes(model.bidirectional):
                torch_suffix = f"_l{layer}{suffix}"
                copy(getattr(module, "weight_ih" + torch_suffix), params[f"U{layer}{suffix}"])
                copy(getattr(module, "weight_hh" + torch_suffix), params[f"W{layer}{suffix}"])
                copy(getattr(module, "bias_ih" + torch_suffix), params[f"b{layer}{suffix}"])
                b_hh = getattr(module, "bias_hh" + torch_suffix)
                b_hh.zero_()
                if row.recurrent_bias:     # GRU: b_hh's n block is bn
                    copy(b_hh[2 * H:], params[f"bn{layer}{suffix}"])
                if f"R{layer}{suffix}" in params:      # the projection
                    copy(getattr(module, "weight_hr" + torch_suffix),
                         params[f"R{layer}{suffix}"])
        linear = None
        if model.output is not None:
            linear = torch.nn.Linear(params["V"].shape[1], model.output_size,
                                     dtype=torch_dtype)
            copy(linear.weight, params["V"])
            copy(linear.bias, params["c"])
    return module, linear


# ---------------------------------------------------------------- ONNX
# The gate blocks' order in ONNX is the table's onnx_gates (crnn._registry).
_MIN_OPSET = 13   # Softmax on one axis, Unsqueeze with axes as an input


def _reorder(array, blocks, hidden):
    return np.concatenate([array[g * hidden:(g + 1) * hidden] for g in blocks])


def _onnx_weights(model, row, layer, dtype):
    """ONNX's W (dirs, G·H, D), R (dirs, G·H, H), B (dirs, 2·G·H) of a layer:
    input weights, recurrent weights, then [Wb, Rb] biases, gates reordered.
    Wb is crnn's b; Rb is 0 but, for a kind with a recurrent bias, its last
    (h) block, which is bn (ONNX's linear_before_reset=1 GRU is PyTorch's:
    h̃ = tanh(W x + Wb + r ⊙ (R h + Rb)))."""
    params, H = model.params, model.hidden_size
    blocks = row.onnx_gates
    Ws, Rs, Bs = [], [], []
    for suffix in _suffixes(model.bidirectional):
        Ws.append(_reorder(params[f"U{layer}{suffix}"], blocks, H))
        Rs.append(_reorder(params[f"W{layer}{suffix}"], blocks, H))
        recurrent_bias = np.zeros(len(blocks) * H, dtype=model.dtype)
        if row.recurrent_bias:
            recurrent_bias[-H:] = params[f"bn{layer}{suffix}"]
        Bs.append(np.concatenate([_reorder(params[f"b{layer}{suffix}"], blocks, H),
                                  recurrent_bias]))
    return [np.ascontiguousarray(np.stack(arrays), dtype=dtype)
            for arrays in (Ws, Rs, Bs)]


def to_onnx(model, path, *, lengths=True, tokens=False, dtype=None, opset=17):
    """Write `model` as an ONNX graph.

    The graph uses ONNX's own ``RNN``, ``LSTM`` and ``GRU`` operators (one
    per layer, both directions in one), then the output layer (``MatMul``,
    ``Add``, and ``Softmax`` for softmax models).  Needs the ``onnx``
    package, imported only by this call.

    Parameters
    ----------
    model : crnn.RNN, crnn.LSTM or crnn.GRU
        The model to export.
    path : str or os.PathLike
        The file to write.
    lengths : bool, default True
        Give the graph a ``lengths`` input, int64 ``(N,)`` with each entry
        in ``[1, T]`` (the operators' ``sequence_lens``).  False: every
        sequence is T steps long.
    tokens : bool, default False
        The input ``X`` is int64 token ids ``(N, T)``, one-hot encoded inside
        the graph, instead of floats ``(N, T, D)``.
    dtype : {"float32", "float64"}, optional
        The graph's float type; default the model's.  ONNX Runtime's CPU
        kernels for these operators run float32 only.
    opset : int, default 17
        The ``ai.onnx`` opset to target, 13 or newer.

    Notes
    -----
    The output ``Y`` is what ``model.forward`` returns: ``(N, T, K)`` with
    rows past a length set to 0, or ``(N, K)`` for a many-to-one model.  The
    initial state is always zero and the final state is not an output.

    Raises
    ------
    ImportError
        The onnx package is not installed.
    TypeError, ValueError
        Bad arguments, or an LSTM with ``proj_size`` (ONNX has no
        projection).
    """
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise ImportError("to_onnx needs the onnx package, which is not installed "
                          "(crnn itself does not depend on it): pip install onnx") from None
    row = _registry.kind_of(model)
    if getattr(model, "proj_size", 0):
        raise ValueError(f"ONNX's LSTM has no projection; cannot export an LSTM "
                         f"with proj_size={model.proj_size} (expected 0)")
    dtype = model.dtype if dtype is None else _inputs.check_dtype(dtype)
    for flag, name in ((lengths, "lengths"), (tokens, "tokens")):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, numbers.Integral) or \
            not _MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be an integer in [{_MIN_OPSET}, {newest}] "
                         f"(this onnx package's newest), got {opset!r}")
    float_type = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    graph = _OnnxGraph(helper, numpy_helper)
    inputs, features = _onnx_inputs(graph, model, TensorProto, float_type,
                                    lengths, tokens, dtype)
    h = _onnx_layers(graph, model, row, features,
                     TensorProto.INT32 if lengths else None, dtype)
    out = _onnx_head(graph, model, h, dtype)
    if model.return_sequences and lengths:
        out = _onnx_mask(graph, out, features, float_type)
    graph.nodes[-1].output[0] = "Y"    # the last node always computes `out`

    width = model.output_size if model.output is not None else model.hidden_size * model.directions
    shape = ["N", "T", width] if model.return_sequences else ["N", width]
    onnx_graph = helper.make_graph(
        graph.nodes, f"crnn_{row.class_name}", inputs,
        [helper.make_tensor_value_info("Y", float_type, shape)], graph.initializers)
    opsets = [helper.make_opsetid("", int(opset))]
    proto = helper.make_model(
        onnx_graph, opset_imports=opsets, producer_name="crnn",
        producer_version=__version__,
        ir_version=helper.find_min_ir_version_for(opsets),
        doc_string=f"crnn {row.class_name} exported by crnn {__version__}: {model!r}")
    helper.set_model_props(proto, {
        "crnn.kind": row.class_name, "crnn.output": str(model.output),
        "crnn.return_sequences": str(model.return_sequences),
        "crnn.inputs": "tokens" if tokens else "features"})
    onnx.checker.check_model(proto, full_check=True)

    serialized = proto.SerializeToString()
    atomic_write(path, lambda file: file.write(serialized))


class _OnnxGraph:
    """The nodes and initializers of an ONNX graph being built, with
    unique names."""

    def __init__(self, helper, numpy_helper):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers = [], []
        self.counter = iter(range(1 << 30))

    def constant(self, array, name):
        name = f"{name}_{next(self.counter)}"
        self.initializers.append(self.numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op, inputs, outputs=1, **attributes):
        step = next(self.counter)
        if isinstance(outputs, int):
            outputs = [f"{op.lower()}_{step}_{i}" for i in range(outputs)]
        self.nodes.append(self.helper.make_node(op, inputs, outputs,
                                                name=f"{op}_{step}", **attributes))
        return outputs[0] if len(outputs) == 1 else outputs


def _onnx_inputs(graph, model, TensorProto, float_type, lengths, tokens, dtype):
    """The graph's inputs (X, and lengths) and the features (N, T, D)."""
    helper, D = graph.helper, model.input_size
    if tokens:
        inputs = [helper.make_tensor_value_info("X", TensorProto.INT64, ["N", "T"])]
        features = graph.node("OneHot", ["X", graph.constant(np.array([D], np.int64), "depth"),
                                         graph.constant(np.array([0, 1], dtype), "on_off")],
                              axis=-1)
    else:
        inputs = [helper.make_tensor_value_info("X", float_type, ["N", "T", D])]
        features = "X"
    if lengths:
        inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT64, ["N"]))
    return inputs, features


def _onnx_layers(graph, model, row, features, lengths_type, dtype):
    """The recurrent layers, one ONNX RNN/LSTM/GRU node each, reading the
    `lengths` input cast to `lengths_type` (None: no lengths); returns the
    top layer's h, (N, T, dirs·H) or (N, dirs·H) for many-to-one."""
    node, constant = graph.node, graph.constant
    dirs = model.directions
    lengths = lengths_type is not None
    sequence_lens = node("Cast", ["lengths"], to=lengths_type) if lengths else ""
    # the operators' layout=0: time-major (T, N, ·)
    x = node("Transpose", [features], perm=[1, 0, 2])
    attributes = {"hidden_size": model.hidden_size,
                  "direction": "bidirectional" if dirs == 2 else "forward"}
    attributes.update(row.onnx_attributes)
    if row.onnx_op == "RNN":
        activation = "Relu" if model.nonlinearity == "relu" else "Tanh"
        attributes["activations"] = [activation] * dirs
    merge = constant(np.array([0, 0, -1], np.int64), "merge_directions")
    for layer in range(model.num_layers):
        W, R, B = _onnx_weights(model, row, layer, dtype)
        op_inputs = [x, constant(W, f"W{layer}"), constant(R, f"R{layer}"),
                     constant(B, f"B{layer}")]
        if lengths:
            op_inputs.append(sequence_lens)
        if model._peephole_blocks:
            # sequence_lens (if none), initial_h, initial_c left out; P
            # (dirs, 3·H), rows i, o, f as crnn stores them
            P = np.stack([model.params[f"P{layer}{suffix}"].reshape(-1)
                          for suffix in _suffixes(model.bidirectional)])
            op_inputs += [""] * (7 - len(op_inputs)) + [constant(P.astype(dtype),
                                                                 f"P{layer}")]
        top = layer == model.num_layers - 1
        # only the outputs used: Y (T, dirs, N, H) feeds the next layer or
        # the per-position outputs, Y_h (dirs, N, H) a many-to-one output
        use_Y_h = top and not model.return_sequences
        Y, Y_h = node(row.onnx_op, op_inputs,
                      ["" if use_Y_h else f"Y{layer}", f"Y_h{layer}" if use_Y_h else ""],
                      **attributes)
        if top:
            break
        # Y (T, dirs, N, H) -> (T, N, dirs·H): the next layer's input
        x = node("Reshape", [node("Transpose", [Y], perm=[0, 2, 1, 3]), merge])
    if model.return_sequences:
        # Y (T, dirs, N, H) -> (N, T, dirs·H), [forward h, backward h]
        return node("Reshape", [node("Transpose", [Y], perm=[2, 0, 1, 3]), merge])
    # Y_h (dirs, N, H): each sequence's final state -> (N, dirs·H)
    return node("Reshape", [node("Transpose", [Y_h], perm=[1, 0, 2]),
                            constant(np.array([0, -1], np.int64), "flatten")])


def _onnx_head(graph, model, h, dtype):
    """The output layer on h: V, c and the softmax (none without one)."""
    if model.output is None:
        return h
    params = model.params
    V_T = np.ascontiguousarray(params["V"].T, dtype=dtype)     # (dirs·H, K)
    out = graph.node("MatMul", [h, graph.constant(V_T, "V_T")])
    out = graph.node("Add", [out, graph.constant(params["c"].astype(dtype), "c")])
    if model.output == "softmax":
        out = graph.node("Softmax", [out], axis=-1)
    return out


def _onnx_mask(graph, out, features, float_type):
    """crnn's rows past a sequence's length are 0: out · (t < lengths[n])."""
    node, constant = graph.node, graph.constant
    steps = node("Gather", [node("Shape", [features]),
                            constant(np.array(1, np.int64), "time_axis")], axis=0)
    positions = node("Range", [constant(np.array(0, np.int64), "zero"), steps,
                               constant(np.array(1, np.int64), "one")])
    real = node("Less", [
        node("Unsqueeze", [positions, constant(np.array([0], np.int64), "axes")]),
        node("Unsqueeze", ["lengths", constant(np.array([1], np.int64), "axes")])])
    mask = node("Unsqueeze", [node("Cast", [real], to=float_type),
                              constant(np.array([2], np.int64), "axes")])
    return node("Mul", [out, mask])
