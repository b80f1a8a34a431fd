"""ONNX into crnn: ``from_onnx`` reads a graph's recurrent node (ONNX's RNN,
LSTM or GRU operator; several of one kind stacked, as ``to_onnx`` writes
them) and its output layer into a crnn model.

What crnn cannot compute is refused with a ValueError that names the ONNX
attribute or input: ``clip``, ``input_forget``, activations other than the
operator's defaults (or Relu for the RNN), ``activation_alpha`` and
``activation_beta``, a ``reverse``-only direction, and constant non-zero
initial states.  The gate orders and the bias folding are the inverse of
``interop.to_onnx``'s; the kinds come from ``_registry``.  The file is
treated as untrusted: onnx loads it without its external data, and
``_onnx_tensors.TensorReader`` checks every constant (external data only
from files inside the model's folder, within their sizes; dims no larger
than the data held) before reading any.  onnx is imported by the call only.
"""
import os

import numpy as np

from . import _registry
from ._onnx_tensors import TensorReader

__all__ = ["from_onnx"]

_RECURRENT_OPS = ("RNN", "LSTM", "GRU")
# ONNX's default activations per direction, and those crnn also computes
_DEFAULT_ACTIVATIONS = {"RNN": (("tanh",), ("relu",)),
                        "LSTM": (("sigmoid", "tanh", "tanh"),),
                        "GRU": (("sigmoid", "tanh"),)}
_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}


def from_onnx(path):
    """The crnn model that computes what an ONNX graph's recurrent layers
    (and output layer) compute.

    Needs the ``onnx`` package, imported only by this call.

    Parameters
    ----------
    path : str or os.PathLike
        An ONNX file whose graph holds one ``RNN``, ``LSTM`` or ``GRU``
        node (or several of the same operator stacked, one per layer, as
        ``to_onnx`` writes them), with its weights as initializers or
        ``Constant`` nodes, stored in the file or as external data in
        files inside the model file's folder.  An LSTM's optional ``P`` input gives
        ``peepholes=True``; a GRU's ``linear_before_reset`` gives
        ``reset_after``; an RNN's ``Relu`` activation gives
        ``nonlinearity="relu"``.  An output layer, ``MatMul`` by a constant
        ``(H * directions, K)`` matrix then ``Add`` of a constant ``(K,)``
        bias, optionally followed by ``Softmax``, becomes ``V`` and ``c``
        with ``output="softmax"`` or ``"linear"``; without one the model
        has ``output=None``.

    Returns
    -------
    crnn.RNN, crnn.LSTM or crnn.GRU
        In the weights' dtype (float32 or float64).  ONNX's two biases are
        folded into crnn's one per gate (``b = Wb + Rb``; a GRU with
        ``linear_before_reset=1`` keeps its candidate's ``Rb`` as ``bn``).
        ``return_sequences`` is False when the top node's ``Y_h`` (its
        final state) feeds the output, True when ``Y`` does (a graph that
        ``to_onnx`` wrote says so in its metadata).

    Raises
    ------
    ImportError
        The onnx package is not installed.
    ValueError
        No recurrent node, nodes of different operators or settings, or
        anything crnn cannot compute: the message names the attribute
        (``clip``, ``input_forget``, ``activations``, ``activation_alpha``,
        ``activation_beta``, ``direction``) or input (``initial_h``,
        ``initial_c``, a weight that is not a constant).  Also, before any
        tensor is read: external data whose ``location`` is absolute or
        resolves (symlinks followed) outside the model file's folder, is
        not a regular file, or whose ``offset`` / ``length`` are not
        non-negative integers within that file; a negative dim or dims
        whose product overflows int64; dims that claim more bytes than the
        tensor's data holds (in the file or its external range).  The
        message names the tensor, the location and why.

    See Also
    --------
    crnn.models.RecurrentModel.to_onnx : the other way.

    Examples
    --------
    >>> model = crnn.LSTM(3, 5, 2, peepholes=True, seed=0)
    >>> model.to_onnx("lstm.onnx")                    # doctest: +SKIP
    >>> crnn.from_onnx("lstm.onnx").peepholes         # doctest: +SKIP
    True
    """
    try:
        import onnx
    except ImportError:
        raise ImportError("from_onnx needs the onnx package, which is not installed "
                          "(crnn itself does not depend on it): pip install onnx") from None
    # external data is read only after TensorReader's checks, never by onnx
    proto = onnx.load(os.fspath(path), load_external_data=False)
    graph = _Graph(proto, TensorReader(path))
    nodes = [node for node in proto.graph.node if node.op_type in _RECURRENT_OPS]
    if not nodes:
        raise ValueError(f"the ONNX graph in {os.fspath(path)!r} has no RNN, LSTM or "
                         f"GRU node")
    settings = _node_settings(nodes[0])
    for node in nodes[1:]:
        other = _node_settings(node)
        if other != settings:
            raise ValueError(
                f"the ONNX graph's recurrent nodes differ ({nodes[0].name!r}: "
                f"{settings}, {node.name!r}: {other}); crnn stacks layers of one kind")
    layers = [_layer_weights(graph, node, settings) for node in nodes]
    model = _build(graph, proto, nodes, settings, layers)
    return model


