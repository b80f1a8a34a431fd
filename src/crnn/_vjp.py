"""The model as a building block: ``forward(..., return_cache=True)`` and
``backward(cache, d_outputs, d_state)``, a vector-Jacobian product that takes
gradients arriving from outside and gives every parameter's, the inputs' and
the initial state's.

BuildingBlock is a base of RecurrentModel (``_model``).  It checks what
``backward`` is given, lays it out like the engine's call (time-major,
sorted by length) and runs the engine's BPTT (``_network.backward``) on the
call that the forward kept.  The cache is that call plus the batch's
layout; it reads the model's workspace, so it is valid until the next call
on that workspace, and a stale or foreign one is refused.
"""
import numpy as np

from . import _inputs
from ._network import backward as network_backward
from .threads import single_threaded_blas


class Cache:
    """What `backward` needs of one ``forward(..., return_cache=True)``.

    Opaque: pass it to the `backward` of the model that made it, before the
    model's next call (a forward, a loss, a prediction, another forward with
    a cache).  `backward` may be called on it more than once.

    Attributes
    ----------
    model : RecurrentModel
        The model whose forward made it.
    outputs_shape : tuple
        The shape of the forward's outputs (what `d_outputs` must have).
    state_returned : bool
        Whether the forward returned the final state (only then may
        `backward` take `d_state`).
    """

    __slots__ = ("model", "outputs_shape", "state_returned", "_call", "_batch",
                 "_outputs", "_ragged", "_workspace")

    def __init__(self, model, call, batch, outputs, state_returned, ragged):
        self.model = model
        self.outputs_shape = outputs.shape
        self.state_returned = state_returned
        self._call = call
        self._batch = batch
        # softmax probabilities for their Jacobian (None for other outputs)
        self._outputs = outputs if model.output == "softmax" else None
        # the lengths of a list X: its gradient is a list again
        self._ragged = ragged
        self._workspace = call.ws

    def __repr__(self):
        return (f"<crnn cache of {type(self.model).__name__}: outputs "
                f"{self.outputs_shape}, current={self.is_current()}>")

    def is_current(self):
        """Whether `backward` can still use this cache.

        Returns
        -------
        bool
            True while no later call has reused the model's workspace, and
            the model still has that workspace.
        """
        return (self._workspace is self.model.__dict__.get("_workspace")
                and self._call.generation == self._workspace.calls)


