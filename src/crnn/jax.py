"""crnn.jax: crnn's LSTM as a differentiable JAX function (optional; needs jax).

``crnn.jax.lstm(params, X, h0, c0)`` runs crnn's compiled forward, and its
``jax.custom_vjp`` backward runs crnn's BPTT, each through
``jax.pure_callback``: JAX sees one opaque host call, which ``jax.grad``,
``jax.jit`` and ``jax.vmap`` can place in a larger computation.

Limits, all from running crnn on the host through a callback:

- CPU only: the arrays travel to the host and back (no GPU/TPU kernels).
- ``jax.jit`` compiles around the call, not into it: XLA neither fuses nor
  traces crnn's steps, and each call copies its arrays to numpy.
- Reverse mode only (``jax.grad``, ``jax.vjp``); forward mode (``jax.jvp``,
  ``jax.jacfwd``) raises, as for every ``custom_vjp``.
- ``jax.vmap`` is done by batching where it can: mapped inputs and states
  with shared parameters become one crnn call over all their sequences
  (the batch axis N grows); mapped parameters, and every backward under
  ``vmap`` (per-element parameter gradients), run one call per element.
- The backward runs the forward again (in the same host call) before BPTT:
  a callback keeps no state between the forward and the backward.

Importing this module imports jax; ``import crnn`` never does.
"""
import functools
import re
import threading

import jax
import jax.numpy as jnp
import numpy as np

from . import models

__all__ = ["lstm"]

_KEY = re.compile(r"^([UWb])(\d+)(_reverse)?$")
# the parameters of crnn.LSTM's variants, which lstm refuses by name
_VARIANT_KEY = re.compile(r"^([PR])\d+(_reverse)?$")
_VARIANTS = {"P": "peepholes (P{l}: crnn.LSTM(peepholes=True))",
             "R": "a projection (R{l}: crnn.LSTM(proj_size=...))"}
# the host calls share one model per structure: one call at a time
_LOCK = threading.Lock()
# the dimensions of each parameter (U, W: 2, b: 1), before vmap's axes
_BASE_NDIM = {"U": 2, "W": 2, "b": 1}


def _structure(params):
    """(input_size, hidden_size, num_layers, bidirectional) from the keys and
    shapes of an output-less crnn.LSTM's params."""
    if not isinstance(params, dict) or not params:
        raise TypeError(f"params must be a dict of crnn.LSTM parameters (U0, W0, "
                        f"b0, ...), got {type(params).__name__}")
    for key in sorted(map(str, params)):
        variant = _VARIANT_KEY.match(key)
        if variant:
            raise ValueError(
                f"crnn.jax.lstm runs the plain LSTM, without "
                f"{_VARIANTS[variant.group(1)]}: expected the keys U{{l}}, W{{l}}, "
                f"b{{l}} only, got the key {key!r}")
    bad = sorted(k for k in params if not _KEY.match(str(k)))
    if bad:
        raise ValueError(f"params may only hold U{{l}}, W{{l}}, b{{l}} (and their "
                         f"_reverse twins) of an LSTM without an output layer; "
                         f"unexpected {bad}")
    layers = 1 + max(int(_KEY.match(k).group(2)) for k in params)
    bidirectional = any(k.endswith("_reverse") for k in params)
    if "W0" not in params or "U0" not in params:
        raise ValueError("params must hold U0 and W0")
    hidden = int(np.shape(params["W0"])[1])
    inputs = int(np.shape(params["U0"])[1])
    return inputs, hidden, layers, bidirectional


@functools.lru_cache(maxsize=32)
def _model(inputs, hidden, layers, bidirectional, dtype):
    """One crnn.LSTM per structure and dtype (its weights are set per call)."""
    return models.LSTM(inputs, hidden, num_layers=layers, bidirectional=bidirectional,
                       output=None, dtype=dtype)


def _host_model(params):
    structure = _structure(params)
    dtype = np.asarray(params["W0"]).dtype
    model = _model(*structure, str(dtype))
    model.set_params({k: np.asarray(v) for k, v in params.items()})
    return model