class _Graph:
    """The constants of an ONNX graph (initializers and Constant nodes) by
    name, and which nodes read each value."""

    def __init__(self, proto, reader):
        tensors = [(tensor.name, tensor) for tensor in proto.graph.initializer]
        tensors += [(node.output[0], attribute.t) for node in proto.graph.node
                    if node.op_type == "Constant" for attribute in node.attribute
                    if attribute.name == "value"]
        self.constants = reader.arrays(tensors)
        self.readers = {}
        for node in proto.graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)
        self.outputs = {output.name for output in proto.graph.output}

    def constant(self, node, index, what):
        """The constant at input `index` of `node`, or None when left out."""
        if len(node.input) <= index or node.input[index] == "":
            return None
        name = node.input[index]
        if name not in self.constants:
            raise ValueError(
                f"{node.op_type} node {node.name!r}: its input {what} ({name!r}) is "
                f"not a constant of the graph; crnn needs it fixed in the file")
        return np.asarray(self.constants[name])

    def used(self, name):
        return name != "" and (name in self.outputs or bool(self.readers.get(name)))


def _attributes(node):
    from onnx import helper
    return {attribute.name: helper.get_attribute_value(attribute)
            for attribute in node.attribute}


def _node_settings(node):
    """The operator and the attributes crnn takes from a recurrent node,
    after refusing those it cannot compute."""
    op = node.op_type
    attributes = _attributes(node)
    where = f"{op} node {node.name!r}"
    for name in ("clip", "activation_alpha", "activation_beta"):
        if name in attributes:
            raise ValueError(f"{where} has the attribute {name}={attributes[name]!r}; "
                             f"crnn computes no {name} (expected it absent)")
    if attributes.get("input_forget", 0) != 0:
        raise ValueError(f"{where} has input_forget={attributes['input_forget']}; "
                         f"crnn's LSTM couples no gates (expected 0)")
    direction = attributes.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in ("forward", "bidirectional"):
        raise ValueError(f"{where} has direction={direction!r}; crnn runs 'forward' "
                         f"or 'bidirectional' layers")
    dirs = 2 if direction == "bidirectional" else 1
    activations = tuple(a.decode().lower() if isinstance(a, bytes) else a.lower()
                        for a in attributes.get("activations", ()))
    allowed = _DEFAULT_ACTIVATIONS[op]
    chosen = allowed[0]
    if activations:
        per_direction = len(activations) // dirs
        matches = [choice for choice in allowed
                   if len(choice) == per_direction and activations == choice * dirs]
        if not matches:
            raise ValueError(
                f"{where} has activations={list(activations)}; crnn computes "
                f"{' or '.join(str(list(choice * dirs)) for choice in allowed)}")
        chosen = matches[0]
    return {"op": op, "bidirectional": dirs == 2,
            "relu": chosen == ("relu",),
            "linear_before_reset": int(attributes.get("linear_before_reset", 0)),
            "hidden_size": attributes.get("hidden_size")}


def _row(settings, peepholes):
    """The model table's row of the node's operator and settings."""
    op = settings["op"]
    for row in _registry.KINDS:
        if row.onnx_op != op:
            continue
        if op == "GRU" and row.onnx_attributes.get("linear_before_reset") != \
                settings["linear_before_reset"]:
            continue
        if op == "LSTM" and row.settings.get("peepholes", False) != peepholes:
            continue
        return row
    raise ValueError(f"crnn has no model for an ONNX {op} with "
                     f"linear_before_reset={settings['linear_before_reset']} "
                     f"(expected 0 or 1)")