class BuildingBlock:
    """`backward`, and the forward that keeps a cache for it (a base of
    RecurrentModel, which documents the model)."""

    def _forward_with_cache(self, batch, h0, c0, return_state, ragged, masks):
        result = self._run(batch, h0, c0, masks=masks, keep=True)
        outputs = result["outputs"]
        cache = Cache(self, result["call"], batch, outputs, return_state, ragged)
        if return_state:
            return outputs, self._final_state(result, batch), cache
        return outputs, cache

    def backward(self, cache, d_outputs=None, d_state=None, *, input_grad=True):
        """Back-propagate gradients given from outside through the model.

        The vector-Jacobian product of the `forward` that made `cache`:
        given ∂L/∂outputs and ∂L/∂(final state) for some loss L computed
        outside crnn, it returns ∂L/∂ of every parameter, of the inputs and
        of the initial state.  Nothing in the model changes.

        Parameters
        ----------
        cache : Cache
            From ``forward(..., return_cache=True)`` of this model.  It is
            valid until the model's next call (any method that runs the
            model: forward, loss_and_grad, predict, ...); calling `backward`
            does not end it.
        d_outputs : array_like, optional
            ∂L/∂outputs, shaped like the forward's outputs: ``(N, T, K)``
            or ``(N, K)``.  It is the gradient with respect to what
            `forward` returned: the top layer's h (``output=None``), the
            values (``"linear"``) or the probabilities (``"softmax"``; the
            softmax's Jacobian is applied here).  Entries at padded
            positions are ignored.  Any float dtype, cast to the model's.
            Default: zeros.
        d_state : array_like or pair of array_like, optional
            ∂L/∂(final state), shaped like the state the forward returned:
            ``dh_n`` (RNN, GRU) or ``(dh_n, dc_n)`` (LSTM; either may be
            None), each ``(num_layers * directions, N, width)``: h's width
            is ``proj_size`` where the LSTM has one, else ``hidden_size``;
            c's is ``hidden_size``.
            Only when the forward was called with ``return_state=True``.
            Default: zeros.
        input_grad : bool, default True
            Whether to compute ``"X"`` (False saves one product over every
            position, when nothing needs ∂L/∂X).

        Returns
        -------
        grads : dict of numpy.ndarray
            Every key of `params` with its gradient; ``"X"``, ∂L/∂X shaped
            like X (a list of ``(T_i, D)`` arrays for a list X; zero at
            padded positions; absent for token inputs and with
            ``input_grad=False``); and
            ``"initial_state"``, ∂L/∂h0 (a pair (∂L/∂h0, ∂L/∂c0) for the
            LSTM), shaped like the initial state (zeros when none was
            given stand for it).

        Raises
        ------
        TypeError
            `cache` is not a cache, a gradient is not an array of floats,
            or an LSTM's `d_state` is not a pair.
        ValueError
            The cache comes from another model, from an earlier call (the
            model has run since), or from a workspace the model no longer
            has (a copy or a reloaded model); a gradient has the wrong
            shape or holds NaN or infinity; `d_state` is given but the
            forward did not return the state.

        Examples
        --------
        >>> model = crnn.GRU(3, 5, output=None, seed=0)
        >>> X = np.random.default_rng(0).normal(size=(2, 4, 3))
        >>> h, cache = model.forward(X, return_cache=True)
        >>> grads = model.backward(cache, d_outputs=np.ones_like(h))
        >>> grads["X"].shape, grads["initial_state"].shape
        ((2, 4, 3), (1, 2, 5))
        >>> sorted(set(grads) - {"X", "initial_state"}) == sorted(model.params)
        True
        """
        check_cache(self, cache)
        if not isinstance(input_grad, (bool, np.bool_)):
            raise TypeError(f"input_grad must be True or False, got {input_grad!r}")
        batch = cache._batch
        d_logits, d_top = self._outputs_gradient(cache, d_outputs)
        dh_n, dc_n = self._state_gradient(cache, d_state)
        want_dx = bool(input_grad) and not batch.token_ids
        keys, _, width = self._driver_layout()
        with self._lock, single_threaded_blas(
                batch.steps * batch.size * width * self.hidden_size):
            # checked again under the lock: a call from another thread may
            # have reused the workspace since
            check_cache(self, cache)
            result = network_backward(cache._call, d_logits, d_top, dh_n, dc_n,
                                      want_dx)
        grads = dict(zip(keys, result["grads"]))
        if self.output is not None:
            grads["V"], grads["c"] = result["dV"], result["dc"]
        if want_dx:
            dX = batch.unsort(result["dX"])
            grads["X"] = ([dX[i, :n] for i, n in enumerate(cache._ragged)]
                          if cache._ragged is not None else dX)
        grads["initial_state"] = self._state_grad(result, batch)
        return grads

    def _outputs_gradient(self, cache, d_outputs):
        """(∂L/∂logits, None) with an output layer, (None, ∂L/∂top h)
        without one, in the engine's sorted time-major layout."""
        batch, shape = cache._batch, cache.outputs_shape
        if d_outputs is None:
            gradient = np.zeros(shape, dtype=self.dtype)
        else:
            gradient = float_array(d_outputs, "d_outputs", shape, self.dtype,
                                   "the forward's outputs")
        if cache._outputs is not None:
            # softmax: ∂L/∂o = p ⊙ (g - Σ_k p_k g_k), row by row
            p = cache._outputs
            gradient = p * (gradient - (p * gradient).sum(axis=-1, keepdims=True))
        if self.return_sequences:
            laid_out = np.ascontiguousarray(batch.in_order(gradient).swapaxes(0, 1),
                                            dtype=self.dtype)
            if not batch.full:
                laid_out[~batch.mask] = 0      # padding: no output, no gradient
        else:
            laid_out = np.ascontiguousarray(batch.in_order(gradient), dtype=self.dtype)
        if self.output is None:
            return None, laid_out
        return laid_out.reshape(-1, laid_out.shape[-1]), None

    def _state_gradient(self, cache, d_state):
        """(∂L/∂h_n, ∂L/∂c_n) sorted like the batch, each None for zeros."""
        if d_state is None:
            return None, None
        if not cache.state_returned:
            raise ValueError(
                "d_state was given, but the forward that made the cache did "
                "not return the final state; call forward(..., return_state="
                "True, return_cache=True) to back-propagate into it")
        n = cache._batch.size
        # h_n is as wide as the projection (proj_size), c_n as hidden_size
        shapes = (self._state_shape(n), self._state_shape(n, cell=True))
        if self._cell_state:
            if not isinstance(d_state, (tuple, list)) or len(d_state) != 2:
                raise TypeError(
                    f"d_state of an {type(self).__name__} must be a pair "
                    f"(dh_n, dc_n), got {type(d_state).__name__}")
            names = ("d_state[0] (dh_n)", "d_state[1] (dc_n)")
            parts = d_state
        else:
            names, parts = ("d_state",), (d_state,)
        sorted_parts = [
            None if part is None else cache._batch.sort_state(
                float_array(part, name, shape, self.dtype, "the final state"))
            for part, name, shape in zip(parts, names, shapes)]
        return (sorted_parts + [None])[:2]


def check_cache(model, cache):
    """ValueError unless `cache` is current and `model`'s own."""
    if not isinstance(cache, Cache):
        raise TypeError(
            f"cache must be what forward(..., return_cache=True) returned, "
            f"got {type(cache).__name__}")
    if cache.model is not model:
        raise ValueError(
            f"the cache comes from another model ({cache.model!r}), not "
            f"this one ({model!r})")
    if cache._workspace is not model.__dict__.get("_workspace"):
        raise ValueError(
            "the cache's workspace is no longer the model's (the model was "
            "copied, unpickled or reloaded since): run forward again")
    if cache._call.generation != cache._workspace.calls:
        raise ValueError(
            f"the cache is stale: the model has run "
            f"{cache._workspace.calls - cache._call.generation} more call(s) "
            f"since the forward that made it, reusing its buffers; call "
            f"backward before the model's next call")


def float_array(value, name, shape, dtype, what):
    """`value` checked as floats of `shape` (what it is shaped like), cast
    to `dtype`; finite."""
    array = np.asarray(value)
    if array.dtype.kind != "f":
        raise TypeError(
            f"{name} must be an array of floats shaped like {what} "
            f"{shape}, got an array of dtype {array.dtype}")
    if array.shape != tuple(shape):
        raise ValueError(
            f"{name} must have the shape of {what}, {tuple(shape)}, got "
            f"{array.shape}")
    with _inputs._narrowing(array, dtype):
        array = array.astype(dtype, copy=False)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinity (in {np.dtype(dtype)})")
    return array