def _host_forward(params, X, h0, c0):
    """The forward on the host; under vmap (vmap_method="expand_dims": every
    argument has the mapped axes in front, of size 1 where unmapped) one
    call over every mapped batch when the parameters are shared, else one
    call per element."""
    X, h0, c0 = np.asarray(X), np.asarray(h0), np.asarray(c0)
    mapped = X.shape[:-3]
    if not mapped:
        return _forward_one(params, X, h0, c0)
    lead = _mapped_shape(params, X, h0, c0)
    X = np.broadcast_to(X, lead + X.shape[-3:])
    h0, c0 = (np.broadcast_to(s, lead + s.shape[-3:]) for s in (h0, c0))
    if all(np.shape(v)[:len(lead)] == (1,) * len(lead) for v in params.values()):
        # shared parameters: the mapped batches side by side, one call
        n, (lanes, _, hidden) = X.shape[-3], h0.shape[-3:]
        size = int(np.prod(lead))
        one = {k: np.asarray(v).reshape(np.shape(v)[len(lead):]) for k, v in params.items()}

        def fold(state):        # (*lead, lanes, N, H) -> (lanes, lead·N, H)
            return np.moveaxis(state.reshape(size, lanes, n, hidden), 0, 1).reshape(
                lanes, size * n, hidden)

        def unfold(state):      # the other way
            return np.moveaxis(state.reshape(lanes, size, n, hidden), 1, 0).reshape(
                lead + (lanes, n, hidden))
        outputs, h_n, c_n = _forward_one(one, X.reshape((size * n,) + X.shape[-2:]),
                                         fold(h0), fold(c0))
        return (outputs.reshape(lead + (n,) + outputs.shape[1:]), unfold(h_n),
                unfold(c_n))
    return _each(_forward_one, lead, params, X, h0, c0)


def _mapped_shape(params, *arrays):
    """The mapped axes in front of the arguments (each array has 3 of its
    own, each parameter 2 or 1), broadcast together."""
    return np.broadcast_shapes(
        *(np.shape(a)[:-3] for a in arrays),
        *(np.shape(v)[:np.ndim(v) - _BASE_NDIM[k[0]]] for k, v in params.items()))


def _forward_one(params, X, h0, c0):
    with _LOCK:
        model = _host_model(params)
        outputs, (h_n, c_n) = model.forward(X, initial_state=(h0, c0),
                                            return_state=True)
    return outputs, h_n, c_n


def _each(function, lead, params, *arrays):
    """`function` on each element of the mapped axes `lead`, results stacked."""
    results = []
    for index in np.ndindex(lead):
        element = {k: np.asarray(v)[tuple(min(i, s - 1) for i, s in
                                          zip(index, np.shape(v)))]
                   for k, v in params.items()}
        results.append(function(element, *(np.broadcast_to(
            a, lead + np.shape(a)[len(lead):])[index] for a in arrays)))
    return jax.tree_util.tree_map(
        lambda *parts: np.stack(parts).reshape(lead + np.shape(parts[0])), *results)


def _host_backward(params, X, h0, c0, d_outputs, d_h_n, d_c_n):
    """The backward on the host: one call, or under vmap one per element
    (each element's parameter gradients are its own)."""
    mapped = np.shape(X)[:-3]
    if not mapped:
        return _backward_one(params, np.asarray(X), np.asarray(h0), np.asarray(c0),
                             np.asarray(d_outputs), np.asarray(d_h_n),
                             np.asarray(d_c_n))
    arrays = [np.asarray(a) for a in (X, h0, c0, d_outputs, d_h_n, d_c_n)]
    lead = _mapped_shape(params, *arrays)
    return _each(_backward_one, lead, params, *arrays)


def _backward_one(params, X, h0, c0, d_outputs, d_h_n, d_c_n):
    with _LOCK:
        model = _host_model(params)
        _, _, cache = model.forward(X, initial_state=(h0, c0),
                                    return_state=True, return_cache=True)
        grads = model.backward(cache, d_outputs, (d_h_n, d_c_n))
    dh0, dc0 = grads["initial_state"]
    return {k: grads[k] for k in params}, grads["X"], dh0, dc0