def _layer_weights(graph, node, settings):
    """(input size, hidden size, {crnn suffix: {key: array}}, row) of one
    node, ONNX's gate blocks turned into crnn's order."""
    where = f"{node.op_type} node {node.name!r}"
    W, R = graph.constant(node, 1, "W"), graph.constant(node, 2, "R")
    if W is None or R is None:
        raise ValueError(f"{where} has no W or R input")
    B, P = graph.constant(node, 3, "B"), graph.constant(node, 7, "P")
    for index, name in ((5, "initial_h"), (6, "initial_c")):
        state = graph.constant(node, index, name) if len(node.input) > index and \
            node.input[index] in graph.constants else None
        if state is not None and np.any(state != 0):
            raise ValueError(f"{where} has a constant non-zero {name}; a crnn "
                             f"model's initial state is given per call "
                             f"(initial_state), expected zeros or a graph input")
    dirs = 2 if settings["bidirectional"] else 1
    if W.dtype not in _DTYPES or R.dtype != W.dtype:
        raise ValueError(f"{where}: crnn models are float32 or float64, its W and R "
                         f"are {W.dtype} and {R.dtype}")
    row = _row(settings, P is not None)
    G = len(row.onnx_gates)
    H = R.shape[-1] if R.ndim == 3 else -1
    if (W.ndim != 3 or R.shape != (dirs, G * H, H) or W.shape[:2] != (dirs, G * H)
            or (settings["hidden_size"] not in (None, H))):
        raise ValueError(f"{where}: W {W.shape} and R {R.shape} do not fit "
                         f"{dirs} direction(s) of {G} gate blocks of hidden_size "
                         f"{settings['hidden_size'] or H}")
    if B is None:
        B = np.zeros((dirs, 2 * G * H), W.dtype)
    if B.shape != (dirs, 2 * G * H) or (P is not None and P.shape != (dirs, 3 * H)):
        raise ValueError(f"{where}: B {B.shape} (expected {(dirs, 2 * G * H)}) or P "
                         f"{None if P is None else P.shape} (expected {(dirs, 3 * H)})")
    # crnn's block k is ONNX's block position(k): to_onnx's order inverted
    order = [list(row.onnx_gates).index(k) for k in range(G)]

    def crnn_blocks(array):
        return np.concatenate([array[g * H:(g + 1) * H] for g in order])

    lanes = {}
    for d, suffix in enumerate(("", "_reverse")[:dirs]):
        input_bias, recurrent_bias = B[d, :G * H], B[d, G * H:]
        lane = {"U": crnn_blocks(W[d]), "W": crnn_blocks(R[d])}
        if row.recurrent_bias:
            # linear_before_reset=1: the candidate's Rb stays inside r ⊙ (·)
            folded = input_bias + np.concatenate([recurrent_bias[:-H],
                                                  np.zeros(H, W.dtype)])
            lane["bn"] = recurrent_bias[-H:].copy()
        else:
            folded = input_bias + recurrent_bias
        lane["b"] = crnn_blocks(folded)
        if P is not None:
            lane["P"] = P[d].reshape(3, H)      # rows i, o, f: crnn's too
        lanes[suffix] = lane
    return W.shape[2], H, lanes, row


def _head(graph, proto, top_outputs, width):
    """(output, V, c) of the output layer reading the top node's outputs:
    MatMul by a constant (width × K), Add of a constant (K,), then Softmax
    or nothing; (None, None, None) without one."""
    for node in proto.graph.node:
        if node.op_type != "MatMul":
            continue
        right = graph.constants.get(node.input[1])
        if right is None or right.ndim != 2 or right.shape[0] != width:
            continue
        for add in graph.readers.get(node.output[0], []):
            bias = next((graph.constants[name] for name in add.input
                         if name in graph.constants), None)
            if add.op_type != "Add" or bias is None or bias.shape != right.shape[1:]:
                continue
            softmax = any(reader.op_type == "Softmax"
                          for reader in graph.readers.get(add.output[0], []))
            return ("softmax" if softmax else "linear"), right.T.copy(), bias.copy()
        raise ValueError(f"the ONNX graph's output layer MatMul {node.name!r} has no "
                         f"Add of a constant ({right.shape[1]},) bias after it")
    return None, None, None


def _build(graph, proto, nodes, settings, layers):
    """The crnn model of the checked layers and the graph's head."""
    input_size, H, _, row = layers[0]
    dirs = 2 if settings["bidirectional"] else 1
    for layer, (D, hidden, _, other) in enumerate(layers[1:], start=1):
        if hidden != H or D != H * dirs or other != row:
            raise ValueError(
                f"the ONNX graph's recurrent node {layer} ({nodes[layer].name!r}) "
                f"does not stack on the one below: it reads {D} features and has "
                f"hidden_size {hidden}, expected {H * dirs} and {H}")
    top = nodes[-1]
    props = {prop.key: prop.value for prop in proto.metadata_props}
    if "crnn.return_sequences" in props:
        return_sequences = props["crnn.return_sequences"] == "True"
    else:
        return_sequences = not (len(top.output) > 1 and graph.used(top.output[1])
                                and not graph.used(top.output[0]))
    output, V, c = _head(graph, proto, top.output, H * dirs)
    dtype = _DTYPES[layers[0][2][""]["U"].dtype]
    options = dict(num_layers=len(layers), bidirectional=dirs == 2, output=output,
                   return_sequences=return_sequences, dtype=dtype)
    options.update(row.settings)
    if row.onnx_op == "RNN":
        options["nonlinearity"] = "relu" if settings["relu"] else "tanh"
    cls = _registry.model_class(row.class_name)
    model = cls(input_size, H, None if V is None else V.shape[0], **options)
    params = {}
    for layer, (_, _, lanes, _) in enumerate(layers):
        for suffix, lane in lanes.items():
            for key, array in lane.items():
                params[f"{key}{layer}{suffix}"] = array
    if V is not None:
        params["V"], params["c"] = V, c
    model.set_params(params)
    return model