def _shapes(params, X, h0):
    _, hidden, _, bidirectional = _structure(params)
    dtype = jnp.result_type(params["W0"])
    n, steps = X.shape[:2]
    outputs = jax.ShapeDtypeStruct((n, steps, hidden * (2 if bidirectional else 1)),
                                   dtype)
    state = jax.ShapeDtypeStruct(h0.shape, dtype)
    return outputs, state


def _check(params, X, h0, c0):
    inputs, hidden, layers, bidirectional = _structure(params)
    dtype = jnp.result_type(params["W0"])
    if dtype not in (jnp.float32, jnp.float64):
        raise TypeError(f"crnn runs float32 or float64, params are {dtype}")
    lanes = layers * (2 if bidirectional else 1)
    if X.ndim != 3 or X.shape[2] != inputs:
        raise ValueError(f"X must be (N, T, {inputs}), got shape {X.shape}")
    for name, state in (("h0", h0), ("c0", c0)):
        if state.shape != (lanes, X.shape[0], hidden):
            raise ValueError(f"{name} must have shape {(lanes, X.shape[0], hidden)}, "
                             f"got {state.shape}")
    for name, value in (("X", X), ("h0", h0), ("c0", c0)):
        if jnp.result_type(value) != dtype:
            raise TypeError(f"{name} must have the params' dtype {dtype}, got "
                            f"{jnp.result_type(value)}")


@jax.custom_vjp
def lstm(params, X, h0, c0):
    """crnn's LSTM over a batch, differentiable by ``jax.grad``.

    Parameters
    ----------
    params : dict of arrays
        The parameters of a ``crnn.LSTM(..., output=None)``: ``U{l}``
        ``(4H, D_l)``, ``W{l}`` ``(4H, H)``, ``b{l}`` ``(4H,)`` and, for a
        bidirectional LSTM, the same with ``_reverse``; the layers and
        directions are read from the keys.  float32 or float64.
    X : array
        ``(N, T, D)``, every sequence T steps long, the params' dtype.
    h0, c0 : array
        ``(num_layers * directions, N, H)``, the initial state.

    Returns
    -------
    outputs : array
        ``(N, T, H * directions)``: the top layer's h at every step.
    state : tuple of array
        ``(h_n, c_n)``, each shaped like `h0`.

    Raises
    ------
    TypeError, ValueError
        Params that are not an LSTM's, shapes or dtypes that do not fit.
    ValueError
        Params of a peephole or projected LSTM (a key ``P{l}`` or ``R{l}``):
        this function runs the plain LSTM only.

    Examples
    --------
    >>> import jax, crnn, crnn.jax
    >>> model = crnn.LSTM(3, 4, output=None, seed=0)
    >>> X, h0 = np.ones((2, 5, 3), np.float32), np.zeros((1, 2, 4), np.float32)
    >>> loss = lambda p: crnn.jax.lstm(p, X, h0, h0)[0].sum()
    >>> grads = jax.grad(loss)(model.params)
    >>> sorted(grads), grads["W0"].shape
    (['U0', 'W0', 'b0'], (16, 4))
    """
    return _forward(params, X, h0, c0)[0]


def _forward(params, X, h0, c0):
    _check(params, X, h0, c0)
    outputs, state = _shapes(params, X, h0)
    out, h_n, c_n = jax.pure_callback(_host_forward, (outputs, state, state),
                                      params, X, h0, c0, vmap_method="expand_dims")
    return (out, (h_n, c_n)), (params, X, h0, c0)


def _backward(residuals, cotangents):
    params, X, h0, c0 = residuals
    d_outputs, (d_h_n, d_c_n) = cotangents
    shapes = ({k: jax.ShapeDtypeStruct(np.shape(v), jnp.result_type(v))
               for k, v in params.items()},
              jax.ShapeDtypeStruct(X.shape, jnp.result_type(X)),
              jax.ShapeDtypeStruct(h0.shape, jnp.result_type(h0)),
              jax.ShapeDtypeStruct(c0.shape, jnp.result_type(c0)))
    return jax.pure_callback(_host_backward, shapes, params, X, h0, c0,
                             d_outputs, d_h_n, d_c_n, vmap_method="expand_dims")


lstm.defvjp(_forward, _backward)
